"""The output folder of a training run: what goes in it, and never losing an earlier one.

A run writes into its folder directly when the folder is new or empty. With ``--overwrite`` on a
folder that holds results, the new run writes into a staging folder inside it
(``.dti-overwrite/``) and replaces the old results only once it has finished: a run that fails
or is interrupted leaves the old results as they were (and its own state resumable). Only files
dti writes are ever replaced or removed; a user's own files, also inside ``samples/`` or
``snapshots/``, are kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dti.concepts.concept import CONCEPT_FILENAME
from dti.core.errors import DTIError
from dti.core.files import link_or_copy, replace_together

CONFIG_FILENAME = "config.json"
LOG_FILENAME = "train_log.jsonl"
NORMS_PLOT = "norms.png"
SAMPLES_FILENAME = "samples.png"
SAMPLES_DIR = "samples"
SNAPSHOTS_DIR = "snapshots"
CHECKPOINTS_DIR = "checkpoints"
WEBUI_DIR = "webui"  # the single-file embedding for A1111 / ComfyUI / kohya, named after the token
STAGING_DIR = ".dti-overwrite"  # where an --overwrite run writes until it has finished

# What dti writes, so what an overwrite may replace: names at the top, patterns inside folders.
OWNED_FILES = re.compile(
    rf"^({re.escape(CONCEPT_FILENAME)}|{re.escape(CONFIG_FILENAME)}|{re.escape(LOG_FILENAME)}|{re.escape(NORMS_PLOT)}|"
    rf"{re.escape(SAMPLES_FILENAME)}|learned_embeds(_\d+)?\.(safetensors|bin)|pytorch_lora_weights\.safetensors)$"
)
OWNED_IN = {
    SAMPLES_DIR: re.compile(r"^step-\d{6}\.png$"),
    SNAPSHOTS_DIR: re.compile(r"^concept-step-\d{6}\.safetensors$"),
    CHECKPOINTS_DIR: re.compile(r"^step-\d{6}\.pt$"),
    WEBUI_DIR: re.compile(r"^[^/]+\.(safetensors|pt)$"),  # and written by dti: see _written_by_dti
}


def _written_by_dti(path: Path) -> bool:
    if path.suffix != ".safetensors":
        return False
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("written_by") == "dti"
    except Exception:  # a user's unreadable file is not ours
        return False


def owned(path: Path, inside: str | None = None) -> bool:
    """Whether dti wrote ``path``: a top-level file of a run folder, or (``inside``) one in its
    folder of that name."""
    if inside is None:
        return bool(OWNED_FILES.match(path.name))
    pattern = OWNED_IN.get(inside)
    if pattern is None or not pattern.match(path.name):
        return False
    return inside != WEBUI_DIR or _written_by_dti(path)


def holds_results(path: Path) -> bool:
    return any((path / name).exists() for name in (CONCEPT_FILENAME, CONFIG_FILENAME, LOG_FILENAME))


def check_output(path: str | Path, overwrite: bool, inputs: Mapping[str, Any] | None = None) -> None:
    """Refuse an output that would overwrite earlier results unless ``overwrite``, and one that is (or
    lies inside) an input folder (``inputs``: setting name -> path, e.g. the photos and the model)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DTIError(f"--output {path} is a file; choose a folder path")
    for name, given in (inputs or {}).items():
        if isinstance(given, (str, os.PathLike)) and str(given) and Path(given).is_dir():
            folder = Path(given).resolve()
            if path.resolve() == folder or path.resolve().is_relative_to(folder):
                where = "is" if path.resolve() == folder else "lies inside"
                raise DTIError(
                    f"{{output}} {path} {where} the {{{name}}} folder {given}: the run would be written among its files; "
                    "choose a separate output folder",
                    settings=["output", name],
                )
    if not path.is_dir() or overwrite:
        return
    visible = [p for p in path.iterdir() if p.name not in (".dti.lock",)]
    if not visible:
        return
    if (path / CONCEPT_FILENAME).exists():
        raise DTIError(f"output folder {path} already holds a concept; pass --overwrite to replace it or choose another output folder")
    if (path / CONFIG_FILENAME).exists() or (path / STAGING_DIR).exists():
        raise DTIError(
            f"output folder {path} holds an unfinished run; continue it with `dti train --resume {path}`, "
            "or pass --overwrite to start again"
        )
    raise DTIError(f"output folder {path} is not empty; pass --overwrite to reuse it or choose another output folder")


