"""The base model's quality gate: does dti-mini render what a held-out caption asks for?

    python -m tools.mini_build.evaluate [--model PATH] [--n 500] [--out report.json [--overwrite]] [--quiet]

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
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tools.mini_build import Parser, check_new, pipeline_folder, script
from tools.mini_build.card import refresh_card
from tqdm.auto import tqdm

from dti.core.errors import DTIError
from dti.core.files import atomic_write_all, check_writable
from dti.core.images import grid
from dti.mini import world
from dti.mini.text import OUTCOMES, outcomes


def generate_images(
    pipe: Any, prompts: Sequence[str], seeds: Sequence[int], steps: int, guidance: float, batch: int = 16, quiet: bool = True
) -> list:
    """Images for prompts, batched; each keeps its own seed (same result as one at a time)."""
    images = []
    for i in tqdm(range(0, len(prompts), batch), desc="generate", unit="batch", disable=quiet):
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


def evaluate_base(
    pipe: Any, judge: Any, n: int = 500, seed: int = 0, steps: int = 20, guidance: float = 4.0, quiet: bool = True
) -> dict[str, Any]:
    """The gate, plus two ceilings for reading it: the judge on clean renders of the same scenes, and on
    their VAE reconstructions (what a perfect UNet could score through this VAE and this judge)."""
    scenes = world.heldout_scenes(n, seed)
    prompts = [world.caption(s) for s in scenes]
    t0 = time.perf_counter()
    images = generate_images(pipe, prompts, list(range(n)), steps, guidance, quiet=quiet)
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


def parser() -> argparse.ArgumentParser:
    p = Parser(__doc__, prog="python -m tools.mini_build.evaluate")
    p.add_argument("--model", default=None, help="pipeline folder (default: the packaged dti-mini)")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    p.add_argument(
        "--out", default=None, help="write the report (JSON) and a sample grid (PNG) next to it; in a model folder its card is rewritten"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report at --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def outputs(out: str | Path) -> tuple[Path, Path, Path]:
    """The report, its sample grid and the grid's captions."""
    out = Path(out)
    return out, out.with_suffix(".png"), out.with_suffix(".prompts.txt")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The gate on ``--model``, printed as JSON and written with its grid (``--out``)."""
    from dti.mini.judge import Judge
    from dti.mini.model import load_pipeline

    for name, value in (("--n", args.n), ("--steps", args.steps)):
        if value < 1:
            raise DTIError(f"{name} {value} must be at least 1")
    if args.out:
        report_path, grid_path, prompts_path = outputs(args.out)
        if report_path == grid_path or report_path == prompts_path:
            raise DTIError(f"--out {args.out} is the name of its own sample grid; name the report .json")
        check_writable(report_path.parent, "--out")
        check_new([report_path, grid_path, prompts_path], args.overwrite)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_pipeline(pipeline_folder(args.model))
    report = evaluate_base(pipe, Judge.load(), args.n, args.seed, args.steps, args.guidance, quiet=args.quiet)
    images, prompts = report.pop("images"), report.pop("prompts")
    print(json.dumps(report, indent=2))
    if args.out:
        shown = range(0, min(len(images), 64), 8)
        sheet = grid([images[i : i + 8] for i in shown], row_labels=[f"captions {i}-{i + 7}" for i in shown])
        report_text = json.dumps(report, indent=2) + "\n"
        captions = "\n".join(prompts[:64]) + "\n"  # the grid's captions, row by row
        atomic_write_all(  # the three appear together, so a grid never sits beside another run's report
            [
                (report_path, lambda tmp: Path(tmp).write_text(report_text, encoding="utf-8")),
                (grid_path, lambda tmp: sheet.save(tmp, format="PNG")),
                (prompts_path, lambda tmp: Path(tmp).write_text(captions, encoding="utf-8")),
            ]
        )
        refresh_card(report_path)
    return report


def main(argv: list[str] | None = None) -> int:
    """The command line: 0 when done, 2 with one ``error:`` line for bad input."""
    return script(parser(), argv, run)


if __name__ == "__main__":
    sys.exit(main())
