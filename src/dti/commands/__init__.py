"""The ``dti`` command. Thin: parse, call the library, print; bad input exits 2 with one line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from dti.commands import evaluate as evaluate_command
from dti.commands import sweep as sweep_command
from dti.commands.parser import HelpFormatter
from dti.core.errors import DTIError
from dti.training.stopping import RunStopped

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit status 2, like DTIError."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"error: {message} (see `{self.prog} --help`)\n")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give one or more encoder names, e.g. text_encoder,text_encoder_2")
    return names


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE, e.g. instruction=true")
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return key.strip(), lowered == "true"
    for kind in (int, float):
        try:
            return key.strip(), kind(value)
        except ValueError:
            pass
    return key.strip(), value


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="learn a new word for a subject from a folder of photos",
        description="Learn a new word for a subject from 3-6 photos. Defaults reproduce the paper (METHOD.md section 5) "
        "for the model's family; every setting used is saved to OUTPUT/config.json.",
        argument_default=argparse.SUPPRESS,
        formatter_class=HelpFormatter,
    )
    p.add_argument("photos", nargs="?", help="folder of jpg/png/webp photos of the subject")
    p.add_argument("--token", help="the new word, e.g. '<my-dog>' (must not exist in the vocabulary)")
    p.add_argument("--init", help="initializer: the subject's class word, e.g. 'dog'; several words give several vectors")
    p.add_argument("--model", help="diffusers pipeline: hub id or local folder (SD 1.x/2.x, SDXL, SD3, FLUX, SANA, PixArt-Sigma)")
    p.add_argument(
        "--encoders",
        type=_names,
        help="comma-separated text encoders that learn the word, e.g. text_encoder for FLUX's CLIP only; "
        "the others keep the initializer's rows [default: all]",
    )
    p.add_argument(
        "--option",
        action="append",
        type=_option,
        dest="family_options",
        help="a family choice training and generation share, recorded in the concept: SANA instruction=true "
        "(its complex human instruction), max_sequence_length=N (T5 / Gemma families), FLUX guidance=3.5",
    )
    p.add_argument("--output", "--out", dest="output", help="run folder to create (refused if it holds results, unless --overwrite)")
    p.add_argument(
        "--config",
        help="a .toml or .json file of settings, e.g. an earlier run's config.json to repeat it; its keys are these flags' names "
        "(batch-size = 4, no-validation = true) or TrainConfig's fields (batch_size = 4); flags given here override it",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results of an earlier run in --output, once the new run has finished (files dti did not write are kept)",
    )
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the interrupted run in folder RUN from its last checkpoint, with its own settings "
        "(only --steps, --device, --quiet and the checkpoint flags may be given)",
    )
    g = p.add_argument_group("several subjects at once")
    g.add_argument(
        "--manifest",
        metavar="TOML",
        help="train every subject of a manifest in one process, sharing the loaded model: one run folder per subject, "
        "OUTPUT/<subject>/, as `dti train` writes it; flags given here apply to every subject; with --resume OUTPUT, continue them",
    )
    g.add_argument(
        "--data-root", dest="data_root", help="with --manifest: the folder its photo folders are relative to (overrides its root)"
    )
    g.add_argument(
        "--mix",
        choices=("auto", "batch", "group"),
        help="with --manifest: batch = one denoiser pass over all subjects' samples (fastest; equal to single runs to ~1e-6), "
        "group = one pass per subject (bit-identical to single runs) [default: auto = batch where the model family can]",
    )
    g = p.add_argument_group("method")
    g.add_argument(
        "--method",
        choices=("dti", "ti", "crossinit"),
        help="dti: direction on the sphere at fixed norm (default); ti: free vector with AdamW; "
        "crossinit: free vector initialized from the class word's contextual embedding",
    )
    g.add_argument(
        "--optimizer",
        choices=("rsgd", "adamw"),
        help="rsgd (Riemannian SGD, dti default) or adamw (ti default; "
        "with --method dti: AdamW on a fixed-norm vector, the paper's ablation)",
    )
    g.add_argument(
        "--magnitude", help="dti's fixed norm per encoder: mean, min or max of the vocabulary norms, or a number [default: mean]"
    )
    g.add_argument("--kappa", type=float, help="von Mises-Fisher prior strength toward the initializer [default: 1e-4 for dti]")
    g.add_argument("--beta", type=float, help="EMA factor of RiemannianSGD's gradient normalization [default: 0]")
    g.add_argument("--eps", type=float, help="RiemannianSGD normalization epsilon [default: 1e-8]")
    g.add_argument("--weight-decay", type=float, dest="weight_decay", help="AdamW weight decay [default: 0.01]")
    g.add_argument("--crossinit-lambda", type=float, dest="crossinit_lambda", help="crossinit's pull toward its init [default: 1e-5]")
    g.add_argument(
        "--pooling",
        choices=("eos", "legacy"),
        help="where CLIP pools with new tokens: eos (the end token, as "
        "the base model) or legacy (transformers' highest-id rule, which picks the placeholder) [default: eos]",
    )
    g = p.add_argument_group("schedule")
    g.add_argument("--steps", type=_int, help="optimizer steps [default: the family's, 400 for SD/SDXL, 500 for SANA]")
    g.add_argument("--batch-size", type=_int, dest="batch_size", help="photos per batch [default: the family's, 4; SANA 2]")
    g.add_argument("--grad-accum", type=_int, dest="grad_accum", help="batches accumulated per step [default: the family's, 1; SANA 2]")
    g.add_argument("--lr", type=float, help="per-sample learning rate [default: 0.01 rsgd, 0.005 adamw]")
    g.add_argument(
        "--no-scale-lr",
        dest="scale_lr",
        action="store_false",
        help="use --lr as given instead of multiplying it by batch size x grad accumulation",
    )
    g.add_argument("--resolution", type=_int, help="training crop size in pixels [default: the family's; 768 for SDXL, native otherwise]")
    g.add_argument(
        "--crop-positions",
        type=_int,
        dest="crop_positions",
        help="N fixed crop offsets per photo, VAE-encoded once before the first step (no VAE work while training; "
        "less translation augmentation); 0 = every offset [default: 0]",
    )
    g.add_argument(
        "--templates",
        choices=("object", "style", "bare"),
        help="prompt templates: TI's object or style prompts, or bare 'a {}' [default: the model's dti.json, else object]",
    )
    g.add_argument("--seed", type=_int, help="random seed [default: 0]")
    g = p.add_argument_group("hardware")
    g.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        help="model weights' precision; learned rows stay fp32 [default: auto = bf16 on GPU, fp32 on CPU]",
    )
    g.add_argument("--device", help="torch device [default: auto]")
    g.add_argument(
        "--gradient-checkpointing", dest="gradient_checkpointing", action="store_true", help="trade compute for memory in the UNet"
    )
    g.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the denoiser's and the text encoders' repeated blocks (regional: one compile per block type); "
        "the first step pays the compilation",
    )
    g = p.add_argument_group("outputs")
    g.add_argument("--log-every", type=_int, dest="log_every", help="steps between train_log.jsonl records [default: 1]")
    g.add_argument("--snapshot-every", type=_int, dest="snapshot_every", help="steps between concept snapshots, 0 = none [default: 0]")
    g.add_argument(
        "--checkpoint-every",
        type=_int,
        dest="checkpoint_every",
        help="steps between resumable checkpoints in OUTPUT/checkpoints, 0 = none [default: 50]",
    )
    g.add_argument("--keep-checkpoints", type=_int, dest="keep_checkpoints", help="how many of the last checkpoints to keep [default: 2]")
    g.add_argument(
        "--max-bad-steps",
        type=_int,
        dest="max_bad_steps",
        help="non-finite steps in a row (each skipped) before the run stops, resumable [default: 5]",
    )
    g.add_argument(
        "--validation-every", type=_int, dest="validation_every", help="steps between sample grids, 0 = only at the end [default: 0]"
    )
    g.add_argument(
        "--validation-prompt",
        action="append",
        dest="validation_prompts",
        help="sample prompt with {} for the token (repeatable) [default: 'a photo of a {}', 'a {} in the snow']",
    )
    g.add_argument("--validation-seed", action="append", type=_int, dest="validation_seeds", help="sample seed (repeatable) [default: 0 1]")
    g.add_argument("--validation-steps", type=_int, dest="validation_steps", help="sampler steps for samples [default: 25]")
    g.add_argument("--validation-guidance", type=float, dest="validation_guidance", help="guidance scale for samples [default: 5.0]")
    g.add_argument("--no-validation", dest="validate", action="store_false", help="write no sample images")
    g.add_argument("--quiet", dest="progress", action="store_false", help="no progress bar")


def _run_train(args: argparse.Namespace) -> int:
    from dti.training.config import TrainConfig
    from dti.training.loop import train

    values = vars(args).copy()
    for key in ("command", "func"):
        values.pop(key, None)
    if "manifest" in values:
        return _run_manifest(values)
    for key in ("data_root", "mix"):
        if key in values:
            raise DTIError(f"--{key.replace('_', '-')} goes with --manifest; drop it or pass --manifest")
    if "resume" in values:
        return _run_resume(values)
    config_path = values.pop("config", None)
    from dti.training.config import read_config_file

    record = read_config_file(config_path) if config_path else {}
    base = TrainConfig.from_dict(record, source=str(config_path)) if config_path else TrainConfig()
    if "dti_version" in record and "output" not in values:
        raise DTIError(f"--output is required with {config_path}, an earlier run's config (a run is never written over its own results)")
    photos = values.pop("photos", None) or base.photos
    token = values.pop("token", None) or base.token
    init = values.pop("init", None)
    init = base.init if init is None else init
    model = _model_alias(values.pop("model", None) or base.model)
    output = values.pop("output", None) or base.output
    if not output:
        raise DTIError("--output is missing; name the run folder to create, e.g. --output runs/my-dog")
    if "family_options" in values:
        values["family_options"] = {**(base.family_options or {}), **dict(values["family_options"])}
    concept = train(photos, token, init, model, output, config=base, **values)
    enc = ", ".join(f"{name}: norm {float(e.norms.mean()):.4f}" for name, e in concept.encoders.items())
    print(f"learned {concept.token} ({concept.n_vectors} vector(s); {enc}) -> {output}")
    return 0


def _run_manifest(values: dict) -> int:
    from pathlib import Path

    from dti.training.multi import train_manifest

    path = values.pop("manifest")
    if any(values.get(key) for key in ("photos", "token", "init", "config")):
        raise DTIError("--manifest names every subject's photos, token and init; drop the photo folder, --token, --init and --config")
    resume, output = values.pop("resume", None), values.pop("output", None)
    if resume and output and Path(resume).resolve() != Path(output).resolve():
        raise DTIError("with --manifest, --resume names the --output folder of the run to continue; pass just --resume OUTPUT")
    output = resume or output
    if not output:
        raise DTIError("--output is missing; name the folder that gets one run folder per subject, e.g. --output runs/")
    model = _model_alias(values.pop("model", None))
    if "family_options" in values:
        values["family_options"] = dict(values["family_options"])
    data_root, mix = values.pop("data_root", None), values.pop("mix", "auto")
    concepts = train_manifest(path, model, output, data_root, resume=bool(resume), mix=mix, **values)
    for name, concept in concepts.items():
        print(f"learned {concept.token} ({name}) -> {Path(output) / name}")
    return 0


def _run_resume(values: dict) -> int:
    from dti.training.loop import RunFinished, resume_run

    folder = values.pop("resume")
    if values.get("photos") or values.get("config"):
        raise DTIError("--resume takes the run's own photos and settings; drop the photo folder and --config")
    try:
        concept = resume_run(folder, **values)
    except RunFinished as done:
        print(str(done))
        return 0
    print(f"learned {concept.token} (resumed) -> {folder}")
    return 0


def _add_model_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--model", required=required, help="diffusers pipeline: hub id or local folder (default: the concept's base model)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto", help="model weights' precision")
    p.add_argument("--device", default="auto", help="torch device (auto = cuda if available)")


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate images with one or more learned words",
        description="Generate images with learned concepts (any format dti reads) attached to the pipeline.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("prompt", help="the prompt, naming concept tokens, e.g. 'a <my-dog> wearing a santa hat'")
    p.add_argument("--concept", action="append", default=[], help="concept file or run folder (repeatable)")
    _add_model_args(p)
    p.add_argument("-n", "--num-images", type=_int, default=4, dest="n", help="images to generate (seeds seed, seed+1, ...)")
    p.add_argument("--seed", type=_int, default=0, help="first seed")
    p.add_argument("--steps", type=_int, default=25, help="sampler steps")
    p.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance scale")
    p.add_argument("--resolution", type=_int, default=None, help="image size in pixels (default: the model's native size)")
    p.add_argument("--negative-prompt", default=None, help="negative prompt")
    p.add_argument(
        "--rescale", choices=("mean", "min", "max"), default=None, help="load every concept rescaled to this vocabulary norm (TI-rescaled)"
    )
    p.add_argument("--out", "--output", dest="out", default="generated", help="output folder for PNGs and the contact sheet")
    p.add_argument("--overwrite", action="store_true", help="replace images already in --out")


def _add_interpolate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "interpolate",
        help="blend two learned words (slerp on the sphere, or lerp)",
        description="Blend concept A into concept B: per encoder and per vector, slerp of directions at the "
        "fixed norm (or lerp for contrast). Writes the blends and, given a model, a grid image.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("a", help="concept A (weight 0)")
    p.add_argument("b", help="concept B (weight 1)")
    p.add_argument("--steps", type=_int, default=7, help="number of blend weights from 0 to 1 inclusive")
    p.add_argument("--mode", choices=("slerp", "lerp"), default="slerp", help="spherical or straight-line blend")
    p.add_argument("--prompt", default="a photo of {}", help="prompt for the grid; {} is replaced by the blend's token")
    p.add_argument("--token", default="<blend>", help="token the blends are written under (one word, e.g. '<dog-cat>')")
    _add_model_args(p)
    p.add_argument("--seeds", type=_int, nargs="+", default=[0, 1, 2], help="one grid row per seed")
    p.add_argument("--sample-steps", type=_int, default=25, help="sampler steps for the grid")
    p.add_argument("--guidance", type=float, default=5.0, help="guidance scale for the grid")
    p.add_argument("--resolution", type=_int, default=None, help="image size for the grid")
    p.add_argument("--no-grid", dest="grid", action="store_false", help="write the blended concepts only")
    p.add_argument("--out", "--output", dest="out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace files already in --out")


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="norms, angle to the initializer, and nearest vocabulary words of a concept",
        description="Report a concept (ours or a foreign file): per encoder the vector norms against the "
        "vocabulary's, the angle to the initializer and the nearest tokens by cosine and by distance.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("concept", help="concept file or run folder, any supported format")
    p.add_argument("--token", default=None, help="name to use for a file that stores none")
    _add_model_args(p)
    p.add_argument("--top", type=_int, default=8, help="nearest tokens to list")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _add_convert(sub: argparse._SubParsersAction, name: str = "convert") -> None:
    rescale_only = name == "rescale"
    p = sub.add_parser(
        name,
        help="repair a plain-TI file by rescaling it to the vocabulary's mean norm"
        if rescale_only
        else "convert a concept between dti, diffusers, A1111, ComfyUI and kohya formats",
        description="Read a concept in any supported format and write it in another. A1111 .pt files are read "
        "with torch.load(weights_only=True): a pickle that would run code is refused.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("input", help="concept file or folder")
    p.add_argument("--to", choices=("dti", "diffusers", "a1111", "comfyui", "kohya"), default="dti", help="output format")
    p.add_argument("--out", "--output", dest="out", default=None, help="output file or folder (default: named after the token, here)")
    p.add_argument(
        "--token",
        default=None,
        help="rename the token: one made-up word such as '<my-dog>' (A1111's file and trigger word is it without brackets)",
    )
    p.add_argument(
        "--rescale",
        choices=("mean", "min", "max"),
        default="mean" if rescale_only else None,
        help="set every vector's norm to this vocabulary statistic (repairs plain-TI norm inflation)",
    )
    _add_model_args(p)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing output files (refused otherwise; old files stay until all new ones are written)",
    )


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="learn, generate and blend two words on the built-in dti-mini model (offline, about 1.5 minutes on a 2-core CPU)",
        description="Offline end-to-end demo on dti-mini, the small model that ships with dti: renders photos "
        "of two subjects, learns a word for each (DTI), generates new compositions, blends the two words "
        "by slerp, and writes a report scored by the mini world's judge.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--out", "--output", dest="out", default="dti-demo", help="output folder")
    p.add_argument("--steps", type=_int, default=150, help="training steps per word")
    p.add_argument("--sampler-steps", type=_int, default=20, help="sampler steps per image")
    p.add_argument("--model", default=None, help="a dti-mini pipeline folder (default: the packaged one)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    from dti import __version__

    parser = _Parser(prog="dti", description="Directional Textual Inversion: learn new words for text-to-image models.")
    parser.add_argument("--version", action="version", version=f"dti {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train(sub)
    _add_generate(sub)
    _add_interpolate(sub)
    _add_inspect(sub)
    _add_convert(sub)
    _add_convert(sub, "rescale")
    _add_demo(sub)
    sweep_command.add_parser(sub)
    evaluate_command.add_parser(sub)
    return parser


def _model_alias(model: str | None) -> str | None:
    """``dti-mini`` names the model that ships inside the package."""
    if model == "dti-mini":
        from dti.mini.model import PACKAGED

        if not (PACKAGED / "model_index.json").is_file():
            raise DTIError(f"the packaged dti-mini model is missing at {PACKAGED}; reinstall dti")
        return str(PACKAGED)
    return model


def _load_pipe(model: str | None, fallback: str | None, precision: str, device: str) -> tuple[object, str]:
    from dti.core.devices import resolve_device
    from dti.models import load_adapter, resolve_dtype

    name = _model_alias(model or fallback)
    if not name:
        raise DTIError("--model is missing and the concept does not name its base model; pass --model")
    dev = resolve_device(device)
    return load_adapter(name, resolve_dtype(precision, dev), dev, quiet=True).pipe, name


def _run_generate(args: argparse.Namespace) -> int:
    from dti.concepts.formats import read
    from dti.core.files import check_writable
    from dti.use.generate import check_outputs, check_settings, generate, output_paths

    # everything that can be refused without the model is refused before it loads
    check_settings(args.n, args.steps, args.guidance, args.resolution, args.seed)
    check_outputs(output_paths(args.out, args.n, args.seed), args.overwrite)
    check_writable(args.out)
    concepts = [read(c) for c in args.concept]
    base = next((c.meta.get("base_model") for c in concepts if c.meta.get("base_model")), None)
    pipe, name = _load_pipe(args.model, base, args.precision, args.device)
    generate(
        pipe,
        args.prompt,
        concepts,
        n=args.n,
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
        out=args.out,
        resolution=args.resolution,
        negative_prompt=args.negative_prompt,
        rescale=args.rescale,
        model_name=name,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.n} image(s) and contact_sheet.png to {args.out}")
    return 0


def _run_interpolate(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from dti.concepts.blend import blend
    from dti.concepts.concept import check_token_text, value_problems
    from dti.concepts.formats import read
    from dti.core import sphere
    from dti.core.files import write_text
    from dti.use.generate import check_outputs, interpolation_grid, interpolation_images

    check_token_text(args.token)
    if args.steps < 2:
        raise DTIError("--steps must be at least 2 (the two ends)")
    if args.steps > 1000:
        raise DTIError(f"--steps {args.steps} writes that many files; use at most 1000 blend weights")
    if args.grid:
        from dti.training.config import check_prompt_template
        from dti.use.generate import check_settings

        check_prompt_template(args.prompt, "--prompt")
        check_settings(steps=args.sample_steps, guidance=args.guidance, resolution=args.resolution)
        for seed in args.seeds:
            check_settings(seed=seed)
    a, b = read(args.a), read(args.b)
    weights = [i / (args.steps - 1) for i in range(args.steps)]
    mix = blend(a, b, weights, args.mode, args.token)
    out = Path(args.out)
    files = [out / f"blend-{i:02d}-w{w:.3f}.safetensors" for i, w in enumerate(weights)]
    check_outputs([*files, out / "interpolation.json", out / "grid.png"], args.overwrite)
    from dti.core.files import check_writable

    check_writable(out)
    pipe = None
    if args.grid and (args.model or a.meta.get("base_model")):
        from dti.use.loading import match_encoders

        pipe, _ = _load_pipe(args.model, a.meta.get("base_model"), args.precision, args.device)
        match_encoders(mix.concepts[0], pipe)  # a concept of another family is refused before anything is written
    for note in mix.notes:
        print(f"note: {note}")
    summary = {"a": a.token, "b": b.token, "mode": args.mode, "weights": weights, "notes": mix.notes, "encoders": {}}
    for name in a.encoders:
        summary["encoders"][name] = {
            "norms": [[round(float(n), 6) for n in c.encoders[name].norms] for c in mix.concepts],
            "angle_from_a_deg": [
                [round(float(x) * 57.29578, 3) for x in sphere.angle(c.encoders[name].vectors, a.encoders[name].vectors)]
                for c in mix.concepts
            ],
        }
    try:
        text = json.dumps(summary, indent=2, allow_nan=False) + "\n"  # strict JSON: never a bare NaN
    except ValueError:
        raise DTIError("the blends have non-finite norms or angles; check both concepts with `dti inspect`") from None
    for weight, concept in zip(weights, mix.concepts):  # lerp of opposite vectors: an all-zero row no reader accepts
        bad = [p for name, enc in concept.encoders.items() for p in value_problems(name, enc.vectors)]
        if bad:
            raise DTIError(f"the {args.mode} blend at weight {weight:g}: {bad[0]} (the two vectors are opposite); use --mode slerp")
    for concept, path in zip(mix.concepts, files):
        concept.save(path)
    write_text(out / "interpolation.json", text)
    if pipe is not None:
        columns = interpolation_images(pipe, mix, args.prompt, args.seeds, args.sample_steps, args.guidance, args.resolution)
        from dti.core.files import save_image

        save_image(interpolation_grid(columns, weights, args.seeds), out / "grid.png")
        print(f"wrote {len(files)} blended concepts and grid.png to {out}")
    else:
        print(f"wrote {len(files)} blended concepts to {out} (pass --model for a grid image)")
    return 0


def _run_inspect(args: argparse.Namespace) -> int:
    from dti.concepts.concept import check_token_text
    from dti.concepts.formats import read
    from dti.use.inspection import format_report, inspect_concept, report_json

    if args.top < 1:
        raise DTIError(f"--top {args.top} must be at least 1 (the number of nearest tokens to list)")
    if args.token is not None:
        check_token_text(args.token)
    problems: list[str] = []  # a bad file is shown with what is wrong, not refused
    concept = read(args.concept, args.token, problems=problems)
    pipe = None
    if args.model:
        pipe, _ = _load_pipe(args.model, None, args.precision, args.device)
    report = inspect_concept(concept, pipe, k=args.top, problems=problems)
    print(report_json(report) if args.json else format_report(report))
    return 0


def _run_convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dti.concepts import formats
    from dti.concepts.concept import check_token_text
    from dti.use.inspection import vocabulary_statistics

    if args.token is not None:
        check_token_text(args.token)
    concept = formats.read(args.input, args.token)
    stem = formats.file_stem(concept.token)
    default = {"dti": f"{stem}.dti.safetensors", "diffusers": f"{stem}-diffusers"}.get(args.to, f"{stem}.safetensors")
    out = Path(args.out or default)
    paths = formats.planned_paths(concept, args.to, out)  # every output is checked before a model or anything else loads
    formats.check_destination(paths, args.overwrite, formats.stale_paths(args.to, paths))
    model = _model_alias(args.model) if args.model else None
    if args.to in ("a1111", "comfyui", "kohya") and (args.out is None or paths[0] != out):  # named after the token: what A1111 users type
        formats.check_trigger_word(concept.token, formats.trigger_tokenizers(concept, model))
    if args.rescale:
        pipe = None
        if model:
            from dti.use.loading import match_encoders

            pipe = _load_pipe(model, None, args.precision, args.device)[0]
            match_encoders(concept, pipe)  # each encoder's width against the model's, in one line
        concept = concept.rescaled(
            {name: stats[args.rescale] for name, stats in vocabulary_statistics(concept, pipe, args.rescale).items()}
        )
    written = formats.write(concept, args.to, out, overwrite=args.overwrite)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from dti.evaluation.demo import run_demo

    if args.steps <= 0 or args.sampler_steps <= 0:
        raise DTIError("--steps and --sampler-steps must be positive")
    numbers = run_demo(
        args.out, args.model, steps=args.steps, sampler_steps=args.sampler_steps, overwrite=args.overwrite, progress=not args.quiet
    )
    print(f"demo finished in {numbers['seconds']} s: see {args.out}/report.md")
    return 0


COMMANDS = {
    "train": _run_train,
    "generate": _run_generate,
    "interpolate": _run_interpolate,
    "inspect": _run_inspect,
    "convert": _run_convert,
    "rescale": _run_convert,
    "demo": _run_demo,
    "sweep": sweep_command.run,
    "evaluate": evaluate_command.run,
}


def _resume_hint(args: argparse.Namespace) -> str:
    """What to run after a hard interrupt: the same sweep, or the run's resume."""
    if args.command == "sweep":
        return "; run the same `dti sweep` command again to continue from the last checkpoints"
    run = getattr(args, "resume", None) or getattr(args, "output", None)
    if args.command == "train" and run and getattr(args, "manifest", None):
        return f"; continue from the last checkpoints with `dti train --manifest {args.manifest} --resume {run}`"
    if args.command == "train" and run:
        return f"; continue from the last checkpoint with `dti train --resume {run}`"
    return ""