class RunFolder:
    """Paths and writers of one run's outputs. ``path`` is where the results end up; ``work`` is
    where the run writes them (``path`` itself, or the staging folder of an overwrite)."""

    def __init__(self, path: str | Path, work: str | Path | None = None) -> None:
        self.path = Path(path)
        self.work = Path(work) if work is not None else self.path

    @classmethod
    def for_new_run(cls, path: str | Path, overwrite: bool, inputs: Mapping[str, Any] | None = None) -> RunFolder:
        path = Path(path)
        check_output(path, overwrite, inputs)
        if overwrite and path.is_dir() and holds_results(path):
            return cls(path, path / STAGING_DIR)
        return cls(path)

    @classmethod
    def for_resume(cls, path: str | Path) -> RunFolder:
        """The run in ``path`` to continue: an unfinished overwrite first, else the folder's own."""
        path = Path(path)
        if (path / STAGING_DIR / CONFIG_FILENAME).is_file():
            return cls(path, path / STAGING_DIR)
        if (path / CONFIG_FILENAME).is_file():
            return cls(path)
        if not path.is_dir():
            raise DTIError(f"--resume {path}: no such run folder; pass the --output folder of the run to continue")
        raise DTIError(f"--resume {path}: the folder holds no dti run (no {CONFIG_FILENAME}); pass the --output folder of a run")

    @property
    def staged(self) -> bool:
        return self.work != self.path

    def create(self) -> None:
        """Make the folder the run writes into; a staging folder left by an earlier failed
        overwrite is dti's own and is cleared."""
        if self.staged and self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True, exist_ok=True)

    def commit(self) -> None:
        """A finished overwrite: the new files replace the old ones together (each new file is
        linked beside its target and renamed onto it, so the staging folder stays whole until the
        end), then the old run's files the new run did not write are removed (dti's only). If a
        rename fails, the old files are put back and the staged run stays resumable."""
        if not self.staged:
            return
        new = sorted(p.relative_to(self.work) for p in self.work.rglob("*") if p.is_file())
        targets = [self.path / rel for rel in new]
        stale = [p for p in self._owned_files() if p not in set(targets)]
        links: list[str] = []
        try:
            for rel, target in zip(new, targets):
                target.parent.mkdir(parents=True, exist_ok=True)
                links.append(str(target.with_name(f".{target.name}.dti-new")))
                link_or_copy(self.work / rel, links[-1])
            replace_together(links, targets)
        except BaseException:
            for link in links:
                with contextlib.suppress(OSError):
                    os.unlink(link)
            raise
        shutil.rmtree(self.work)
        for path in stale:
            with contextlib.suppress(OSError):
                path.unlink()
        for name in OWNED_IN:  # a folder the new run did not fill and that holds nothing else
            folder = self.path / name
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        self.work = self.path

    def _owned_files(self) -> list[Path]:
        """The files of the run in ``path`` that dti wrote (what an overwrite may replace)."""
        found = []
        for entry in self.path.iterdir():
            if entry.is_dir() and entry.name in OWNED_IN:
                found += [inner for inner in entry.iterdir() if inner.is_file() and owned(inner, entry.name)]
            elif entry.is_file() and owned(entry):
                found.append(entry)
        return found

    @property
    def concept(self) -> Path:
        return self.work / CONCEPT_FILENAME

    @property
    def config(self) -> Path:
        return self.work / CONFIG_FILENAME

    @property
    def norms_plot(self) -> Path:
        return self.work / NORMS_PLOT

    @property
    def log(self) -> Path:
        return self.work / LOG_FILENAME

    @property
    def checkpoints(self) -> Path:
        return self.work / CHECKPOINTS_DIR

    def sample_grid(self, step: int) -> Path:
        return self.work / SAMPLES_DIR / f"step-{step:06d}.png"

    def snapshot(self, step: int) -> Path:
        return self.work / SNAPSHOTS_DIR / f"concept-step-{step:06d}.safetensors"

    def append_log(self, record: dict[str, Any]) -> None:
        with open(self.log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def rewrite_log(self, records: list[dict[str, Any]]) -> None:
        """The log as of a checkpoint (a resumed run drops what the killed run logged after it)."""
        from dti.core.files import write_text

        write_text(self.log, "".join(json.dumps(r) + "\n" for r in records))


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a run's ``train_log.jsonl``."""
    path = Path(path)
    if path.is_dir():
        path = path / LOG_FILENAME
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
