"""``dti interpolate``: blend two learned words (slerp on the sphere, or lerp) and show the way."""

from __future__ import annotations

import argparse

from dti.commands.common import add_model, add_output
from dti.commands.flags import groups_of
from dti.commands.parser import add_seeds, number, whole

VERB = "interpolate"
HELP = "blend two learned words (slerp on the sphere, or lerp)"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        VERB,
        help=HELP,
        description="Blend concept A into concept B: per encoder and per vector, slerp of directions at the "
        "fixed norm (or lerp for contrast). Writes the blends and, given a model, a grid image.",
    )
    groups = groups_of(p)
    inputs = groups["inputs"]
    inputs.add_argument("a", help="concept A (weight 0)")
    inputs.add_argument("b", help="concept B (weight 1)")
    inputs.add_argument("--blends", type=whole, default=7, help="number of blend weights from 0 to 1, both ends included")
    inputs.add_argument("--mode", choices=("slerp", "lerp"), default="slerp", help="spherical or straight-line blend")
    inputs.add_argument("--token", default="<blend>", help="token the blends are written under (one word, e.g. '<dog-cat>')")
    add_model(p)
    sampling = groups["sampling"]
    sampling.add_argument("--prompt", default="a photo of {}", help="prompt of the grid; {} is replaced by the blend's token")
    add_seeds(sampling, "--seeds", default=[0, 1, 2], help="seeds of the grid, one row each: 0-3, 0,1,5 or 0 1 5")
    sampling.add_argument("--sample-steps", type=whole, default=25, dest="sample_steps", help="sampler steps of the grid")
    sampling.add_argument("--guidance", type=number, default=5.0, help="guidance scale of the grid")
    sampling.add_argument("--resolution", type=whole, default=None, help="image size of the grid [default: the model's native size]")
    sampling.add_argument("--no-grid", dest="grid", action="store_false", help="write the blended concepts only")
    add_output(p, "output folder", required=True)
    return p


def run(args: argparse.Namespace) -> int:
    from dti.use.interpolate import interpolate

    result = interpolate(
        args.a,
        args.b,
        args.out,
        blends=args.blends,
        mode=args.mode,
        token=args.token,
        model=args.model,
        prompt=args.prompt,
        seeds=args.seeds,
        sample_steps=args.sample_steps,
        guidance=args.guidance,
        resolution=args.resolution,
        grid=args.grid,
        precision=args.precision,
        device=args.device,
        overwrite=args.overwrite,
    )
    for note in result.notes:
        print(f"note: {note}")
    if result.grid is not None:
        print(f"wrote {len(result.files)} blended concepts and grid.png to {args.out}")
    else:
        print(f"wrote {len(result.files)} blended concepts to {args.out} (pass --model for a grid image)")
    return 0
