"""``dti generate``: images of a prompt with one or more learned words attached."""

from __future__ import annotations

import argparse

from dti.commands.common import add_model, add_output
from dti.commands.flags import groups_of
from dti.commands.parser import number, whole
from dti.text.vocab import MAGNITUDES

VERB = "generate"
HELP = "generate images with one or more learned words"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        VERB, help=HELP, description="Generate images with learned concepts (any format dti reads) attached to the pipeline."
    )
    groups = groups_of(p)
    groups["inputs"].add_argument("prompt", help="the prompt, naming concept tokens, e.g. 'a <my-dog> wearing a santa hat'")
    groups["inputs"].add_argument("--concept", action="append", default=[], help="concept file or run folder (repeatable)")
    add_model(p)
    sampling = groups["sampling"]
    sampling.add_argument("-n", "--num-images", type=whole, default=4, dest="n", help="images to generate (seeds seed, seed+1, ...)")
    sampling.add_argument("--seed", type=whole, default=0, help="first seed")
    sampling.add_argument("--sample-steps", type=whole, default=25, dest="sample_steps", help="sampler steps")
    sampling.add_argument("--guidance", type=number, default=5.0, help="classifier-free guidance scale")
    sampling.add_argument("--resolution", type=whole, default=None, help="image size in pixels [default: the model's native size]")
    sampling.add_argument("--negative-prompt", default=None, help="negative prompt")
    sampling.add_argument(
        "--rescale", choices=MAGNITUDES, default=None, help="load every concept rescaled to this vocabulary norm (TI-rescaled)"
    )
    sampling.add_argument(
        "--lora-scale",
        type=number,
        default=1.0,
        dest="lora_scale",
        help="strength of the LoRA a run folder trained with --lora brings (1 = as trained, 0 = the word alone)",
    )
    add_output(p, "output folder for the PNGs and the contact sheet", default="generated")
    return p


def run(args: argparse.Namespace) -> int:
    from dti.concepts.formats import read
    from dti.core.files import check_writable
    from dti.use.generate import check_lora_scale, check_outputs, check_settings, generate, output_paths
    from dti.use.lora import lora_file
    from dti.use.pipelines import load_pipeline

    # everything that can be refused without the model is refused before it loads
    check_settings(args.n, args.sample_steps, args.guidance, args.resolution, args.seed)
    check_lora_scale(args.lora_scale)
    check_outputs(output_paths(args.out, args.n, args.seed), args.overwrite)
    check_writable(args.out)
    concepts = [read(c) for c in args.concept]
    base = next((c.meta.get("base_model") for c in concepts if c.meta.get("base_model")), None)
    pipe, name = load_pipeline(args.model, base, args.precision, args.device)
    # a run folder with a LoRA is loaded from its path, so that its LoRA comes with it
    sources = [path if lora_file(path, c) is not None else c for path, c in zip(args.concept, concepts)]
    generate(
        pipe,
        args.prompt,
        sources,
        n=args.n,
        seed=args.seed,
        sample_steps=args.sample_steps,
        guidance=args.guidance,
        out=args.out,
        resolution=args.resolution,
        negative_prompt=args.negative_prompt,
        rescale=args.rescale,
        model_name=name,
        overwrite=args.overwrite,
        lora_scale=args.lora_scale,
    )
    print(f"wrote {args.n} image(s) and contact_sheet.png to {args.out}")
    return 0
