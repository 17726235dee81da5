"""Train dti-mini from scratch on the rendered world, with checkpoints and resume.

    python -m tools.mini_build.train_base --out runs/mini-base                      # VAE, then UNet + text encoder
    python -m tools.mini_build.train_base --out runs/mini-base --resume --steps 20000  # continue a run
    python -m tools.mini_build.train_base --out runs/mini-base --export src/dti/mini/dti-mini --overwrite
    python -m tools.mini_build.train_base --out runs/more --init-from src/dti/mini/dti-mini --steps 30000 --export ...
                                                       # go on from the shipped model (e.g. on a GPU)

Stage 1 fits the AutoencoderKL to renders (L1 + small KL). Stage 2 freezes it and trains the
text encoder and UNet jointly on (render, caption) pairs drawn fresh every step: v-prediction,
cosine noise schedule, min-SNR loss weighting (``--weighting uniform`` keeps full weight on the
noisiest steps; ``--high-noise`` draws more of them), 10% empty captions (for classifier-free
guidance), AdamW with warm-up and cosine decay, and an EMA of the weights, which is what ships.
Batch k is a function of (seed, k) alone, so ``--workers`` can render ahead (on a GPU) and a
resumed run sees the same data; checkpoints hold the rest (weights, EMA, optimizer, RNG, step).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import random
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tools.mini_build import Parser, script
from tools.mini_build.card import write_card
from tqdm.auto import tqdm

from dti.core.errors import DTIError, warn
from dti.core.files import check_writable, write_json
from dti.mini import world
from dti.mini.model import MiniConfig, assemble, build_scheduler, build_text_encoder, build_tokenizer, build_unet, build_vae
from dti.mini.scene import SHAPES
from dti.training.checkpoints import read_state as load_checkpoint
from dti.training.checkpoints import write_state as save_checkpoint
from dti.training.run_folder import read_log

CAPTION_DROPOUT = 0.1
#: What dti should use with this model (``dti.json``): prompts in the world's vocabulary.
MODEL_HINTS = {
    "templates": ["a {}"],
    "validation_prompts": ["a {}", "a {} on the left on a striped teal background"],
    "class_words": list(SHAPES),  # what `dti train --init` suggests when a word is not one of the model's
}
MIN_SNR_GAMMA = 5.0
LOG = "train_base_log.jsonl"
HIGH_NOISE_FROM = 800


def to_pixels(images) -> torch.Tensor:
    array = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 127.5 - 1.0
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def batch(rng: random.Random, size: int, image_size: int, dropout: float = 0.0) -> tuple[torch.Tensor, list[str]]:
    """Fresh training pairs; a dropped caption becomes the empty prompt."""
    pairs = [world.sample_caption(rng) for _ in range(size)]
    images = [world.render(scene, image_size) for scene, _ in pairs]
    captions = ["" if rng.random() < dropout else text for _, text in pairs]
    return to_pixels(images), captions


def step_batch(seed: int | str, step: int, size: int, image_size: int, dropout: float = 0.0) -> tuple[torch.Tensor, list[str]]:
    """Batch ``step`` of a run: a pure function of (seed, step), so any worker can draw it and a
    resumed run draws exactly the batches an uninterrupted one would have."""
    return batch(random.Random(f"{seed}-{step}"), size, image_size, dropout)


class StepBatches(torch.utils.data.Dataset):
    """Batches ``first`` .. ``last - 1`` of a run, for a DataLoader whose workers render ahead of the model."""

    def __init__(self, seed: int | str, first: int, last: int, size: int, image_size: int, dropout: float) -> None:
        self.seed, self.first, self.last, self.size, self.image_size, self.dropout = seed, first, last, size, image_size, dropout

    def __len__(self) -> int:
        return max(0, self.last - self.first)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, list[str]]:
        return step_batch(self.seed, self.first + i, self.size, self.image_size, self.dropout)


def batches(seed: int | str, first: int, last: int, size: int, image_size: int, dropout: float, workers: int):
    """The batches of steps ``first`` .. ``last - 1`` in order; ``workers`` > 0 renders them in
    background processes (what keeps a GPU busy; the CPU path renders inline)."""
    loader = torch.utils.data.DataLoader(
        StepBatches(seed, first, last, size, image_size, dropout),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
    )
    return iter(loader)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def loss_weight(alpha_bar: torch.Tensor, prediction_type: str, weighting: str) -> torch.Tensor:
    """Per-sample weight of the prediction MSE.

    ``"uniform"``: the plain MSE of the prediction (for v: (1 + SNR) x the x0 error), which keeps
    real weight on the noisiest steps, where the layout a caption asks for (positions) is decided.
    ``"min-snr"``: Min-SNR-5 (x0 error weighted by min(SNR, 5)); it starves those steps (weight ~SNR
    -> 0). (Why the step-7000 dti-mini ignored position words was the text embeddings' init, see
    ``MiniConfig.text_embed_init_std``, not this weighting.)
    """
    if weighting == "uniform":
        return torch.ones_like(alpha_bar)
    snr = alpha_bar / (1 - alpha_bar)
    return torch.clamp(snr, max=MIN_SNR_GAMMA) / (snr + 1 if prediction_type == "v_prediction" else snr)


def sample_timesteps(n: int, high_noise: float, device: torch.device) -> torch.Tensor:
    """Uniform training timesteps, except that a ``high_noise`` share of the batch comes from the
    noisiest fifth (t >= 800), where a caption's layout is decided (weights unchanged)."""
    t = torch.randint(0, 1000, (n,), device=device)
    k = round(n * high_noise)
    if k:
        t[:k] = torch.randint(HIGH_NOISE_FROM, 1000, (k,), device=device)
    return t


