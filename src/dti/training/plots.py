"""Plots people look at: the norm of each learned vector over training, against the vocabulary."""

from __future__ import annotations

import textwrap
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dti.core.files import atomic_write


def plot_norms(
    records: Sequence[Mapping[str, Any]],
    vocab: Mapping[str, Mapping[str, float]],
    path: str | Path,
    title: str = "",
) -> Path:
    """One panel per encoder: vector norm per step, with the vocabulary's min/mean/max norm."""
    # A word matplotlib's font has no glyph for (an emoji token) or a title too long to lay out would print
    # matplotlib's own warnings on the user's screen; the plot is still written, so they are not shown.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        encoders = list(vocab)
        fig, axes = plt.subplots(1, len(encoders), figsize=(5 * len(encoders), 3.6), squeeze=False)
        steps = [r["step"] for r in records]
        for ax, name in zip(axes[0], encoders):
            stats = vocab[name]
            ax.axhspan(stats["min"], stats["max"], color="0.9", label="vocabulary min-max")
            ax.axhline(stats["mean"], color="0.4", linestyle="--", label=f"vocabulary mean {stats['mean']:.3f}")
            n_vectors = len(records[0]["norms"][name]) if records else 0
            for k in range(n_vectors):
                ax.plot(steps, [r["norms"][name][k] for r in records], label=f"vector {k}" if n_vectors > 1 else "learned vector")
            ax.set_title(name)
            ax.set_xlabel("step")
            ax.set_ylabel("L2 norm")
            ax.legend(fontsize=7, loc="upper left")
        if title:
            fig.suptitle(textwrap.shorten(title, 140, placeholder=" ..."), fontsize=10)
        fig.tight_layout()
        try:
            return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
        finally:
            plt.close(fig)
