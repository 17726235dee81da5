"""The one check every bad-input table uses: exit 2, one line naming the problem, nothing written.

Each table is a list of cases; a new command inherits the standard by adding its rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from dti.commands import main


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and mtime, to prove a refusal wrote nothing."""
    if not folder.exists():
        return {}
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            if name == ".dti.lock":  # a dead run's stale lock may be cleared by a refused command
                continue
            p = Path(root) / name
            st = p.stat()
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


def assert_refused(argv: Sequence[object], capsys, fragment: str, untouched: Iterable[Path] = ()) -> str:
    """Run ``dti argv``; it must exit 2 with one ``error:`` line containing ``fragment`` (case-insensitive)
    and leave every folder in ``untouched`` exactly as it was (nothing created, changed or removed)."""
    folders = [Path(p) for p in untouched]
    before = [snapshot(f) for f in folders]
    existed = [f.exists() for f in folders]
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, f"exit {code}: {err}"
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment.lower() in lines[0].lower(), lines[0]
    for folder, was, snap in zip(folders, existed, before):
        assert folder.exists() == was, f"{folder} was {'removed' if was else 'created'}"
        assert snapshot(folder) == snap, f"{folder} changed"
    return lines[0]
