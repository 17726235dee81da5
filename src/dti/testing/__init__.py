"""Tiny pipelines of every supported family, built from the real diffusers/transformers classes.

Random weights, real architectures, real (or offline-built) tokenizers: they load with each
pipeline's ``from_pretrained`` and exercise every code path of training and generation offline
and in seconds. They produce noise, not pictures. Used by the tests, the benchmarks' ``--tiny``
settings and the examples.
"""

from __future__ import annotations

from dti.testing.clip import CLIP_VOCAB_SIZE, build_tiny_sd, build_tiny_sdxl, clip_bpe_file, clip_tokenizer, write_clip_tokenizer_files

__all__ = [
    "CLIP_VOCAB_SIZE",
    "build_tiny_sd",
    "build_tiny_sdxl",
    "clip_bpe_file",
    "clip_tokenizer",
    "write_clip_tokenizer_files",
]
