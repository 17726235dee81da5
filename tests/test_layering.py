"""Import layering: the method's math imports no Hugging Face code, and the core never reaches
into the demo model, evaluation or the command line (DESIGN.md)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dti"
HUGGING_FACE = ("transformers", "diffusers", "accelerate", "huggingface_hub", "tokenizers", "safetensors")
OUTSIDE_CORE = ("dti.mini", "dti.evaluate", "dti.cli")


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-local imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("module", ["sphere.py", "optim.py"])
def test_the_math_imports_no_hugging_face_code(module):
    found = [name for name in imports(PACKAGE / module) if name.split(".")[0] in HUGGING_FACE]
    assert not found, f"{module} imports {found}"


def core_files() -> list[Path]:
    outside = {PACKAGE / "mini", PACKAGE / "evaluate", PACKAGE / "cli.py", PACKAGE / "__main__.py"}  # __main__ is the CLI
    return [p for p in sorted(PACKAGE.rglob("*.py")) if not any(p == o or o in p.parents for o in outside)]


def test_the_core_never_imports_mini_evaluate_or_cli():
    assert len(core_files()) > 20
    bad = {
        str(p.relative_to(PACKAGE)): sorted(n for n in imports(p) if n.startswith(OUTSIDE_CORE) or n in ("dti.mini", "dti.cli"))
        for p in core_files()
    }
    assert not {k: v for k, v in bad.items() if v}


def test_the_checker_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from dti.mini import demo\n    import transformers\n")
    assert {"dti.mini", "dti.mini.demo", "transformers"} <= imports(bad)


BUILD = "dti.mini.build"  # dti-mini's build scripts: they train and describe the shipped model, nobody runs them to use it


def test_nothing_outside_the_build_scripts_imports_them():
    build = PACKAGE / "mini" / "build"
    assert (build / "train_base.py").is_file()
    bad = {
        str(p.relative_to(PACKAGE)): sorted(n for n in imports(p) if n == BUILD or n.startswith(BUILD + "."))
        for p in sorted(PACKAGE.rglob("*.py"))
        if build not in p.parents
    }
    assert not {k: v for k, v in bad.items() if v}
    assert {BUILD, f"{BUILD}.card"} <= imports(build / "train_base.py")  # the checker sees them where they are


def test_what_users_import_at_run_time_loads_no_build_script():
    """In a fresh interpreter, as a user's program or the `dti` command starts."""
    code = (
        "import sys\n"
        "import dti, dti.cli, dti.mini.model, dti.mini.demo, dti.mini.judge\n"
        "dti.mini.judge.Judge.load()\n"
        f"print(sorted(m for m in sys.modules if m == {BUILD!r} or m.startswith({BUILD + '.'!r})))\n"
        "import dti.mini.build.probe\n"  # a control: the check sees a build script once one is imported
        f"print(sorted(m for m in sys.modules if m.startswith({BUILD + '.'!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.splitlines()[-2:]
    assert before == "[]"
    assert "'dti.mini.build.probe'" in after and "'dti.mini.build.card'" in after
