"""Generated images, cached by everything that decides their pixels: re-running an evaluation, or
scoring it with one more metric, generates nothing again.

The key is a sha256 over the concept file's sha256, the prompt, the seed, the model's identity
and the sampler settings (steps, guidance, resolution, scheduler class, precision, rescale mode).
An image lives at ``CACHE/ab/<key>.png`` with its recipe in the PNG text, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from dti.core.errors import warn
from dti.core.files import save_image

RECIPE_KEY = "dti-cache"
_SHA_MEMO: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class Sampler:
    """The sampler settings that change an image (``resolution`` None: the model's native size)."""

    steps: int
    guidance: float
    resolution: int | None
    scheduler: str
    precision: str
    rescale: str | None = None


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (remembered per path, size and mtime within a process)."""
    path = Path(path).resolve()
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns)
    if memo not in _SHA_MEMO:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _SHA_MEMO[memo] = digest.hexdigest()
    return _SHA_MEMO[memo]


def model_identity(model: str | os.PathLike) -> str:
    """A local folder: its absolute path and every file's size and mtime (weights replaced in place
    change it); a hub id: the id."""
    path = Path(model)
    if not path.is_dir():
        return str(model)
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            p = Path(root) / name
            st = p.stat()
            digest.update(f"{p.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return f"{path.resolve()}#{digest.hexdigest()[:16]}"


def recipe(concept_sha: str, prompt: str, seed: int, model: str, sampler: Sampler) -> dict[str, Any]:
    """Everything the key is made of, as stored in the image."""
    return {"concept_sha256": concept_sha, "prompt": prompt, "seed": int(seed), "model": model, **asdict(sampler)}


def cache_key(concept_sha: str, prompt: str, seed: int, model: str, sampler: Sampler) -> str:
    text = json.dumps(recipe(concept_sha, prompt, seed, model, sampler), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class GenerationCache:
    """``get`` / ``put`` images by key under ``root``; counts hits and stores."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.hits = 0
        self.stores = 0

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.png"

    def get(self, key: str) -> Image.Image | None:
        """The cached image, or None. A damaged entry (cut short by a crash of another program,
        edited by hand) is a miss with one warning, and is replaced by the next ``put``."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with Image.open(path) as im:
                stored = json.loads(im.text.get(RECIPE_KEY, "{}")) if hasattr(im, "text") else {}
                im.load()
                image = im.convert("RGB")
        except Exception as exc:
            warn(f"cached image {path} is unreadable ({type(exc).__name__}); generating it again")
            return None
        if stored.get("key") != key:
            warn(f"cached image {path} does not carry its key; generating it again")
            return None
        self.hits += 1
        return image

    def put(self, key: str, image: Image.Image, made_by: dict[str, Any]) -> Path:
        info = PngInfo()
        info.add_text(RECIPE_KEY, json.dumps({"key": key, **made_by}, sort_keys=True))
        info.add_text("prompt", str(made_by.get("prompt", "")))
        self.stores += 1
        return save_image(image, self.path(key), pnginfo=info)
