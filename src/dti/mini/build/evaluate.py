"""The base model's quality gate: does dti-mini render what a held-out caption asks for?

    python -m dti.mini.build.evaluate [--model PATH] [--n 500] [--out report.json]

Every caption is the full caption of a scene whose (shape, colour, texture) combinations were
held out of base training; one image per caption (seed = its index); the judge reads each image.
Per attribute: the fraction of requested values rendered correctly, each requested object bound
to a seen one by the best assignment (so shape, colour, size and position are judged separately,
as GenEval does); jointly: the fraction of captions with every attribute right, positions and the
object count included.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

import torch

from dti.mini import world
from dti.mini.text import OUTCOMES, outcomes


def generate_images(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], steps: int, guidance: float, batch: int = 16) -> list:
    """Images for prompts, batched; each keeps its own seed (same result as one at a time)."""
    images = []
    for i in range(0, len(prompts), batch):
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds[i : i + batch]]
        out = pipe(list(prompts[i : i + batch]), num_inference_steps=steps, guidance_scale=guidance, generator=gens)
        images.extend(out.images)
    return images


def tally(scenes: Sequence[Any], predictions: Sequence[dict]) -> dict[str, Any]:
    """Per-attribute accuracy, joint accuracy and joint accuracy by object count of judged images."""
    counts: dict[str, list[bool]] = {k: [] for k in OUTCOMES}
    joint = []
    for scene, seen in zip(scenes, predictions):
        outcome = outcomes(world.spec(scene), seen)
        for key, values in outcome.items():
            counts[key].extend(values)
        joint.append(all(all(v) for v in outcome.values()))
    by_objects = {}
    for k in (1, 2, 3):
        picked = [j for j, s in zip(joint, scenes) if len(s.things) == k]
        by_objects[str(k)] = round(sum(picked) / max(1, len(picked)), 4)
    return {
        "accuracy": {k: round(sum(v) / len(v), 4) for k, v in counts.items() if v},
        "joint": round(sum(joint) / len(joint), 4),
        "by_objects": by_objects,
    }


@torch.no_grad()
def reconstructions(vae: Any, images: Sequence[Any]) -> list:
    """The images after the VAE's encode -> decode (latent mode): the best any UNet could hand back."""
    from diffusers.image_processor import VaeImageProcessor

    processor = VaeImageProcessor(do_resize=False)
    x = processor.preprocess(list(images)).to(vae.device, vae.dtype)
    return processor.postprocess(vae.decode(vae.encode(x).latent_dist.mode()).sample.float(), output_type="pil")


def evaluate_base(pipe: Any, judge: Any, n: int = 500, seed: int = 0, steps: int = 20, guidance: float = 4.0) -> dict[str, Any]:
    """The gate, plus two ceilings for reading it: the judge on clean renders of the same scenes, and on
    their VAE reconstructions (what a perfect UNet could score through this VAE and this judge)."""
    scenes = world.heldout_scenes(n, seed)
    prompts = [world.caption(s) for s in scenes]
    t0 = time.perf_counter()
    images = generate_images(pipe, prompts, list(range(n)), steps, guidance)
    seconds = time.perf_counter() - t0
    truth = [world.render(s) for s in scenes]
    return {
        "captions": n,
        **tally(scenes, judge.predict(images)),
        "ceiling": {
            "clean_renders": tally(scenes, judge.predict(truth)),
            "vae_reconstructions": tally(scenes, judge.predict(reconstructions(pipe.vae, truth))),
        },
        "sampler_steps": steps,
        "guidance": guidance,
        "generate_seconds": round(seconds, 1),
        "images": images,
        "prompts": prompts,
    }


def main(argv: list[str] | None = None) -> None:
    from dti.mini.judge import Judge
    from dti.mini.model import load_pipeline

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="pipeline folder (default: the packaged dti-mini)")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    p.add_argument("--out", default=None, help="write the report (JSON) and a sample grid (PNG) next to it")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = evaluate_base(load_pipeline(args.model), Judge.load(), args.n, args.seed, args.steps, args.guidance)
    images, prompts = report.pop("images"), report.pop("prompts")
    print(json.dumps(report, indent=2))
    if args.out:
        from pathlib import Path

        from dti.fileio import write_json
        from dti.images import grid
        from dti.mini.build.card import refresh_card

        write_json(args.out, report)
        refresh_card(args.out)
        rows = [images[i : i + 8] for i in range(0, min(len(images), 64), 8)]
        grid(rows, row_labels=[f"captions {i}-{i + 7}" for i in range(0, min(len(images), 64), 8)]).save(Path(args.out).with_suffix(".png"))
        Path(args.out).with_suffix(".prompts.txt").write_text("\n".join(prompts[:64]) + "\n")  # the grid's captions, row by row


if __name__ == "__main__":
    main()
