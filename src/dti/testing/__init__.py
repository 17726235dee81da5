"""Tiny pipelines of every supported family, built from the real diffusers/transformers classes.

Random weights, real architectures, real (or offline-built) tokenizers: they load with each
pipeline's ``from_pretrained`` and exercise every code path of training and generation offline
and in seconds. They produce noise, not pictures. Used by the tests (one conformance suite runs
over :data:`BUILDERS`), the benchmarks' ``--tiny`` settings and the examples.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

from dti.testing.chroma import build_tiny_chroma
from dti.testing.clip import CLIP_VOCAB_SIZE, build_tiny_sd, build_tiny_sdxl, clip_bpe_file, clip_tokenizer, write_clip_tokenizer_files
from dti.testing.flux import build_tiny_flux
from dti.testing.flux2_dev import build_tiny_flux2_dev
from dti.testing.flux2_klein import build_tiny_flux2_klein
from dti.testing.hidream import build_tiny_hidream
from dti.testing.lumina2 import build_tiny_lumina2
from dti.testing.pixart import build_tiny_pixart
from dti.testing.qwenimage import build_tiny_qwenimage
from dti.testing.sana import build_tiny_sana
from dti.testing.sd3 import build_tiny_sd3
from dti.testing.wan import build_tiny_wan
from dti.testing.zimage import build_tiny_zimage

#: family name -> builder of a tiny pipeline folder (``builder(folder, seed=0) -> folder``).
#: Every registered adapter's family has one (a test checks it), so a new family gets the
#: whole conformance suite by adding its builder here.
BUILDERS: dict[str, Callable[..., Path]] = {
    "sd": build_tiny_sd,
    "sd-v": functools.partial(build_tiny_sd, prediction_type="v_prediction"),
    "sdxl": build_tiny_sdxl,
    "sd3": build_tiny_sd3,
    "sd3-no-t5": functools.partial(build_tiny_sd3, with_t5=False),
    "flux": build_tiny_flux,
    "pixart": build_tiny_pixart,
    "sana": build_tiny_sana,
    "wan": build_tiny_wan,
    "chroma": build_tiny_chroma,
    "lumina2": build_tiny_lumina2,
    "zimage": build_tiny_zimage,
    "flux2_klein": build_tiny_flux2_klein,
    "flux2_dev": build_tiny_flux2_dev,
    "hidream": build_tiny_hidream,
    "qwenimage": build_tiny_qwenimage,
}


def build_tiny(name: str, folder: str | os.PathLike, seed: int = 0) -> Path:
    """The tiny pipeline ``name`` (a key of :data:`BUILDERS`) saved to ``folder``."""
    if name not in BUILDERS:
        raise KeyError(f"no tiny builder {name!r}; have {', '.join(BUILDERS)}")
    return BUILDERS[name](folder, seed=seed)


__all__ = [
    "BUILDERS",
    "CLIP_VOCAB_SIZE",
    "build_tiny",
    "build_tiny_chroma",
    "build_tiny_flux",
    "build_tiny_flux2_dev",
    "build_tiny_flux2_klein",
    "build_tiny_hidream",
    "build_tiny_lumina2",
    "build_tiny_pixart",
    "build_tiny_qwenimage",
    "build_tiny_sana",
    "build_tiny_sd",
    "build_tiny_sd3",
    "build_tiny_sdxl",
    "build_tiny_wan",
    "build_tiny_zimage",
    "clip_bpe_file",
    "clip_tokenizer",
    "write_clip_tokenizer_files",
]
