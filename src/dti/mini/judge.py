"""The judge: a small CNN that reads a toy-world image back into attributes, for exact-ish evaluation.

One network looks at the whole 32 x 32 image and answers, for each of the five slots: is it
occupied, and by which shape, colour, size and appearance (mark, tone, outline); plus the
background's texture and colour. From that:

* `Judge.text_fidelity` scores an image against a prompt's spec (`dti.mini.text.fidelity` on the
  predicted scene): the fraction of requested attributes the image shows.
* `Judge.embed` / `Judge.subject_similarity` play the role DINO plays in papers. An object's
  embedding is the concatenation of the square roots of its five identity distributions (shape,
  colour, mark, tone, outline), divided by sqrt(5): a unit vector whose cosine with another is the
  mean Bhattacharyya overlap of the two objects' factors. 1.0 is the same instance, 0.8 one factor
  off, a plain object of the subject's class and colour typically 0.4-0.6. Interpretable, position-,
  size- and background-invariant by construction (the heads are trained to ignore those), and
  graded where the network is unsure (a blurred mark gives partial credit).

Images may be PIL images or float tensors in [0, 1] shaped [N, 3, H, W]; other sizes are resized
to 32. Weights ship in ``judge.safetensors`` next to this file (trained by `tools.mini_build.train_judge`,
numbers in ``judge.json``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dti.mini.scene import BG_COLOURS, COLOURS, MARKS, SHAPES, SIZES, SLOTS, TEXTURES
from dti.mini.text import fidelity, parse_caption

INPUT_SIZE = 32
WEIGHTS = Path(__file__).with_name("judge.safetensors")
TONES = ("none", *COLOURS)  # tone and outline: absent, or one of the object colours
SLOT_HEADS: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "size": SIZES,
    "mark": MARKS,
    "tone": TONES,
    "outline": TONES,
}
IDENTITY = ("shape", "colour", "mark", "tone", "outline")  # the factors that define an instance
SCENE_HEADS: dict[str, tuple[str, ...]] = {"texture": TEXTURES, "background": tuple(BG_COLOURS)}

ImageBatch = torch.Tensor | Sequence[Image.Image]


class JudgeNet(nn.Module):
    """Conv trunk over the full image, then dense heads: per slot (occupied + `SLOT_HEADS`) and `SCENE_HEADS`.

    A dense layer over the 4 x 4 feature map (not a global pool) keeps where things are, which
    the per-slot heads need.
    """

    def __init__(self, channels: tuple[int, int, int] = (32, 64, 128), hidden: int = 256) -> None:
        super().__init__()
        self.channels, self.hidden = tuple(channels), hidden
        layers: list[nn.Module] = []
        prev = 3
        for width in channels:
            for _ in range(2):
                layers += [nn.Conv2d(prev, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                prev = width
            layers.append(nn.MaxPool2d(2))
        self.trunk = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(prev * (INPUT_SIZE // 8) ** 2, hidden), nn.ReLU(inplace=True))
        self.per_slot = 1 + sum(len(v) for v in SLOT_HEADS.values())
        self.out = nn.Linear(hidden, len(SLOTS) * self.per_slot + sum(len(v) for v in SCENE_HEADS.values()))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x``: [N, 3, 32, 32] in [0, 1]. Returns logits: ``occupied`` [N, 5], each slot head [N, 5, K], each scene head [N, K]."""
        flat = self.out(self.fc(self.trunk((x - 0.5) / 0.25)))
        slots = flat[:, : len(SLOTS) * self.per_slot].reshape(len(x), len(SLOTS), self.per_slot)
        logits = {"occupied": slots[..., 0]}
        start = 1
        for name, classes in SLOT_HEADS.items():
            logits[name] = slots[..., start : start + len(classes)]
            start += len(classes)
        start = len(SLOTS) * self.per_slot
        for name, classes in SCENE_HEADS.items():
            logits[name] = flat[:, start : start + len(classes)]
            start += len(classes)
        return logits


def to_tensor(images: ImageBatch) -> torch.Tensor:
    """PIL images or a [N, 3, H, W] tensor in [0, 1] -> [N, 3, 32, 32] float tensor."""
    if not isinstance(images, torch.Tensor):
        images = torch.from_numpy(np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images])).permute(0, 3, 1, 2)
    x = images.float()
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        if x.shape[-1] > INPUT_SIZE:  # the world's own downsampling is a box filter; area matches it
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="area")
        else:
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return x.clamp(0, 1)