def _refuse_empty_paths(args: argparse.Namespace) -> None:
    """An empty output path (an unset shell variable, most likely) would mean the current folder: refuse it."""
    for name in ("out", "output"):
        value = getattr(args, name, None)
        if isinstance(value, str) and not value.strip():
            raise DTIError(f"--{name} is empty; name the folder to write into, e.g. --{name} out/")


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return int(exc.code or 0)
    try:
        _refuse_empty_paths(args)
        return COMMANDS[args.command](args)
    except DTIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a full disk, a read-only place, a path under a file, met while writing
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: could not write{where}: {exc.strerror or exc}; free space or choose another output folder", file=sys.stderr)
        return EXIT_USAGE
    except RunStopped as stopped:
        print(f"stopped: {stopped}", file=sys.stderr)
        return stopped.exit_code
    except KeyboardInterrupt:  # a second Ctrl-C: no time to save, but the last checkpoint is there
        print(f"interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    except Exception as exc:
        if type(exc).__name__ == "SafetensorError" and "os error" in str(exc):  # safetensors' own I/O failure (a full disk)
            print(f"error: could not write a file: {str(exc).splitlines()[0]}; free space or choose another output folder", file=sys.stderr)
            return EXIT_USAGE
        raise


if __name__ == "__main__":
    sys.exit(main())
