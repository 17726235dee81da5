"""A subject folder -> training crops, prompts, and a cache of their VAE latents.

Each photo is EXIF-transposed, resized once (shorter side to the resolution, bicubic) and kept in
memory; a training sample is a random square crop of it with a random "photo of a {}" prompt.
Crop offsets are snapped to the VAE's downsampling factor, so the set of distinct crops is small
and each one is VAE-encoded once: the cache keeps the latent distribution (mean, std), and every
use draws a fresh sample from it, exactly as encoding again would.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from dti.errors import DTIError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

# Textual Inversion's object templates (Gal et al. 2022), the prompts of the paper's training.
OBJECT_TEMPLATES = (
    "a photo of a {}",
    "a rendering of a {}",
    "a cropped photo of the {}",
    "the photo of a {}",
    "a photo of a clean {}",
    "a photo of a dirty {}",
    "a dark photo of the {}",
    "a photo of my {}",
    "a photo of the cool {}",
    "a close-up photo of a {}",
    "a bright photo of the {}",
    "a cropped photo of a {}",
    "a photo of the {}",
    "a good photo of the {}",
    "a photo of one {}",
    "a close-up photo of the {}",
    "a rendition of the {}",
    "a photo of the clean {}",
    "a rendition of a {}",
    "a photo of a nice {}",
    "a good photo of a {}",
    "a photo of the nice {}",
    "a photo of the small {}",
    "a photo of the weird {}",
    "a photo of the large {}",
    "a photo of a cool {}",
    "a photo of a small {}",
)

STYLE_TEMPLATES = (
    "a painting in the style of {}",
    "a rendering in the style of {}",
    "a cropped painting in the style of {}",
    "the painting in the style of {}",
    "a clean painting in the style of {}",
    "a dark painting in the style of {}",
    "a picture in the style of {}",
    "a cool painting in the style of {}",
    "a close-up painting in the style of {}",
    "a bright painting in the style of {}",
    "a good painting in the style of {}",
    "a rendition in the style of {}",
    "a nice painting in the style of {}",
    "a small painting in the style of {}",
    "a weird painting in the style of {}",
    "a large painting in the style of {}",
)

# For small vocabularies that know no "photo"/"rendering" (dti-mini): the bare word.
BARE_TEMPLATES = ("a {}",)

TEMPLATE_SETS = {"object": OBJECT_TEMPLATES, "style": STYLE_TEMPLATES, "bare": BARE_TEMPLATES}


def list_images(folder: str | Path) -> list[Path]:
    """Image files of a subject folder, sorted; hidden and non-image files are ignored."""
    folder = Path(folder)
    if not folder.exists():
        raise DTIError(f"photo folder {folder} does not exist; pass a folder holding 3-6 photos of the subject")
    if not folder.is_dir():
        raise DTIError(f"{folder} is not a folder; pass a folder holding 3-6 photos of the subject")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DTIError(f"photo folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}); add 3-6 photos of the subject")
    return files


def load_image(path: Path) -> Image.Image:
    """Open an image as RGB with its EXIF orientation applied."""
    try:
        with Image.open(path) as im:
            im.load()
            return ImageOps.exif_transpose(im).convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DTIError(f"{path} is not a readable image ({type(exc).__name__}); remove or replace it") from None


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    return image.resize(new, Image.Resampling.BICUBIC)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> float tensor [3, H, W] in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


@dataclass(frozen=True)
class Sample:
    """One training example: which photo, where it was cropped, and its prompt."""

    image: int
    top: int
    left: int
    prompt: str


class SubjectData:
    """The photos of one subject, resized for one resolution, and a sampler of crops + prompts."""

    def __init__(
        self,
        images: Sequence[Image.Image],
        resolution: int,
        placeholder: str,
        templates: Sequence[str] = OBJECT_TEMPLATES,
        snap: int = 8,
        seed: int = 0,
    ) -> None:
        if not images:
            raise DTIError("no photos given; pass a folder holding 3-6 photos of the subject")
        self.resolution = resolution
        self.snap = snap
        self.templates = tuple(templates)
        self.placeholder = placeholder
        self.original_sizes: list[tuple[int, int]] = []  # (height, width) before resizing
        self.pixels: list[torch.Tensor] = []
        for image in images:
            self.original_sizes.append((image.height, image.width))
            self.pixels.append(to_tensor(resize_shorter_side(image, resolution)))
        self._rng = random.Random(seed)
        self._order: list[int] = []

    @classmethod
    def from_folder(cls, folder: str | Path, resolution: int, placeholder: str, **kwargs) -> SubjectData:
        return cls([load_image(p) for p in list_images(folder)], resolution, placeholder, **kwargs)

    def __len__(self) -> int:
        return len(self.pixels)

    def _next_image(self) -> int:
        if not self._order:  # one pass over the photos in random order, then reshuffle
            self._order = list(range(len(self.pixels)))
            self._rng.shuffle(self._order)
        return self._order.pop()

    def _offset(self, extent: int) -> int:
        slack = extent - self.resolution
        return self._rng.randrange(0, slack // self.snap + 1) * self.snap if slack > 0 else 0

    def sample(self) -> Sample:
        index = self._next_image()
        _, h, w = self.pixels[index].shape
        top, left = self._offset(h), self._offset(w)
        prompt = self._rng.choice(self.templates).format(self.placeholder)
        return Sample(index, top, left, prompt)

    def batch(self, size: int) -> list[Sample]:
        return [self.sample() for _ in range(size)]

    def crop(self, sample: Sample) -> torch.Tensor:
        r = self.resolution
        return self.pixels[sample.image][:, sample.top : sample.top + r, sample.left : sample.left + r]


class LatentCache:
    """VAE latent distributions of crops, computed once per distinct crop."""

    def __init__(self, encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]) -> None:
        self._encode = encode
        self._cache: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.encodes = 0

    def distribution(self, data: SubjectData, sample: Sample) -> tuple[torch.Tensor, torch.Tensor | None]:
        key = (sample.image, sample.top, sample.left)
        if key not in self._cache:
            mean, std = self._encode(data.crop(sample).unsqueeze(0))
            self._cache[key] = (mean[0], None if std is None else std[0])
            self.encodes += 1
        return self._cache[key]

    def sample(self, data: SubjectData, samples: Sequence[Sample], generator: torch.Generator) -> torch.Tensor:
        """A batch of latents drawn from the cached distributions (unscaled, VAE space); a
        deterministic autoencoder (std None, e.g. SANA's DC-AE) gives its latents as they are."""
        dists = [self.distribution(data, s) for s in samples]
        mean = torch.stack([d[0] for d in dists])
        if any(d[1] is None for d in dists):
            return mean
        std = torch.stack([d[1] for d in dists])
        eps = torch.randn(mean.shape, generator=generator, dtype=torch.float32).to(mean.device)
        return mean + std * eps
