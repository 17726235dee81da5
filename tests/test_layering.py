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
OUTSIDE_CORE = ("dti.evaluation", "dti.commands")


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


@pytest.mark.parametrize("module", ["core/sphere.py", "core/optim.py"])
def test_the_math_imports_no_hugging_face_code(module):
    found = [name for name in imports(PACKAGE / module) if name.split(".")[0] in HUGGING_FACE]
    assert not found, f"{module} imports {found}"


def core_files() -> list[Path]:
    outside = {PACKAGE / "mini", PACKAGE / "evaluation", PACKAGE / "commands", PACKAGE / "__main__.py"}  # __main__ is the CLI
    return [p for p in sorted(PACKAGE.rglob("*.py")) if not any(p == o or o in p.parents for o in outside)]


def test_the_core_never_imports_mini_evaluate_or_cli():
    assert len(core_files()) > 20
    bad = {str(p.relative_to(PACKAGE)): sorted(n for n in imports(p) if n.startswith(OUTSIDE_CORE)) for p in core_files()}
    assert not {k: v for k, v in bad.items() if v}


def test_the_checker_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from dti.evaluation import demo\n    import transformers\n")
    assert {"dti.evaluation", "dti.evaluation.demo", "transformers"} <= imports(bad)


BUILD = "tools.mini_build"  # dti-mini's build scripts: they train and describe the shipped model, nobody runs them to use it


def test_nothing_outside_the_build_scripts_imports_them():
    build = PACKAGE.parents[1] / "tools" / "mini_build"
    assert (build / "train_base.py").is_file()
    bad = {
        str(p.relative_to(PACKAGE)): sorted(n for n in imports(p) if n == BUILD or n.startswith(BUILD + "."))
        for p in sorted(PACKAGE.rglob("*.py"))
    }
    assert not {k: v for k, v in bad.items() if v}
    assert {BUILD, f"{BUILD}.card"} <= imports(build / "train_base.py")  # the checker sees them where they are


def test_what_users_import_at_run_time_loads_no_build_script():
    """In a fresh interpreter, as a user's program or the `dti` command starts."""
    code = (
        "import sys\n"
        "import dti, dti.commands, dti.mini.model, dti.evaluation.demo, dti.mini.judge\n"
        "dti.mini.judge.Judge.load()\n"
        f"print(sorted(m for m in sys.modules if m == {BUILD!r} or m.startswith({BUILD + '.'!r})))\n"
        "import tools.mini_build.probe\n"  # a control: the check sees a build script once one is imported
        f"print(sorted(m for m in sys.modules if m.startswith({BUILD + '.'!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.splitlines()[-2:]
    assert before == "[]"
    assert "'tools.mini_build.probe'" in after and "'tools.mini_build.card'" in after
