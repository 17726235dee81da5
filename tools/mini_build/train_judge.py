"""Train the judge from rendered ground truth: ``python -m tools.mini_build.train_judge [--overwrite]``.

Deterministic (fixed seeds, one CPU thread by default) and about ten minutes on one core. Writes
``judge.safetensors`` and the model card ``judge.json`` (per-attribute held-out accuracy on clean
and degraded renders, training time, date, command) next to `dti.mini.judge` (``--overwrite``
replaces the shipped ones), or to ``--out``; the two files appear together or not at all.

Training scenes are drawn uniformly over classes, colours and backgrounds with appearance features
far more frequent than in base training (each 40%), and without the base-training exclusions: the
judge must read every combination, including the subjects and the held-out ones. Each batch is
degraded (shift, scale, blur, colour jitter, noise) so that the judge keeps reading the weak,
blurry, off-palette images a small diffusion model produces.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tools.mini_build import Parser, check_new, script
from tqdm.auto import tqdm

from dti.core.errors import DTIError
from dti.core.files import atomic_write_all, check_writable
from dti.mini.judge import SCENE_HEADS, SLOT_HEADS, WEIGHTS, Judge, JudgeNet
from dti.mini.render import render
from dti.mini.scene import SLOTS, Scene
from dti.mini.world import SUBJECTS, random_scene, reference_scenes

SEED = 0
JUDGE_RATES = {"mark": 0.4, "tone": 0.4, "outline": 0.4}
HELDOUT_SEED = "judge-heldout"
SLOT_FIELDS = ("occupied", *SLOT_HEADS)


def labels(scene: Scene) -> tuple[torch.Tensor, torch.Tensor]:
    """([5, 7] per-slot labels: occupied then `SLOT_HEADS` indices, -1 where empty; [2] scene labels)."""
    slots = torch.full((len(SLOTS), len(SLOT_FIELDS)), -1, dtype=torch.long)
    slots[:, 0] = 0
    for thing in scene.things:
        app = thing.appearance
        values = {
            "shape": thing.shape,
            "colour": thing.colour,
            "size": thing.size,
            "mark": app.mark,
            "tone": app.tone or "none",
            "outline": app.outline or "none",
        }
        row = [1] + [SLOT_HEADS[k].index(values[k]) for k in SLOT_HEADS]
        slots[SLOTS.index(thing.position)] = torch.tensor(row)
    bg = scene.background
    return slots, torch.tensor([SCENE_HEADS["texture"].index(bg.texture), SCENE_HEADS["background"].index(bg.colour)])


def render_set(scenes: list[Scene], size: int = 32, quiet: bool = True) -> dict[str, torch.Tensor]:
    """Images as uint8 [N, 3, size, size] plus their labels."""
    drawn = [np.asarray(render(s, size)) for s in tqdm(scenes, desc="render", disable=quiet, leave=False)]
    images = np.stack(drawn).transpose(0, 3, 1, 2)
    pairs = [labels(s) for s in scenes]
    slots, scene = (torch.stack(column) for column in zip(*pairs))
    return {"images": torch.from_numpy(images.copy()), "slots": slots, "scene": scene}


def judge_scenes(n: int, seed: int | str) -> list[Scene]:
    rng = random.Random(seed)
    return [random_scene(rng, rates=JUDGE_RATES) for _ in range(n)]


def degrade(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shift (<= 1.5 px) and scale (+-6%), blur (sigma <= 1), colour jitter and noise (sigma <= 0.05)."""
    n = len(x)

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, *shape, generator=generator)

    moved = torch.rand(n, generator=generator) < 0.7
    theta = torch.zeros(n, 2, 3)
    scale = torch.where(moved, uniform(0.94, 1.06), torch.ones(n))
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = uniform(-1.5, 1.5, 2) * (2 / x.shape[-1]) * moved[:, None]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    sigma = torch.where(torch.rand(n, generator=generator) < 0.35, uniform(0.3, 1.0), torch.zeros(n))
    taps = torch.arange(-2, 3, dtype=torch.float32)
    kernel = torch.exp(-(taps[None] ** 2) / (2 * sigma.clamp(min=1e-3)[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(3, 0)  # [n * 3, 5]
    flat = x.reshape(1, n * 3, *x.shape[-2:])
    flat = F.conv2d(F.pad(flat, (2, 2, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=n * 3)
    flat = F.conv2d(F.pad(flat, (0, 0, 2, 2), mode="replicate"), kernel[:, None, :, None], groups=n * 3)
    x = flat.reshape(x.shape)

    gray = x.mean(1, keepdim=True)
    x = gray + uniform(0.8, 1.2, 1, 1, 1) * (x - gray)  # saturation
    mean = x.mean((1, 2, 3), keepdim=True)
    x = mean + uniform(0.85, 1.15, 1, 1, 1) * (x - mean)  # contrast
    x = x * uniform(0.85, 1.15, 1, 1, 1) * uniform(0.92, 1.08, 3, 1, 1)  # brightness, per-channel gain
    x = x + uniform(0.0, 0.05, 1, 1, 1) * torch.randn(x.shape, generator=generator)
    return x.clamp(0, 1)


def loss_fn(logits: dict[str, torch.Tensor], slots: torch.Tensor, scene: torch.Tensor) -> torch.Tensor:
    """BCE on occupancy, cross-entropy on each slot head over occupied slots, and on the scene heads."""
    loss = F.binary_cross_entropy_with_logits(logits["occupied"], slots[..., 0].float())
    for i, name in enumerate(SLOT_HEADS, start=1):
        loss = loss + F.cross_entropy(logits[name].flatten(0, 1), slots[..., i].flatten(), ignore_index=-1)
    for i, name in enumerate(SCENE_HEADS):
        loss = loss + F.cross_entropy(logits[name], scene[:, i])
    return loss


def accuracy(judge: Judge, images: torch.Tensor, slots: torch.Tensor, scene: torch.Tensor, only_size: str | None = None) -> dict:
    """Per-attribute accuracy: occupancy over all slots, object attributes over occupied slots
    (only those of ``only_size`` if given), count and background per image."""
    out = judge.logits(images)
    occupied = slots[..., 0] == 1
    if only_size is None:
        mask = occupied
    else:
        mask = occupied & (slots[..., SLOT_FIELDS.index("size")] == SLOT_HEADS["size"].index(only_size))
    acc = {}
    if only_size is None:
        predicted = out["occupied"] > 0
        acc["occupied"] = (predicted == occupied).float().mean().item()
        acc["count"] = (predicted.sum(1) == occupied.sum(1)).float().mean().item()
    for i, name in enumerate(SLOT_HEADS, start=1):
        acc[name] = (out[name].argmax(-1)[mask] == slots[..., i][mask]).float().mean().item()
    if only_size is None:
        for i, name in enumerate(SCENE_HEADS):
            acc[name] = (out[name].argmax(-1) == scene[:, i]).float().mean().item()
    return {k: round(v, 4) for k, v in acc.items()}


def train(net: JudgeNet, data: dict[str, torch.Tensor], epochs: int, batch_size: int, seed: int, quiet: bool = False) -> None:
    """AdamW with a one-cycle schedule over degraded batches; a progress bar shows the loss."""
    generator = torch.Generator().manual_seed(seed)
    per_epoch = len(data["images"]) // batch_size
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=epochs * per_epoch, pct_start=0.15)
    net.train()
    bar = tqdm(total=epochs * per_epoch, desc="judge", disable=quiet)
    for epoch in range(epochs):
        order = torch.randperm(len(data["images"]), generator=generator)
        for b in range(per_epoch):
            idx = order[b * batch_size : (b + 1) * batch_size]
            x = degrade(data["images"][idx].float() / 255, generator).contiguous(memory_format=torch.channels_last)
            loss = loss_fn(net(x), data["slots"][idx], data["scene"][idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            bar.update()
            if bar.n % 100 == 0:
                bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{loss.item():.4f}")
    bar.close()
    net.eval()


def parser() -> argparse.ArgumentParser:
    p = Parser(__doc__, prog="python -m tools.mini_build.train_judge")
    p.add_argument("--out", type=Path, default=WEIGHTS.parent, help="folder for judge.safetensors and judge.json (default: the package's)")
    p.add_argument("--overwrite", action="store_true", help="replace the judge already in --out (the default --out holds the shipped one)")
    p.add_argument("--scenes", type=int, default=36000, help="distinct training renders")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--heldout", type=int, default=2000, help="held-out renders for the reported accuracy")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def run(args: argparse.Namespace, argv: list[str] | None = None) -> dict:
    """Train, measure what was written, and write the weights and the card together; returns the card."""
    for name, value in (("--scenes", args.scenes), ("--epochs", args.epochs), ("--heldout", args.heldout), ("--threads", args.threads)):
        if value < 1:
            raise DTIError(f"{name} {value} must be at least 1")
    if not 1 <= args.batch_size <= args.scenes:
        raise DTIError(f"--batch-size {args.batch_size} must be between 1 and --scenes {args.scenes}")
    weights, card_path = args.out / WEIGHTS.name, args.out / "judge.json"
    check_writable(args.out, "--out")
    check_new([weights, card_path], args.overwrite)
    deterministic = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    try:
        return _train_and_write(args, weights, card_path, argv)
    finally:  # a caller in the same process (a test) gets its settings back
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


def _train_and_write(args: argparse.Namespace, weights: Path, card_path: Path, argv: list[str] | None) -> dict:
    torch.manual_seed(args.seed)
    start = time.time()
    data = render_set(judge_scenes(args.scenes, f"judge-train-{args.seed}"), quiet=args.quiet)
    heldout = render_set(judge_scenes(args.heldout, HELDOUT_SEED), quiet=args.quiet)
    render_seconds = time.time() - start

    net = JudgeNet().to(memory_format=torch.channels_last)  # about 20% faster convolutions on CPU
    train(net, data, args.epochs, args.batch_size, args.seed, quiet=args.quiet)
    train_seconds = time.time() - start - render_seconds

    with tempfile.TemporaryDirectory() as scratch:
        saved = Path(scratch) / WEIGHTS.name
        Judge(net).save(saved)
        judge = Judge.load(saved)  # measure what is written (float16)
        clean = heldout["images"].float() / 255
        degraded = degrade(clean, torch.Generator().manual_seed(12345))
        subjects = render_set([s for subject in SUBJECTS for s in reference_scenes(subject, 10, seed=1000)])
        card = {
            "command": "python -m tools.mini_build.train_judge " + " ".join(sys.argv[1:] if argv is None else argv),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "threads": args.threads,
            "seed": args.seed,
            "train_scenes": args.scenes,
            "epochs": args.epochs,
            "parameters": sum(p.numel() for p in net.parameters()),
            "render_seconds": round(render_seconds, 1),
            "train_seconds": round(train_seconds, 1),
            "heldout_scenes": args.heldout,
            "heldout_seed": HELDOUT_SEED,
            "accuracy": accuracy(judge, clean, heldout["slots"], heldout["scene"]),
            "accuracy_large_objects": accuracy(judge, clean, heldout["slots"], heldout["scene"], only_size="large"),
            "accuracy_small_objects": accuracy(judge, clean, heldout["slots"], heldout["scene"], only_size="small"),
            "accuracy_degraded": accuracy(judge, degraded, heldout["slots"], heldout["scene"]),
            "accuracy_subject_references": accuracy(judge, subjects["images"].float() / 255, subjects["slots"], subjects["scene"]),
        }
        text = json.dumps(card, indent=2) + "\n"
        # the weights and their card appear together, or neither does
        atomic_write_all([(weights, lambda tmp: shutil.copyfile(saved, tmp)), (card_path, lambda tmp: Path(tmp).write_text(text))])
    for key in ("accuracy", "accuracy_large_objects", "accuracy_small_objects", "accuracy_degraded", "accuracy_subject_references"):
        print(key, json.dumps(card[key]))
    print(f"training {train_seconds:.0f}s, rendering {render_seconds:.0f}s; wrote {weights} and {card_path}")
    return card


def main(argv: list[str] | None = None) -> int:
    """The command line: 0 when done, 2 with one ``error:`` line for bad input."""
    return script(parser(), argv, lambda args: run(args, argv))


if __name__ == "__main__":
    sys.exit(main())
