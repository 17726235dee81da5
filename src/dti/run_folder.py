"""The output folder of a training run: what goes in it, and refusing to clobber an old one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from dti.concept import CONCEPT_FILENAME
from dti.errors import DTIError

CONFIG_FILENAME = "config.json"
LOG_FILENAME = "train_log.jsonl"
NORMS_PLOT = "norms.png"
SAMPLES_FILENAME = "samples.png"
SAMPLES_DIR = "samples"
SNAPSHOTS_DIR = "snapshots"
WEBUI_DIR = "webui"  # the single-file embedding for A1111 / ComfyUI / kohya, named after the token
OWNED = {CONCEPT_FILENAME, CONFIG_FILENAME, LOG_FILENAME, NORMS_PLOT, SAMPLES_FILENAME, SAMPLES_DIR, SNAPSHOTS_DIR, WEBUI_DIR}


def check_output(path: str | Path, overwrite: bool) -> None:
    """Refuse an output that would overwrite earlier results unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DTIError(f"--output {path} is a file; choose a folder path")
    if not path.is_dir() or overwrite or not any(path.iterdir()):
        return
    if (path / CONCEPT_FILENAME).exists():
        raise DTIError(f"output folder {path} already holds a concept; pass --overwrite to replace it or choose another output folder")
    raise DTIError(f"output folder {path} is not empty; pass --overwrite to reuse it or choose another output folder")


class RunFolder:
    """Paths and writers of one run's outputs."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def create(self, overwrite: bool) -> None:
        check_output(self.path, overwrite)
        self.path.mkdir(parents=True, exist_ok=True)
        if overwrite:  # remove what an earlier run wrote (and only that), so nothing stale mixes in
            for entry in self.path.iterdir():
                if entry.name not in OWNED and not entry.name.startswith("learned_embeds"):
                    continue
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()

    @property
    def concept(self) -> Path:
        return self.path / CONCEPT_FILENAME

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILENAME

    @property
    def norms_plot(self) -> Path:
        return self.path / NORMS_PLOT

    def sample_grid(self, step: int) -> Path:
        return self.path / SAMPLES_DIR / f"step-{step:06d}.png"

    def snapshot(self, step: int) -> Path:
        return self.path / SNAPSHOTS_DIR / f"concept-step-{step:06d}.safetensors"

    def append_log(self, record: dict[str, Any]) -> None:
        with open(self.path / LOG_FILENAME, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a run's ``train_log.jsonl``."""
    path = Path(path)
    if path.is_dir():
        path = path / LOG_FILENAME
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
