"""The rooms of the package (docs/ARCHITECTURE.md): each imports only rooms below it, nothing imports
the public API or the test helpers, the method's math imports no Hugging Face code, and there is no
import cycle anywhere in src/dti. Function-local imports count: a lazy import is still a dependency."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dti"
TOOLS = PACKAGE.parents[1] / "tools"
#: The rooms, lowest first: a room imports only rooms before it in this list (and itself).
ROOMS = ("core", "mini", "text", "models", "methods", "concepts", "use", "training", "evaluation", "ui", "commands")
#: Above every room and imported by none: the public API (``dti``, ``python -m dti``) and the tests' helpers.
TOP = ("api", "testing")
HUGGING_FACE = ("transformers", "diffusers", "accelerate", "huggingface_hub", "tokenizers", "safetensors", "peft")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (PACKAGE.parent / rel).with_suffix(".py").is_file() or (PACKAGE.parent / rel / "__init__.py").is_file()


def _type_only(tree: ast.AST) -> set[ast.AST]:
    """The nodes under ``if TYPE_CHECKING:``: read by type checkers, never run."""
    skipped: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            for child in node.body:
                skipped.update(ast.walk(child))
    return skipped


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-local imports included, type-checking-only
    ones not: they never run); ``from pkg import name`` counts as importing ``pkg.name`` when that is a
    module, else ``pkg``."""
    names = set()
    tree = ast.parse(path.read_text())
    skipped = _type_only(tree)
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names.add(full if node.module.split(".")[0] == "dti" and is_module(full) else node.module)
    return names


def room(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "dti":
        return ""
    if len(parts) == 1 or parts[1] in ("__main__",):
        return "api"
    return parts[1]


def modules() -> dict[str, set[str]]:
    return {module_name(p): {n for n in imports(p) if n.split(".")[0] == "dti"} for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_is_in_a_room():
    strays = sorted(m for m in modules() if room(m) not in (*ROOMS, *TOP))
    assert not strays, f"modules outside the rooms: {strays} (docs/ARCHITECTURE.md)"
    assert len(modules()) > 60


def test_no_room_imports_upward():
    order = {name: i for i, name in enumerate(ROOMS)}
    bad = []
    for module, targets in modules().items():
        mine = room(module)
        for target in targets:
            theirs = room(target)
            if theirs in TOP and theirs != mine:
                bad.append(f"{module} imports {target} ({theirs} is imported by nothing)")
            elif mine in order and theirs in order and order[theirs] > order[mine]:
                bad.append(f"{module} ({mine}) imports {target} ({theirs}, a room above it)")
    assert not bad, "\n".join(bad)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module, or one that imports itself."""
    index, low, stack, on, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_anywhere():
    graph = modules()
    assert not cycles(graph), cycles(graph)


def test_the_checkers_see_what_they_must(tmp_path):
    """Controls: the import reader sees a function-local import, and the cycle finder sees a cycle."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from dti.evaluation import demo\n    import transformers\n")
    assert {"dti.evaluation.demo", "transformers"} <= imports(bad)
    typed = tmp_path / "typed.py"
    typed.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import dti.training.loop\n")
    assert "dti.training.loop" not in imports(typed)
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert room("dti.training.loop") == "training" and room("dti") == "api"


@pytest.mark.parametrize("room_name", ["core", "methods"])
def test_the_method_imports_no_hugging_face_code(room_name):
    """The method's math and the methods are torch only (core, methods): no model library reaches them."""
    found = {
        str(p.relative_to(PACKAGE)): sorted(n for n in imports(p) if n.split(".")[0] in HUGGING_FACE)
        for p in sorted((PACKAGE / room_name).rglob("*.py"))
    }
    assert len(found) >= 5 and not {k: v for k, v in found.items() if v}


BUILD = "tools.mini_build"  # dti-mini's build scripts: they train and describe the shipped model, nobody runs them to use it


def test_nothing_in_the_package_imports_the_build_scripts():
    build = TOOLS / "mini_build"
    assert (build / "train_base.py").is_file()
    bad = {str(p.relative_to(PACKAGE)): sorted(n for n in imports(p) if n.startswith("tools")) for p in sorted(PACKAGE.rglob("*.py"))}
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
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PACKAGE.parents[1],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.splitlines()[-2:]
    assert before == "[]"
    assert "'tools.mini_build.probe'" in after and "'tools.mini_build.card'" in after
