"""What a run folder says while it trains and after: its progress, a loss and norm chart drawn from
its ``train_log.jsonl``, the newest sample grid. Read-only: the run's own files are the source."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dti.training.run_folder import LOG_FILENAME, SAMPLES_DIR, STAGING_DIR


@dataclass
class Progress:
    """Where a run stands: ``step`` of ``steps`` (None: not started), its log records, newest sample."""

    step: int | None = None
    steps: int | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    sample: Path | None = None
    sample_step: int | None = None

    def line(self) -> str:
        if self.step is None:
            return "not started"
        last = next((r for r in reversed(self.records) if r.get("loss") is not None), None)
        loss = f", loss {last['loss']:.4f}" if last else ""
        norm = self.norm()
        shown = f", norm {norm:.4f}" if norm is not None else ""
        return f"step {self.step} of {self.steps or '?'}{loss}{shown}"

    def norm(self) -> float | None:
        if not self.records:
            return None
        first = next(iter(self.records[-1].get("norms", {}).values()), None)
        return float(first[0]) if first else None


def work_folder(run: Path) -> Path:
    """Where the run writes now: its staging folder during an ``--overwrite``, else itself."""
    return run / STAGING_DIR if (run / STAGING_DIR / "config.json").is_file() else run


def read_progress(run: Path) -> Progress:
    """The run's progress from its files (a half-written last log line is skipped)."""
    folder = work_folder(run)
    progress = Progress()
    try:
        progress.steps = int(json.loads((folder / "config.json").read_text()).get("steps"))
    except (OSError, ValueError, TypeError):
        pass
    try:
        lines = (folder / LOG_FILENAME).read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            progress.records.append(json.loads(line))
        except ValueError:
            continue
    if progress.records:
        progress.step = int(progress.records[-1].get("step", 0))
    samples = sorted((folder / SAMPLES_DIR).glob("step-*.png")) if (folder / SAMPLES_DIR).is_dir() else []
    if samples:
        progress.sample = samples[-1]
        progress.sample_step = int(samples[-1].stem.split("-")[-1])
    return progress


def chart(records: list[dict[str, Any]], vocab_mean: float | None = None) -> Any:
    """Loss and norm over the steps, side by side, as a PIL image (None before the first record)."""
    if not records:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import io

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from PIL import Image

        fig, (left, right) = plt.subplots(1, 2, figsize=(8, 2.6))
        lossy = [r for r in records if r.get("loss") is not None]
        left.plot([r["step"] for r in lossy], [r["loss"] for r in lossy], color="#4a5bd4", linewidth=1)
        left.set_title("loss", fontsize=9)
        left.set_xlabel("step", fontsize=8)
        for name in records[0].get("norms", {}):
            right.plot([r["step"] for r in records], [r["norms"][name][0] for r in records], label=name, linewidth=1.2)
        if vocab_mean is not None:
            right.axhline(vocab_mean, color="0.4", linestyle="--", linewidth=0.8, label=f"vocabulary mean {vocab_mean:.3f}")
        norms = [v for r in records for row in r.get("norms", {}).values() for v in row]
        if norms:  # DTI holds the norm fixed: a flat line at its value, not noise magnified by an offset axis
            low, high = min(norms), max(norms)
            right.set_ylim(low * 0.9, high * 1.1)
            right.ticklabel_format(axis="y", useOffset=False)
        right.set_title("norm of the word", fontsize=9)
        right.set_xlabel("step", fontsize=8)
        right.legend(fontsize=7)
        for ax in (left, right):
            ax.tick_params(labelsize=7)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90)
        plt.close(fig)
        buffer.seek(0)
        return Image.open(buffer).convert("RGB")
