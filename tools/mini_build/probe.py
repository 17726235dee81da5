"""Which kinds of words does a dti-mini model listen to? A direct test, independent of any sampler.

    python -m tools.mini_build.probe [--model PATH] [--checkpoint RUN/diffusion.pt [--weights model|ema]] [--out probe.json [--overwrite]]

For single-object scenes, the model's denoising loss (its training objective) is measured with the
true caption and with the same caption in which one word is swapped for a wrong one (``left`` ->
``right``, ``red`` -> ``orange``, ...), at the same noise, at a few noise levels. A model that uses
a word predicts worse when the word lies: the relative loss increase is that word's *use*. A use of
about zero means the model ignores the word, whatever else it renders well; it showed that the
step-7000 dti-mini ignored position words entirely (so positions came out at chance) while it used
colours and shapes. Seconds on a CPU, so it can watch a training run through its checkpoints.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tools.mini_build import Parser, check_new, pipeline_folder, script
from tools.mini_build.card import refresh_card
from tqdm.auto import tqdm

from dti.core.errors import DTIError
from dti.core.files import check_writable, write_json
from dti.mini import world
from dti.mini.scene import BG_COLOURS, COLOURS, SHAPES, SIZES, TEXTURES, Background, Scene
from dti.training.checkpoints import read_state

#: Each probed kind of word and its wrong-word rule: a different value of the same attribute.
SWAPS: dict[str, dict[str, str]] = {
    "position": {"left": "right", "right": "left", "top": "bottom", "bottom": "top", "center": "left"},
    "colour": {c: list(COLOURS)[(i + 1) % len(COLOURS)] for i, c in enumerate(COLOURS)},
    "shape": {s: SHAPES[(i + 1) % len(SHAPES)] for i, s in enumerate(SHAPES)},
    "size": {SIZES[0]: SIZES[1], SIZES[1]: SIZES[0]},
    "texture": {t: TEXTURES[(i + 1) % len(TEXTURES)] for i, t in enumerate(TEXTURES)},
    "background": {c: list(BG_COLOURS)[(i + 1) % len(BG_COLOURS)] for i, c in enumerate(BG_COLOURS)},
}
TIMESTEPS = (950, 800, 500)
PLAIN = {"mark": 0.0, "tone": 0.0, "outline": 0.0}


def swapped(scene: Scene, kind: str) -> Scene:
    """The scene with one attribute of its single object (or of its background) changed by ``SWAPS``."""
    if kind not in SWAPS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {tuple(SWAPS)}")
    (thing,) = scene.things
    rule = SWAPS[kind]
    if kind == "texture":
        return Scene(scene.things, Background(rule[scene.background.texture], scene.background.colour))
    if kind == "background":
        return Scene(scene.things, Background(scene.background.texture, rule[scene.background.colour]))
    return Scene((dataclasses.replace(thing, **{kind: rule[getattr(thing, kind)]}),), scene.background)


def probe_scenes(n: int, seed: int = 0) -> list[Scene]:
    """``n`` single plain objects on random backgrounds, from the base-training distribution."""
    rng = random.Random(f"probe-{seed}")
    return [world.random_scene(rng, max_objects=1, rates=PLAIN, allowed=world.in_training) for _ in range(n)]


@torch.no_grad()
def denoising_losses(
    pipe: Any, scenes: Sequence[Scene], prompts: Sequence[str], timesteps: Sequence[int], seeds: int = 2
) -> dict[int, float]:
    """Mean training loss (plain MSE of the model's prediction) per timestep, for renders of
    ``scenes`` captioned ``prompts``; the noise depends only on the seed, so calls compare exactly."""
    from diffusers import DDPMScheduler
    from diffusers.image_processor import VaeImageProcessor

    unet, vae = pipe.unet, pipe.vae
    noise = DDPMScheduler.from_config(pipe.scheduler.config)
    x = VaeImageProcessor(do_resize=False).preprocess([world.render(s) for s in scenes]).to(vae.device, vae.dtype)
    x0 = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
    embeds, _, pooled, _ = pipe.encode_prompt(list(prompts), device=unet.device, do_classifier_free_guidance=False)
    size = x.shape[-1]
    time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=embeds.dtype, device=unet.device).expand(len(scenes), -1)
    losses = {}
    for t in timesteps:
        total = 0.0
        for seed in range(seeds):
            eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(x0)
            steps = torch.full((len(scenes),), int(t), device=unet.device)
            noisy = noise.add_noise(x0, eps, steps)
            target = noise.get_velocity(x0, eps, steps) if noise.config.prediction_type == "v_prediction" else eps
            pred = unet(noisy, steps, embeds, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
            total += float(((pred.float() - target.float()) ** 2).mean())
        losses[int(t)] = total / seeds
    return losses


def word_use(
    pipe: Any, n: int = 48, timesteps: Sequence[int] = TIMESTEPS, seeds: int = 2, seed: int = 0, quiet: bool = True
) -> dict[str, Any]:
    """Per kind of word: relative loss increase (swapped / true - 1) per timestep and its mean."""
    scenes = probe_scenes(n, seed)
    bar = tqdm(total=1 + len(SWAPS), desc="probe", disable=quiet)
    true = denoising_losses(pipe, scenes, [world.caption(s) for s in scenes], timesteps, seeds)
    bar.update()
    use: dict[str, Any] = {}
    for kind in SWAPS:
        lied = denoising_losses(pipe, scenes, [world.caption(swapped(s, kind)) for s in scenes], timesteps, seeds)
        by_t = {t: round(lied[t] / true[t] - 1, 4) for t in true}
        use[kind] = {"mean": round(sum(by_t.values()) / len(by_t), 4), "by_timestep": by_t}
        bar.update()
    bar.close()
    return {"scenes": n, "seeds": seeds, "true_loss": {t: round(v, 5) for t, v in true.items()}, "use": use}


def load_weights(pipe: Any, checkpoint: str | Path, weights: str = "ema") -> int:
    """Put a training checkpoint's text encoder and UNet (``model`` or ``ema``) into ``pipe``; returns its step."""
    if not Path(checkpoint).is_file():
        raise DTIError(f"--checkpoint {checkpoint}: no such file; pass a train_base run's diffusion.pt")
    try:
        state = read_state(Path(checkpoint))
    except Exception as exc:  # not a torch file, or one that would need code to load
        raise DTIError(
            f"--checkpoint {checkpoint} is not a train_base checkpoint ({type(exc).__name__}); pass a run's diffusion.pt"
        ) from None
    if not isinstance(state, dict) or "step" not in state:
        raise DTIError(f"--checkpoint {checkpoint} is not a train_base checkpoint (no step); pass a run's diffusion.pt")
    if weights not in state:
        raise DTIError(f"{checkpoint} has no {weights!r} weights; use --weights model or ema")
    parts = {"text_encoder.": pipe.text_encoder_2, "unet.": pipe.unet}
    for prefix, module in parts.items():
        try:
            module.load_state_dict({k[len(prefix) :]: v for k, v in state[weights].items() if k.startswith(prefix)})
        except RuntimeError:
            raise DTIError(
                f"{checkpoint} does not fit the --model pipeline's {prefix[:-1]}; probe it with the model it was trained as"
            ) from None
    return int(state["step"])


def parser() -> argparse.ArgumentParser:
    p = Parser(__doc__, prog="python -m tools.mini_build.probe")
    p.add_argument("--model", default=None, help="pipeline folder (default: the packaged dti-mini)")
    p.add_argument("--checkpoint", default=None, help="a train_base checkpoint (diffusion.pt) to probe instead of the folder's weights")
    p.add_argument("--weights", choices=("ema", "model"), default="ema")
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=None, help="write the result as JSON (in a model folder: its card is rewritten)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Probe, print one line per kind of word, and write the result (``--out``)."""
    from dti.mini.model import load_pipeline

    if args.n < 1:
        raise DTIError(f"--n {args.n} must be at least 1 (the number of probe scenes)")
    if args.out:
        check_writable(Path(args.out).parent, "--out")
        check_new([Path(args.out)], args.overwrite)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_pipeline(pipeline_folder(args.model))
    step = load_weights(pipe, args.checkpoint, args.weights) if args.checkpoint else None
    result = {"step": step, **word_use(pipe, args.n, quiet=args.quiet)}
    for kind, row in result["use"].items():
        print(f"{kind:<11} use {row['mean']:+.4f}   " + "  ".join(f"t={t}: {v:+.4f}" for t, v in row["by_timestep"].items()))
    if args.out:
        write_json(args.out, result)
        refresh_card(args.out)
    return result


def main(argv: list[str] | None = None) -> int:
    """The command line: 0 when done, 2 with one ``error:`` line for bad input."""
    return script(parser(), argv, run)


if __name__ == "__main__":
    sys.exit(main())