class Judge:
    """Scores toy-world images: attributes, prompt fidelity and subject similarity."""

    def __init__(self, net: JudgeNet, card: dict | None = None) -> None:
        self.net = net.eval().to(memory_format=torch.channels_last)
        self.card = card or {}

    @classmethod
    def load(cls, path: str | Path | None = None) -> Judge:
        """Load weights (default: the committed ``judge.safetensors``) and the model card beside them."""
        from safetensors.torch import load_file, safe_open

        path = Path(path) if path is not None else WEIGHTS
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        net = JudgeNet(tuple(json.loads(meta.get("channels", "[32, 64, 128]"))), int(meta.get("hidden", 256)))
        net.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
        card_path = path.with_suffix(".json")
        return cls(net, json.loads(card_path.read_text()) if card_path.is_file() else None)

    def save(self, path: str | Path) -> None:
        """Write the weights as float16 safetensors (about half the size; accuracy is measured after the cast)."""
        from safetensors.torch import save_file

        state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, str(path), metadata={"channels": json.dumps(list(self.net.channels)), "hidden": str(self.net.hidden)})

    @torch.no_grad()
    def logits(self, images: ImageBatch, batch_size: int = 256) -> dict[str, torch.Tensor]:
        x = to_tensor(images).contiguous(memory_format=torch.channels_last)
        parts = [self.net(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def predict(self, images: ImageBatch) -> list[dict]:
        """Per image, a full spec (see `dti.mini.text`) of what it shows, plus each object's
        ``appearance`` (mark / tone / outline names), its ``confidence`` (occupancy probability) and ``count``."""
        out = self.logits(images)
        occupied = torch.sigmoid(out["occupied"])
        picks = {k: out[k].argmax(-1) for k in (*SLOT_HEADS, *SCENE_HEADS)}
        results = []
        for i in range(len(occupied)):
            objects = []
            for j, slot in enumerate(SLOTS):
                if occupied[i, j] <= 0.5:
                    continue
                name = {k: SLOT_HEADS[k][int(picks[k][i, j])] for k in SLOT_HEADS}
                objects.append(
                    {
                        "shape": name["shape"],
                        "token": None,
                        "colour": name["colour"],
                        "size": name["size"],
                        "position": slot,
                        "appearance": {k: name[k] for k in ("mark", "tone", "outline")},
                        "confidence": float(occupied[i, j]),
                    }
                )
            scene = {k: SCENE_HEADS[k][int(picks[k][i])] for k in SCENE_HEADS}
            results.append({"objects": objects, **scene, "relation": None, "count": len(objects)})
        return results

    def text_fidelity(self, images: ImageBatch, required: str | dict | Sequence[str | dict]) -> list[float]:
        """Fraction of the prompt's attributes each image satisfies. ``required``: one caption/spec for all
        images or one per image. Placeholder objects are scored on presence, position, size and colour only."""
        specs = [required] if isinstance(required, (str, dict)) else list(required)
        specs = [parse_caption(s) if isinstance(s, str) else s for s in specs]
        predictions = self.predict(images)
        if len(specs) == 1:
            specs = specs * len(predictions)
        if len(specs) != len(predictions):
            raise ValueError(f"{len(specs)} specs for {len(predictions)} images")
        return [fidelity(s, p) for s, p in zip(specs, predictions)]

    def slot_embeddings(self, images: ImageBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """([N, 5, D] unit identity embeddings per slot, [N, 5] occupancy probabilities)."""
        out = self.logits(images)
        parts = [out[k].softmax(-1).sqrt() for k in IDENTITY]
        return torch.cat(parts, dim=-1) / math.sqrt(len(IDENTITY)), torch.sigmoid(out["occupied"])

    def embed(self, images: ImageBatch) -> torch.Tensor:
        """[N, D] unit embedding of each image's most confidently present object."""
        emb, occupied = self.slot_embeddings(images)
        return emb[torch.arange(len(emb)), occupied.argmax(-1)]

    def subject_similarity(self, images: ImageBatch, references: ImageBatch) -> list[float]:
        """Mean cosine between each image's best-matching present object and the references' embeddings.

        Every present object (occupancy > 0.5; the likeliest one if none is) is compared, and the
        best counts, so a subject placed among other objects is still found."""
        target = self.embed(references).mean(0)
        emb, occupied = self.slot_embeddings(images)
        present = (occupied > 0.5) | (occupied == occupied.max(-1, keepdim=True).values)
        scores = (emb @ target).masked_fill(~present, -1.0)
        return scores.max(-1).values.tolist()