def rng_state() -> dict[str, Any]:
    """What a checkpoint must hold to resume the noise draws exactly (the data is a function of the step)."""
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------ stage 1: VAE
def train_vae(args: argparse.Namespace, config: MiniConfig, out: Path) -> torch.nn.Module:
    path = out / "vae.pt"
    device = torch.device(args.device)
    vae = build_vae(config).to(device)
    step, state = 0, {}
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    if path.exists():
        state = load_checkpoint(path)
        vae.load_state_dict(state["model"])
        if state["optimizer"] is not None:
            opt.load_state_dict(state["optimizer"])
        step = state["step"]
        set_rng_state(state["rng"])
    if step >= args.vae_steps or state.get("finished"):
        return vae.eval()
    vae.train()
    bar = tqdm(range(step, args.vae_steps), desc="vae", initial=step, total=args.vae_steps, disable=args.quiet)
    data = batches(f"vae-{args.seed}", step, args.vae_steps, args.vae_batch, config.image_size, 0.0, args.workers)
    for step in bar:
        pixels = next(data)[0].to(device)
        dist = vae.encode(pixels).latent_dist
        recon = vae.decode(dist.sample()).sample
        rec = F.l1_loss(recon, pixels) + F.mse_loss(recon, pixels)
        kl = dist.kl().mean() / pixels[0].numel()
        loss = rec + args.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(rec=f"{rec.item():.4f}", kl=f"{kl.item():.2f}")
        if (step + 1) % args.checkpoint_every == 0 or step + 1 == args.vae_steps:
            save_checkpoint(path, {"model": vae.state_dict(), "optimizer": opt.state_dict(), "step": step + 1, "rng": rng_state()})
            _log(out, {"stage": "vae", "step": step + 1, "rec": rec.item(), "kl": kl.item()})
    return vae.eval()


@torch.no_grad()
def latent_scale(vae: torch.nn.Module, config: MiniConfig, seed: int) -> float:
    """1 / std of the latents, so the diffusion model sees unit-variance inputs (SD's scaling_factor)."""
    pixels, _ = batch(random.Random(seed + 1), 256, config.image_size)
    return float(1.0 / vae.encode(pixels.to(vae.device)).latent_dist.mean.std())


# ------------------------------------------------------------------ stage 2: text encoder + UNet
class Diffusion(torch.nn.Module):
    """The trainable pair, so one optimizer, one EMA and one state dict cover both."""

    def __init__(self, text_encoder: torch.nn.Module, unet: torch.nn.Module) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.unet = unet


