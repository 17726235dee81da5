"""What the real metric backbones share (DINOv2, SigLIP, CLIP, DINO: one module each): where the
weights come from, the reference photos and their masks, and the scorer over a transformers model.

Each loads a checkpoint with ``from_pretrained`` from a hub id (offline: from the local hub cache)
or from a folder that holds what the hub repo holds (config, weights, the image processor and,
for text metrics, the tokenizer), and records in its :class:`ScorerInfo` which weights it ran:
the backbone, the revision (the hub snapshot's commit, or the commit ``hf download --local-dir``
recorded, else ``None``) and the scale of its numbers. Scores from different backbones are never
comparable; the info says which one a number came from.

- ``dinov2`` (the paper's image metric): the CLS token of ``last_hidden_state`` (after DINOv2's
  final LayerNorm, so equal to ``pooler_output``), cosine to every reference photo, averaged.
  Optional reference masks black out the background, as the paper's evaluation code does.
- ``siglip`` (the paper's text metric): ``sigmoid(exp(logit_scale) * cos + logit_bias)`` between
  an image and its prompt, the prompt ending in "." and padded to 64 tokens as the paper's code does.
- ``clip`` (DreamBooth's CLIP-I / CLIP-T): raw cosines of the projected embeddings.
- ``dino`` (DreamBooth's DINO): ViT-S/16 DINO, CLS token of ``last_hidden_state``.
- ``mini``: dti-mini's judge (:mod:`dti.evaluation.scorers.mini`).

A scorer registers under its metric name (:mod:`dti.evaluation.scorers.registry`).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from dti.core.errors import DTIError
from dti.evaluation.protocol import ScorerInfo
from dti.evaluation.scorers.registry import SCORERS

COSINE = "cosine in [-1, 1]"
SIGLIP_MAX_LENGTH = 64
BATCH_SIZE = 16
MASK_FILL = (0, 0, 0)  # the paper's evaluation code multiplies a reference photo by its mask: black background
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CACHE_LIMIT = 512


# ----------------------------------------------------------------------------------------------
# where the weights come from


def _fix(metric: str) -> str:
    model = getattr(SCORERS.get(metric), "MODEL_NAME", metric)
    return f"pass --metric-model {metric}=PATH to a folder holding the {model} checkpoint (as its hub repo holds it)"


def _folder_revision(folder: Path) -> str | None:
    """The commit a folder's files came from: a hub cache snapshot is named by it; ``hf download
    --local-dir`` writes it as the first line of ``.cache/huggingface/download/config.json.metadata``."""
    if folder.parent.name == "snapshots" and _HEX40.match(folder.name):
        return folder.name
    meta = folder / ".cache" / "huggingface" / "download" / "config.json.metadata"
    try:
        first = meta.read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    return first if _HEX40.match(first) else None


def _folder_backbone(folder: Path) -> str:
    """A hub snapshot folder (``models--org--name/snapshots/<sha>``) is named by its hub id; any other folder by its path."""
    repo = folder.parent.parent.name
    if folder.parent.name == "snapshots" and repo.startswith("models--") and repo.count("--") >= 2:
        return repo[len("models--") :].replace("--", "/", 1)
    return str(folder)


def resolve_source(metric: str, source: str | os.PathLike) -> tuple[str, str, str | None]:
    """``(what from_pretrained loads, backbone name, revision)`` for a folder or a hub id; a missing
    folder, a file, or a hub id that is not in the offline cache is one line naming the fix."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        folder = path.resolve()
        return str(folder), _folder_backbone(folder), _folder_revision(folder)
    if path.exists():
        raise DTIError(f"{metric} model {text} is a file, not a model folder; {_fix(metric)}")
    if not _HUB_ID.match(text):
        raise DTIError(f"{metric} model folder {text} does not exist; {_fix(metric)}")
    from dti.models import hub

    cached = hub.cached(text, "config.json")
    if cached is not None:
        return str(cached.parent), text, cached.parent.name
    hub.fetch(
        text, "config.json", f"{metric} model", f"download it once (hf download {text}) or {_fix(metric)}"
    )  # no network: one line now
    return text, text, None  # from_pretrained downloads the rest; the revision is looked up in the cache afterwards


