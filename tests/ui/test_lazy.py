"""dti works without gradio: nothing but the page modules imports it, and ``dti`` / the command line
import none of them until ``dti ui`` runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.test_layering import imports

UI = Path(__file__).resolve().parents[2] / "src" / "dti" / "ui"


def test_only_the_pages_import_gradio():
    importers = sorted(p.relative_to(UI).as_posix() for p in UI.rglob("*.py") if any(n.split(".")[0] == "gradio" for n in imports(p)))
    assert importers and all(name == "app.py" or name.startswith("pages/") for name in importers), importers


def test_the_command_line_does_not_import_gradio():
    code = "import sys, dti, dti.commands; dti.commands.build_parser(); print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
