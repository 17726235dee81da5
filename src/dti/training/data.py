"""A subject folder -> training crops, prompts, and a cache of their VAE latents.

Each photo is EXIF-transposed, resized once (shorter side to the resolution, bicubic) and kept in
memory; a training sample is a random square crop of it with a random "photo of a {}" prompt.
Crop offsets are snapped to the VAE's downsampling factor, so the set of distinct crops is small
and each one is VAE-encoded once: the cache keeps the latent distribution (mean, std), and every
use draws a fresh sample from it, exactly as encoding again would. A 4:3 photo at 768 px still has
33 distinct offsets along its long side (a 16:9 one 75), each encoded when first drawn, so a run's
early steps pay VAE encodes. ``positions=N`` restricts the offsets to N evenly spaced ones (the
ends included): fewer distinct crops (less translation augmentation, the trade-off), all encoded
before the first step, after which training does no VAE work at all.
"""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, features

from dti.core.devices import to_device
from dti.core.draws import SampleDraws, photo_order, stream_seed
from dti.core.errors import DTIError, warn
from dti.text.templates import OBJECT_TEMPLATES

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff") + (
    (".avif",) if features.check("avif") else ()
)
# Photo formats people have that PIL cannot read here: named when a folder holds them, not silently skipped.
FOREIGN_EXTENSIONS = {
    ".heic": "HEIC",
    ".heif": "HEIF",
    ".avif": "AVIF",
    ".jxl": "JPEG XL",
    ".psd": "Photoshop",
    ".svg": "SVG",
    **{ext: "camera RAW" for ext in (".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf", ".srw", ".pef")},
}

MAX_MEGAPIXELS = 64  # a photo above this is refused before it is decoded (decompression bombs)
MIN_SIDE = 8  # pixels
MAX_ASPECT = 4  # longer side / shorter side: training crops are squares of the shorter side
GRAY_BACKGROUND = (127, 127, 127)  # what transparent pixels are composited on