def encode(model: Diffusion, tokenizer, captions: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Exactly the SDXL pipeline's conditioning: penultimate hidden states + projected pooled output."""
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")
    out = model.text_encoder(ids.input_ids.to(device), output_hidden_states=True)
    return out.hidden_states[-2], out.text_embeds


def train_diffusion(args: argparse.Namespace, config: MiniConfig, vae: torch.nn.Module, out: Path) -> dict[str, Any]:
    from diffusers import DDPMScheduler

    device = torch.device(args.device)
    path = out / "diffusion.pt"
    tokenizer = build_tokenizer(config)
    torch.manual_seed(args.seed)
    model = Diffusion(build_text_encoder(config, tokenizer), build_unet(config)).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    vae = vae.to(device).requires_grad_(False)
    scale = latent_scale(vae, config, args.seed)
    noise = DDPMScheduler(num_train_timesteps=1000, beta_schedule=config.beta_schedule, prediction_type=config.prediction_type)
    alphas = noise.alphas_cumprod.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    step, seconds = 0, 0.0
    if path.exists():
        state = load_checkpoint(path)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        if state["optimizer"] is not None:  # None after a warm start
            opt.load_state_dict(state["optimizer"])
        step, seconds, scale = state["step"], state.get("seconds", 0.0), state["scale"]
        set_rng_state(state["rng"])
    if step >= args.steps:
        warn(f"{path} is already at step {step}, not below --steps {args.steps}; nothing to train (raise --steps to go on)")
    time_ids = torch.tensor([[config.image_size, config.image_size, 0, 0, config.image_size, config.image_size]], dtype=torch.float32)
    model.train()
    bar = tqdm(range(step, args.steps), desc="unet", initial=step, total=args.steps, disable=args.quiet)
    last = time.perf_counter()
    data = batches(args.seed, step, args.steps, args.batch, config.image_size, CAPTION_DROPOUT, args.workers)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        pixels, captions = next(data)
        with torch.no_grad():
            x0 = vae.encode(pixels.to(device)).latent_dist.sample() * scale
        eps = torch.randn_like(x0)
        t = sample_timesteps(x0.shape[0], args.high_noise, device)
        noisy = noise.add_noise(x0, eps, t)
        target = noise.get_velocity(x0, eps, t) if config.prediction_type == "v_prediction" else eps
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):  # fp32 on a CPU
            hidden, pooled = encode(model, tokenizer, captions, device)
            added = {"text_embeds": pooled, "time_ids": time_ids.to(device).expand(x0.shape[0], -1)}
            pred = model.unet(noisy, t, hidden, added_cond_kwargs=added).sample
        weight = loss_weight(alphas[t], config.prediction_type, args.weighting)
        loss = (weight * F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        now = time.perf_counter()
        seconds += now - last
        last = now
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % args.checkpoint_every == 0 or step + 1 == args.steps:
            save_checkpoint(
                path,
                {
                    "model": model.state_dict(),
                    "ema": ema.state_dict(),
                    "optimizer": opt.state_dict(),
                    "step": step + 1,
                    "seconds": seconds,
                    "scale": scale,
                    "rng": rng_state(),
                    "config": config.as_dict(),
                },
            )
            _log(out, {"stage": "unet", "step": step + 1, "loss": loss.item(), "lr": opt.param_groups[0]["lr"], "seconds": seconds})
    return {"ema": ema, "tokenizer": tokenizer, "scale": scale, "step": args.steps, "seconds": seconds}


def _log(out: Path, record: dict[str, Any]) -> None:
    """One record appended to the run's log (as ``dti.training.run_folder.RunFolder.append_log`` does)."""
    with open(out / LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


# ------------------------------------------------------------------ warm start
def exported(source: Path, config: MiniConfig) -> tuple[dict[str, Any], Any]:
    """An exported dti-mini's facts (``dti_mini.json``) and pipeline; refused in one line if its
    architecture differs from this run's."""
    from dti.mini.model import load_pipeline

    info = json.loads((source / "dti_mini.json").read_text())
    if MiniConfig.from_dict(info["config"]).architecture() != config.architecture():
        raise DTIError(f"{source} was built with another MiniConfig; it cannot seed this run, start it without --init-from / --vae-from")
    return info, load_pipeline(source)


def seed_vae(out: Path, info: dict[str, Any], pipe: Any, config: MiniConfig) -> None:
    """Take an exported dti-mini's VAE as this run's, finished and frozen (``--vae-from``): a new
    text encoder and UNet can then be trained without refitting the autoencoder."""
    vae = build_vae(config)
    vae.load_state_dict({k: v.float() for k, v in pipe.vae.state_dict().items()})
    vae_state = {"model": vae.state_dict(), "optimizer": None, "step": info["training"]["vae_steps"], "rng": rng_state()}
    save_checkpoint(out / "vae.pt", {**vae_state, "finished": True})


def warm_start(out: Path, source: Path, info: dict[str, Any], pipe: Any, config: MiniConfig) -> int:
    """Seed a fresh run folder with an exported dti-mini's weights, so training can go on where the
    shipped model stopped (the checkpoints of that run are not shipped: they hold optimizer state).

    Writes ``vae.pt`` (marked finished: the UNet was trained on this latent space) and
    ``diffusion.pt`` at the exported step, with the weights as both model and EMA, in fp32; the
    optimizer starts fresh. Returns the step."""
    seed_vae(out, info, pipe, config)
    tokenizer = build_tokenizer(config)
    model = Diffusion(build_text_encoder(config, tokenizer), build_unet(config))
    model.text_encoder.load_state_dict({k: v.float() for k, v in pipe.text_encoder_2.state_dict().items()})
    model.unet.load_state_dict({k: v.float() for k, v in pipe.unet.state_dict().items()})
    weights = model.state_dict()
    save_checkpoint(
        out / "diffusion.pt",
        {
            "model": weights,
            "ema": weights,
            "optimizer": None,
            "step": info["steps"],
            "seconds": info["train_seconds"],
            "scale": float(pipe.vae.config.scaling_factor),
            "rng": rng_state(),
            "config": config.as_dict(),
        },
    )
    _log(out, {"stage": "warm_start", "step": info["steps"], "source": str(source)})
    return info["steps"]


# ------------------------------------------------------------------ export
def check_export(target: Path, overwrite: bool) -> None:
    """Refuse, before any training, an ``--export`` that would replace something unasked: a
    non-empty folder needs ``--overwrite``, and even then only an earlier export is replaced."""
    if target.exists() and not target.is_dir():
        raise DTIError(f"--export {target} is a file; choose a folder path")
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise DTIError(f"--export {target} is not empty; pass --overwrite to replace the dti-mini there or choose another folder")
        if not (target / "dti_mini.json").is_file():
            raise DTIError(
                f"--export {target} is no dti-mini export (no dti_mini.json); --overwrite replaces only an export, choose another folder"
            )
    check_writable(target.parent, "--export")


def _swap_in(staging: Path, target: Path) -> None:
    """Put a finished export in place of ``target`` (an earlier export, or nothing): the old folder
    moves aside, the new one moves in, and only then is the old one removed; a failed move puts it back."""
    old = target.parent / f".{target.name}.old"
    if old.exists():
        shutil.rmtree(old)  # left by an export that failed after its move aside; the target itself is whole
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except OSError:
        if old.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def export(out: Path, target: Path, config: MiniConfig) -> Path:
    """The EMA weights as a diffusers pipeline folder in fp16, with a model card.

    Written into a staging folder beside ``target`` and swapped in whole when it is complete, so a
    failed export leaves the earlier one as it was. An earlier export's reports (``quality.json``,
    ``probe.json``, the sample grid) go with it: they describe the old weights."""
    for name in ("diffusion.pt", "vae.pt"):
        if not (out / name).is_file():
            raise DTIError(f"{out} holds no {name} to export; train first, or pass the --out of a train_base run")
    staging = target.parent / f".{target.name}.export"
    if staging.exists():
        shutil.rmtree(staging)  # ours, left by a failed export
    try:
        _write_export(out, staging, config)
        _swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _write_export(out: Path, target: Path, config: MiniConfig) -> None:
    state = load_checkpoint(out / "diffusion.pt")
    vae_state = load_checkpoint(out / "vae.pt")
    vae = build_vae(config)
    vae.load_state_dict(vae_state["model"])
    vae.register_to_config(scaling_factor=state["scale"])
    tokenizer = build_tokenizer(config)
    model = Diffusion(build_text_encoder(config, tokenizer), build_unet(config))
    model.load_state_dict(state["ema"])
    pipe = assemble(vae, model.text_encoder, tokenizer, model.unet, build_scheduler(config))
    pipe.to(torch.float16)
    target.mkdir(parents=True)
    pipe.save_pretrained(target)
    write_json(target / "dti.json", MODEL_HINTS)
    run = json.loads((out / "train_base_config.json").read_text()) if (out / "train_base_config.json").is_file() else {}
    training = {k: run.get(k) for k in ("batch", "lr", "ema", "seed", "threads")}
    training["vae_steps"] = vae_state["step"]  # also right when the VAE came --vae-from
    training["weighting"] = run.get("weighting", "min-snr")  # runs from before the option used Min-SNR
    training["high_noise"] = run.get("high_noise", 0.0)
    training["data"] = "per-step" if "workers" in run else "sequential"  # batch k from (seed, k), or one running stream
    training["hardware"] = f"{run.get('machine', '?')}, {run.get('threads', '?')} CPU thread(s), torch {run.get('torch', '?')}"
    log = read_log(out / LOG) if (out / LOG).is_file() else []
    training["vae_from"] = next((r["source"] for r in log if r.get("stage") == "vae_from"), None)  # survives --resume
    training["lr_by_step"] = {r["step"]: round(r["lr"], 6) for r in log if r.get("stage") == "unet" and r["step"] % 1000 == 0}
    write_json(
        target / "dti_mini.json",
        {
            "config": config.as_dict(),
            "steps": state["step"],
            "train_seconds": round(state["seconds"], 1),
            "latent_scale": state["scale"],
            "training": training,
            "vocabulary_words": len(world.vocabulary()),
        },
    )
    write_card(target)


# ------------------------------------------------------------------ command line
def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value

    return parse


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not a share between 0 and 1")
    return value


def parser() -> argparse.ArgumentParser:
    p = Parser(__doc__, prog="python -m tools.mini_build.train_base")
    p.add_argument("--out", required=True, help="run folder (checkpoints, log)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    p.add_argument("--export", default=None, help="write the EMA pipeline (fp16) to this folder after training")
    p.add_argument("--overwrite", action="store_true", help="let --export replace an earlier export in that folder (and its reports)")
    p.add_argument("--export-only", action="store_true", help="only export the checkpoints already in --out")
    p.add_argument(
        "--init-from",
        default=None,
        help="start a new run from an exported dti-mini folder (e.g. the shipped src/dti/mini/dti-mini) and train on "
        "to --steps; the optimizer starts fresh",
    )
    p.add_argument(
        "--vae-from",
        default=None,
        help="start a new run whose text encoder and UNet train from scratch on the VAE of an exported dti-mini folder",
    )
    p.add_argument("--vae-steps", type=_at_least(1), default=1500)
    p.add_argument("--vae-batch", type=_at_least(1), default=32)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-kl", type=float, default=1e-4)
    p.add_argument("--steps", type=_at_least(1), default=12000)
    p.add_argument("--batch", type=_at_least(1), default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=_at_least(1), default=300)
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--weighting", choices=("min-snr", "uniform"), default="min-snr", help="loss weight over noise levels")
    p.add_argument("--high-noise", type=_share, default=0.0, help="share of each batch drawn from t >= 800 (0: uniform)")
    p.add_argument("--checkpoint-every", type=_at_least(1), default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=_at_least(0), default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--workers", type=_at_least(0), default=0, help="processes that render batches ahead (0: inline; use several on a GPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def check_args(args: argparse.Namespace, out: Path) -> None:
    """Every refusal, in one line each, before anything is written or trained."""
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise DTIError(f"--device {args.device}: no CUDA device here; pass --device cpu")
    if args.export:
        check_export(Path(args.export), args.overwrite)
    elif args.export_only:
        raise DTIError("--export-only needs --export FOLDER, the folder to write the pipeline to")
    if args.export_only:
        return
    check_writable(out, "--out")
    for flag, source in (("--init-from", args.init_from), ("--vae-from", args.vae_from)):
        if source and args.resume:
            raise DTIError(f"{flag} starts a new run; it cannot be combined with --resume")
        if source and not (Path(source) / "dti_mini.json").is_file():
            raise DTIError(f"{flag} {source}: no dti_mini.json there; pass an exported dti-mini folder")
    if args.init_from and args.vae_from:
        raise DTIError("--init-from already takes the VAE; drop --vae-from")
    if any(out.glob("*.pt")) and not args.resume:
        raise DTIError(f"{out} already holds checkpoints; pass --resume to continue or choose another --out")
    if args.resume and not any(out.glob("*.pt")):
        raise DTIError(f"--resume: {out} holds no checkpoints (vae.pt, diffusion.pt); drop --resume to start a new run there")


def run(args: argparse.Namespace) -> Path | None:
    """Train (unless ``--export-only``) and export (with ``--export``); returns the export folder."""
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    config = MiniConfig()
    check_args(args, out)
    if not args.export_only:
        source = args.init_from or args.vae_from
        seed = exported(Path(source), config) if source else None  # checked before anything is written
        out.mkdir(parents=True, exist_ok=True)
        if args.init_from:
            warm_start(out, Path(args.init_from), *seed, config)
        elif args.vae_from:
            seed_vae(out, *seed, config)
            _log(out, {"stage": "vae_from", "source": args.vae_from})
        write_json(
            out / "train_base_config.json",
            {
                **vars(args),
                "config": config.as_dict(),
                "machine": platform.platform(),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            },
        )
        vae = train_vae(args, config, out)
        train_diffusion(args, config, vae, out)
    if not args.export:
        return None
    target = export(out, Path(args.export), config)
    print(f"exported to {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    """The command line: 0 when done, 2 with one ``error:`` line for bad input."""
    return script(parser(), argv, run)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