def _read_config(metric: str, folder: str, expected: tuple[str, ...]) -> dict[str, Any]:
    """The folder's config.json, refused when it is missing or names another model type."""
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DTIError(f"{metric} model folder {folder} holds no config.json, so it is not a saved model; {_fix(metric)}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DTIError(f"{metric} model folder {folder}: config.json is unreadable ({type(exc).__name__}); {_fix(metric)}") from None
    kind = config.get("model_type") if isinstance(config, dict) else None
    if kind not in expected:
        raise DTIError(
            f"{metric} model folder {folder} holds a {kind or 'untyped'} model, not {getattr(SCORERS.get(metric), 'MODEL_NAME', metric)} "
            f"(model_type {'/'.join(expected)}); {_fix(metric)}"
        )
    return config


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' own loading chatter (progress bars, the torchvision fallback notice) off while a metric loads."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _load(metric: str, what: str, loader: Any, where: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(where)``, any failure one line naming the metric, the source and the fix."""
    try:
        with _quiet_transformers():
            return loader.from_pretrained(where, **kwargs)
    except ImportError as exc:
        missing = (
            "sentencepiece protobuf" if "sentencepiece" in str(exc).lower() or "protobuf" in str(exc).lower() else "the missing package"
        )
        raise DTIError(f"{metric} model {where}: its {what} needs a package that is not installed; pip install {missing}") from None
    except Exception as exc:  # OSError (missing files), ValueError/KeyError (wrong contents), safetensors errors
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise DTIError(f"{metric} model {where}: cannot load its {what} ({reason}); {_fix(metric)}") from None


# ----------------------------------------------------------------------------------------------
# images


def _image_key(image: Image.Image) -> str:
    digest = hashlib.blake2b(image.tobytes(), digest_size=16)
    digest.update(f"{image.mode}{image.size}".encode())
    return digest.hexdigest()


def _mask_for(photo: Path, masks: Path) -> Path:
    from dti.training.data import IMAGE_EXTENSIONS

    candidates = (p for p in masks.glob(f"{glob.escape(photo.stem)}.*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    found = sorted(candidates, key=lambda p: (p.suffix.lower() != ".png", p.name))
    if not found:
        raise DTIError(
            f"no mask for reference photo {photo.name} in {masks} (expected {photo.stem}.png, white = subject); add one or use no masks"
        )
    return found[0]


def apply_mask(photo: Image.Image, mask: Image.Image, name: str = "photo") -> Image.Image:
    """The photo with its background (mask black) replaced by black, soft edges blended, as the
    paper's evaluation code does (``photo * mask / 255``). A mask of another size but the same
    shape is resized to the photo; one of another shape (a rotated photo, another photo's mask) is refused."""
    if mask.size != photo.size:
        (pw, ph), (mw, mh) = photo.size, mask.size
        if abs(pw / ph - mw / mh) > 0.02 * (pw / ph):
            raise DTIError(
                f"the mask of {name} is {mw}x{mh} pixels but the photo is {pw}x{ph} (another shape; EXIF-rotated photo?); "
                "save a mask of the photo's size"
            )
        mask = mask.resize(photo.size, Image.Resampling.BILINEAR)
    alpha = mask.convert("L")
    return Image.composite(photo.convert("RGB"), Image.new("RGB", photo.size, MASK_FILL), alpha)


def load_references(photos: Sequence[str | os.PathLike], masks: str | os.PathLike | None = None) -> list[Image.Image]:
    """Reference photos as RGB images (EXIF applied); with ``masks`` (a folder holding one mask per
    photo with the same file stem, white = subject), each with its background blacked out."""
    from dti.training.data import load_image

    folder = None if masks is None else Path(masks)
    if folder is not None and not folder.is_dir():
        raise DTIError(f"mask folder {folder} does not exist; pass a folder holding one mask per reference photo (same file stem)")
    out = []
    for photo in map(Path, photos):
        image = load_image(photo)
        if folder is not None:
            mask_path = _mask_for(photo, folder)
            image = apply_mask(image, load_image(mask_path), name=photo.name)
        out.append(image)
    return out


# ----------------------------------------------------------------------------------------------
# the scorers


def _features(output: Any) -> torch.Tensor:
    """``get_*_features`` returns a tensor in transformers 4 and an output whose ``pooler_output`` is it in 5."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class HFScorer:
    """Shared machinery: loading, batching, cached reference embeddings, cosine image similarity."""

    METRIC: str = ""
    DEFAULT: str = ""
    MODEL_NAME: str = ""
    MODEL_TYPES: tuple[str, ...] = ()
    IMAGE_METRIC: str | None = None
    TEXT_METRIC: str | None = None

    def __init__(
        self, source: str | os.PathLike | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32, batch_size: int = BATCH_SIZE
    ) -> None:
        if batch_size < 1:
            raise DTIError(f"{self.METRIC} batch size must be at least 1, got {batch_size}")
        self.source = str(source if source is not None else self.DEFAULT)
        where, self.backbone, revision = resolve_source(self.METRIC, self.source)
        self._where = where
        if Path(where).is_dir():
            _read_config(self.METRIC, where, self.MODEL_TYPES)
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch_size = batch_size
        self.model = self._load_model(where).to(self.device, self.dtype).eval().requires_grad_(False)
        self.processor = self._load_image_processor(where)
        if revision is None and not Path(where).is_dir():  # just downloaded: the cache now knows the commit
            revision = resolve_source(self.METRIC, self.source)[2]
        self.revision = revision
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    # subclasses: the model, and how an image batch becomes one embedding per image
    def _load_model(self, where: str) -> Any:
        raise NotImplementedError

    def _load_image_processor(self, where: str) -> Any:
        from transformers import AutoImageProcessor

        return _load(self.METRIC, "image processor", AutoImageProcessor, where)

    def _embed_batch(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _notes(self) -> str:
        return ""

    @property
    def info(self) -> ScorerInfo:
        return ScorerInfo(
            name=self.METRIC,
            backbone=self.backbone,
            revision=self.revision,
            scale=self._scale(),
            image_metric=self.IMAGE_METRIC,
            text_metric=self.TEXT_METRIC,
            notes=self._notes(),
        )

    def _scale(self) -> str:
        return COSINE

    def pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The processor's input for these images (RGB), as the model reads them."""
        rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        return self.processor(images=rgb, return_tensors="pt")["pixel_values"]

    @torch.no_grad()
    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """One unit-length float32 embedding per image, ``[n, d]``, computed in batches."""
        chunks = []
        for start in range(0, len(images), self.batch_size):
            pixels = self.pixel_values(images[start : start + self.batch_size]).to(self.device, self.dtype)
            chunks.append(torch.nn.functional.normalize(self._embed_batch(pixels).float(), dim=-1).cpu())
        return torch.cat(chunks) if chunks else torch.empty(0, 0)

    def _reference_embeddings(self, references: Sequence[Image.Image]) -> torch.Tensor:
        """References repeat across calls (every generated batch of a subject): embedded once, kept by content."""
        keys = [_image_key(im) for im in references]
        todo = [i for i, k in enumerate(keys) if k not in self._cache]
        if todo:
            fresh = self.embed_images([references[i] for i in todo])
            for i, row in zip(todo, fresh):
                self._cache[keys[i]] = row
                while len(self._cache) > _CACHE_LIMIT:
                    self._cache.popitem(last=False)
        rows = [self._cache[k] for k in keys]
        for k in keys:
            self._cache.move_to_end(k)
        return torch.stack(rows)

    def _check_references(self, references: Sequence[Any]) -> list[Image.Image]:
        if not references:
            raise DTIError(f"{self.METRIC}: image similarity needs at least one reference photo")
        if any(isinstance(r, (str, os.PathLike)) for r in references):
            if not all(isinstance(r, (str, os.PathLike)) for r in references):
                raise DTIError(f"{self.METRIC}: pass the references all as file paths or all as images, not mixed")
            return load_references(references)
        return list(references)

    def image_similarity(self, images: Sequence[Image.Image], references: Sequence[Image.Image | str | os.PathLike]) -> list[float]:
        """Per image, the mean cosine between its embedding and every reference photo's (references
        may be images or, for DINOv2's masks, photo paths)."""
        refs = self._check_references(references)
        if not images:
            return []
        if self.IMAGE_METRIC is None:
            raise DTIError(f"{self.METRIC} offers no image metric; use dinov2, clip or dino")
        sims = self.embed_images(list(images)) @ self._reference_embeddings(refs).T
        return sims.mean(dim=1).tolist()

    def text_similarity(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        raise DTIError(f"{self.METRIC} offers no text metric; use siglip or clip for text similarity")

    def _check_pairs(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> None:
        if len(images) != len(prompts):
            raise DTIError(f"{self.METRIC}: {len(prompts)} prompts for {len(images)} images; pass one prompt per image")


class TextScorer(HFScorer):
    """A joint image-text model: the tokenizer is loaded too, and text embeddings are unit-normalized."""

    def __init__(
        self, source: str | os.PathLike | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32, batch_size: int = BATCH_SIZE
    ) -> None:
        super().__init__(source, device, dtype, batch_size)
        from transformers import AutoTokenizer

        self.tokenizer = _load(self.METRIC, "tokenizer", AutoTokenizer, self._where)

    MODEL_CLASS: str = ""  # the transformers class of the joint model

    def _load_model(self, where: str) -> Any:
        import transformers

        return _load(self.METRIC, "weights", getattr(transformers, self.MODEL_CLASS), where)

    def _embed_batch(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=pixel_values))

    def _text_batch(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return _features(self.model.get_text_features(**inputs))

    def prepare_prompt(self, prompt: str) -> str:
        return prompt

    def text_inputs(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def embed_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        """One unit-length float32 embedding per prompt, ``[n, d]``."""
        chunks = []
        for start in range(0, len(prompts), self.batch_size):
            inputs = {k: v.to(self.device) for k, v in self.text_inputs(prompts[start : start + self.batch_size]).items()}
            chunks.append(torch.nn.functional.normalize(self._text_batch(inputs).float(), dim=-1).cpu())
        return torch.cat(chunks) if chunks else torch.empty(0, 0)

    def _image_text_cosines(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> torch.Tensor:
        self._check_pairs(images, prompts)
        return (self.embed_images(list(images)) * self.embed_texts(list(prompts))).sum(dim=-1)