def _names(paths: Sequence[Path], limit: int = 5) -> str:
    shown = ", ".join(p.name + ("/" if p.is_dir() else "") for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def list_images(folder: str | Path) -> list[Path]:
    """Image files of a subject folder, sorted; hidden and non-image files are ignored. A folder
    with no image dti reads is refused naming what it does hold; photos in formats dti cannot read
    (HEIC, RAW, ...) next to readable ones are skipped with one warning line."""
    folder = Path(folder)
    if not folder.exists():
        raise DTIError(f"photo folder {folder} does not exist; pass a folder holding 3-6 photos of the subject")
    if not folder.is_dir():
        raise DTIError(f"{folder} is not a folder; pass a folder holding 3-6 photos of the subject")
    try:
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        raise DTIError(f"cannot read photo folder {folder}: {exc.strerror or exc}; check its permissions") from None
    files = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    foreign = [p for p in entries if p.is_file() and p.suffix.lower() in FOREIGN_EXTENSIONS and p.suffix.lower() not in IMAGE_EXTENSIONS]
    reads = ", ".join(IMAGE_EXTENSIONS)
    if not files:
        if not entries:
            raise DTIError(f"photo folder {folder} holds no images (it is empty); add 3-6 photos of the subject ({reads})")
        kinds = sorted({FOREIGN_EXTENSIONS[p.suffix.lower()] for p in foreign})
        fix = f"convert the {'/'.join(kinds)} photos to JPEG or PNG" if kinds else "add 3-6 photos of the subject"
        if not foreign and all(p.is_dir() for p in entries):
            fix = "pass the folder that holds the photos themselves"
        raise DTIError(f"photo folder {folder} holds no images dti reads: it holds {_names(entries)}; dti reads {reads}; {fix}")
    if foreign:
        names = _names(foreign)
        warn(f"skipped {len(foreign)} photo(s) in {folder} that dti cannot read: {names}; convert them to JPEG or PNG to use them")
    return files


def _check_size(width: int, height: int, name: object) -> None:
    """Refuse sizes that cannot train: enormous (memory), tiny, or strips (a 1000x2 strip resized to a
    shorter side of 512 would be a 256000x512 tensor)."""
    if width * height > MAX_MEGAPIXELS * 1_000_000:
        raise DTIError(
            f"{name} is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels), over dti's limit of {MAX_MEGAPIXELS}; "
            "downscale it (2048 px on the longer side is plenty) or remove it"
        )
    short, long = sorted((width, height))
    if short < MIN_SIDE:
        raise DTIError(f"{name} is {width}x{height} pixels; a photo needs at least {MIN_SIDE} px on each side; remove it")
    if long > MAX_ASPECT * short:
        raise DTIError(
            f"{name} is {width}x{height} pixels ({long / short:.1f}:1); dti trains on square crops and accepts up to "
            f"{MAX_ASPECT}:1; crop it closer to square or remove it"
        )


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """A high-bit-depth or float channel scaled (not clipped) to 0..255."""
    a = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if array.dtype.kind == "u" and array.dtype.itemsize == 2:
        scaled = a / 257.0  # 65535 -> 255
    else:
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if array.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
            scaled = a * 255.0
        elif lo >= 0.0 and hi <= 255.0:
            scaled = a
        elif lo >= 0.0 and hi <= 65535.0:
            scaled = a / 257.0
        else:  # an unknown range (signed or wide): stretch it
            scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image -> 8-bit RGB: 16-bit and float images scaled to 8 bits, transparent pixels
    composited on a neutral gray (127, 127, 127); such an image gets ``info["dti_transparent"]``."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        image = Image.fromarray(_to_uint8(np.asarray(image)), "L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] < 255:
            out = Image.alpha_composite(Image.new("RGBA", rgba.size, (*GRAY_BACKGROUND, 255)), rgba).convert("RGB")
            out.info["dti_transparent"] = True
            return out
        return rgba.convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Open an image as 8-bit RGB with its EXIF orientation applied (see :func:`to_rgb`); the first
    frame of an animation. Sizes that cannot train are refused before the pixels are decoded."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own, lower limit applies
            with Image.open(path) as im:
                _check_size(*im.size, path)
                im.load()
                try:
                    oriented = ImageOps.exif_transpose(im)
                except Exception:  # a damaged EXIF block: the pixels are fine, the orientation is unknown
                    warn(f"{path}: its EXIF orientation could not be read; the photo is used as stored")
                    oriented = im.copy()
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f" ({int(found.group(1)) / 1e6:.0f} megapixels)" if found else ""
        raise DTIError(
            f"{path} is too large{size}, over dti's limit of {MAX_MEGAPIXELS}; downscale it (2048 px on the longer side is plenty) "
            "or remove it"
        ) from None
    except (DTIError, MemoryError):
        raise
    except Exception as exc:  # any decoder failure on a user's file: truncated, corrupt, not an image
        raise DTIError(f"{path} is not a readable image ({type(exc).__name__}); remove or replace it") from None
    try:
        return to_rgb(oriented)
    except ValueError:
        raise DTIError(f"{path} has color mode {oriented.mode}, which dti cannot convert to RGB; save it as an RGB JPEG or PNG") from None


def check_photos(images: Sequence[Image.Image], resolution: int) -> list[str]:
    """Warning lines (without ``warning:``) about photos that will train poorly, for a run at
    ``resolution``: too few, smaller than the crops (upscaled, soft), composited transparency."""
    lines = []
    n = len(images)
    if 0 < n < 3:
        lines.append(f"{n} photo{'s' if n > 1 else ''}: DTI works best with 3-6 photos of the subject from different angles")
    small = [im for im in images if min(im.size) < resolution]
    if small:
        w, h = min((im.size for im in small), key=lambda size: min(size))
        lines.append(
            f"{len(small)} of {n} photos are smaller than the training resolution {resolution} px (smallest {w}x{h}); "
            "they are upscaled and look soft: use larger photos or a lower --resolution"
        )
    transparent = sum(1 for im in images if im.info.get("dti_transparent"))
    if transparent:
        lines.append(
            f"{transparent} of {n} photos have transparent pixels; they were composited on a neutral gray {GRAY_BACKGROUND} background"
        )
    return lines


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
        positions: int = 0,
    ) -> None:
        if not images:
            raise DTIError("no photos given; pass a folder holding 3-6 photos of the subject")
        self.resolution = resolution
        self.snap = snap
        self.positions = positions
        self.templates = tuple(templates)
        self.placeholder = placeholder
        self.original_sizes: list[tuple[int, int]] = []  # (height, width) before resizing
        self.pixels: list[torch.Tensor] = []
        for i, image in enumerate(images):
            _check_size(*image.size, f"photo {i + 1}")
            image = to_rgb(image)
            self.original_sizes.append((image.height, image.width))
            self.pixels.append(to_tensor(resize_shorter_side(image, resolution)))
        self.seed = seed

    @classmethod
    def from_folder(cls, folder: str | Path, resolution: int, placeholder: str, **kwargs) -> SubjectData:
        return cls([load_image(p) for p in list_images(folder)], resolution, placeholder, **kwargs)

    def __len__(self) -> int:
        return len(self.pixels)

    def sample(self, index: int) -> Sample:
        """Sample ``index`` of the run, a function of (seed, index) alone (:mod:`dti.core.draws`): the
        photo is position ``index % n`` of pass ``index // n``'s order (each pass visits every photo
        once), the crop offsets and the prompt template come from the sample's own generator."""
        n = len(self.pixels)
        image = photo_order(self.seed, n, index // n)[index % n]
        rng = random.Random(stream_seed(self.seed, "sample", index))
        _, h, w = self.pixels[image].shape

        def offset(extent: int) -> int:
            if self.positions:
                return rng.choice(self.offsets(extent))
            slack = extent - self.resolution
            return rng.randrange(0, slack // self.snap + 1) * self.snap if slack > 0 else 0

        top, left = offset(h), offset(w)
        return Sample(image, top, left, rng.choice(self.templates).format(self.placeholder))

    def offsets(self, extent: int) -> list[int]:
        """The crop offsets along a side of ``extent`` pixels: every snapped one, or ``positions``
        evenly spaced ones (the ends included; duplicates merged where the side is short)."""
        steps = max(0, extent - self.resolution) // self.snap
        if not self.positions:
            return [k * self.snap for k in range(steps + 1)]
        if self.positions == 1:
            return [steps // 2 * self.snap]
        return sorted({round(k * steps / (self.positions - 1)) * self.snap for k in range(self.positions)})

    def prompts(self) -> list[str]:
        """Every prompt ``sample`` can give: each template with the placeholder."""
        return [t.format(self.placeholder) for t in self.templates]

    def crops(self) -> list[Sample]:
        """Every distinct crop ``sample`` can return (the prompt left empty), photo by photo."""
        out = []
        for image, pixels in enumerate(self.pixels):
            _, h, w = pixels.shape
            out += [Sample(image, top, left, "") for top in self.offsets(h) for left in self.offsets(w)]
        return out

    def batch(self, indices: Iterable[int]) -> list[Sample]:
        return [self.sample(i) for i in indices]

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

    def sample(self, data: SubjectData, samples: Sequence[Sample], draws: SampleDraws) -> torch.Tensor:
        """A batch of latents drawn from the cached distributions (unscaled, VAE space), sample ``k``
        from its own generator in ``draws``; a deterministic autoencoder (std None, e.g. SANA's
        DC-AE) gives its latents as they are."""
        dists = [self.distribution(data, s) for s in samples]
        mean = torch.stack([d[0] for d in dists])
        if any(d[1] is None for d in dists):
            return mean
        std = torch.stack([d[1] for d in dists])
        eps = to_device(draws.randn(mean.shape[1:]), mean.device)
        return mean + std * eps


def load_photos(folder: str | Path) -> list[Image.Image]:
    """All photos of the subject, decoded (so an unreadable file fails before any model loads)."""
    return [load_image(path) for path in list_images(folder)]
