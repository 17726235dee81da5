"""TI vs DTI on dti-mini, scored through the evaluation protocol (GitHub issues 10 and 18).

    python benchmarks/mini.py run    --out runs/mini [--subjects coral jade ...] [--methods dti,ti,...] [--steps 400]
                                      [--prompts 16] [--seeds 4]
    python benchmarks/mini.py blend  --out runs/mini [--pairs coral:plum lemon:sapphire] [--seeds 8]
    python benchmarks/mini.py report --out runs/mini [--name mini-2026-12-01]

``run`` learns every subject (default: all 11 named subjects, the 6 "dev" ones included: none is
ever shown to base training, see ``world.in_training``) with each method, renders the subject's
compositional prompts x seeds in batches, and scores every image with :class:`MiniJudgeScorer`
(text similarity on the class-word prompt, image similarity to the subject's 5 reference renders).
One subject at a time: its records (JSONL) and a done-marker (JSON) are written when it finishes,
so a crash loses at most one subject and a rerun skips finished ones; several ``run`` processes
with disjoint ``--subjects`` may share one ``--out``.

Methods: ``dti`` (the default RSGD lr: DTI moves a unit direction, so its step is scale-free);
``ti`` (AdamW, lr scaled so that one Adam step moves a coordinate by the same fraction of the
vocabulary's coordinate scale as the paper's lr 5e-3 does on CLIP ViT-L); ``ti-unscaled`` (lr 5e-3
as on CLIP: on dti-mini's ~70x larger coordinates the norm barely moves); ``ti-rescaled`` (the
``ti`` vectors at the vocabulary mean norm); ``class-word`` (no token: the class-word prompt
itself, the base model's compositional ceiling).

Issue 18 adds the norm control users have today and the paper's ablations (``--methods``):
``ti-renorm`` (OneTrainer's rescale to the vocabulary's median norm after every AdamW step, TI's
scaled lr); ``crossinit`` (TI's scaled lr: the paper gives TI and CrossInit one AdamW lr);
``adamw-fixed`` (AdamW on a unit vector at the mean norm, lr scaled as the paper's on a unit vector:
5e-3 x sqrt(768 / 96), a coordinate of a unit vector being 1/sqrt(width)); ``dti-min`` (magnitude =
the vocabulary's smallest norm); ``dti-5x`` (magnitude = 5 x the vocabulary mean, an inflated norm;
the paper's absolute 5.0 is 12.9 x CLIP-L's mean); ``dti-kappa0`` and ``dti-kappa5e-4`` (no prior; a
5x stronger one).

Issue 20 adds ``dti-int8``, ``dti-fp8``, ``dti-nf4`` and ``dti-int4``: DTI trained with ``--quantize``
(the frozen linear layers in that scheme while the word trains), the concept then rendered by the
full-precision model, as a user who trained on a small card and generates anywhere would.

Issue 21 (``run --lora RANK``; the default methods become ``lora-only,ti+lora,dti+lora,ti-renorm+lora,dti``):
a LoRA of that rank learned with the word (AdamW at ``--lora-lr``; the word as its method learns it);
``lora-only`` freezes the word at its class-word initializer (``ti`` with ``word_steps=0``). The images
are made with the word and its LoRA loaded from the run folder.

``blend`` scores DTI slerp against TI lerp between two learned subjects along the path;
``report`` writes the tables with paired bootstrap intervals, the norm plot and the blend plot.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: CLIP ViT-L/14's token embedding table (SD 1.x / SDXL encoder 1): mean row norm ~0.39 over 768
#: coordinates (METHOD.md). Its coordinate scale, mean norm / sqrt(width), is what the paper's
#: AdamW lr 5e-3 moves against.
CLIP_L_MEAN_NORM = 0.39
CLIP_L_WIDTH = 768
PAPER_TI_LR = 5e-3  # per sample; x batch 4
GUIDANCE = 4.0
SAMPLER_STEPS = 20
BATCH = 16
ENCODER = "text_encoder_2"
METHODS = ("dti", "ti", "ti-unscaled", "ti-rescaled", "class-word")
#: Issue 18: the norm control users have (ti-renorm) and the paper's ablations the first run left out.
ADDED = ("ti-renorm", "crossinit", "adamw-fixed", "dti-min", "dti-5x", "dti-kappa0", "dti-kappa5e-4")
#: Issue 20: DTI trained through frozen layers in fewer bits (`dti train --quantize`), the concept then used on the
#: full-precision model: the quality cost of training on the card people own.
QUANTIZED = ("dti-int8", "dti-fp8", "dti-nf4", "dti-int4")
#: Issue 21 (``--lora RANK``): a LoRA learned with the word. ``lora-only`` is the LoRA alone: ``ti`` with
#: ``word_steps=0``, the word frozen at its class-word initializer (dti-mini has no rare words: every word of
#: its vocabulary names something in its world).
LORA_METHODS = ("lora-only", "ti+lora", "dti+lora", "ti-renorm+lora")
LORA_DEFAULT = (*LORA_METHODS, "dti")
KNOWN = (*METHODS, *ADDED, *QUANTIZED, *LORA_METHODS)
TRAINED = ("dti", "ti", "ti-unscaled", *ADDED, *QUANTIZED, *LORA_METHODS)
#: A unit vector's coordinate in CLIP ViT-L's width and in dti-mini's: the paper's AdamW-at-fixed-norm lr, scaled.
UNIT_LR_FACTOR = math.sqrt(CLIP_L_WIDTH / 96)
DEFAULT_PAIRS = ("coral:plum", "lemon:sapphire", "ruby:mint")


def coordinate_scale(mean_norm: float, width: int) -> float:
    """A table's per-coordinate scale: the mean row norm over sqrt(width) (the rms a coordinate has)."""
    return mean_norm / math.sqrt(width)


def ti_lr_factor(table: Any) -> float:
    """How much larger this table's coordinates are than CLIP ViT-L's: the factor that puts an Adam
    step (which moves each coordinate by about the lr) in the paper's regime."""
    mean = float(table.norm(dim=-1).mean())
    return coordinate_scale(mean, int(table.shape[-1])) / coordinate_scale(CLIP_L_MEAN_NORM, CLIP_L_WIDTH)


def prompt_kind(spec: dict) -> str:
    """The compositional ask of a prompt: place / background / relation / pair / triple (+ background)."""
    objects = spec["objects"]
    if len(objects) == 3:
        kind = "triple"
    elif len(objects) == 2:
        kind = "relation" if spec.get("relation") else "pair"
    else:
        kind = "place" if objects[0].get("position") else "background"
    if kind != "background" and (spec.get("texture") or spec.get("background")):
        kind += "+background"
    return kind


def generate(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], batch: int = BATCH) -> list:
    """Images for (prompt, seed) pairs in batches, each with its own generator (as one at a time)."""
    import torch

    from dti.models import adapter_for

    adapter = adapter_for(pipe)
    res = adapter.native_resolution()
    kwargs = adapter.generation_kwargs()
    images = []
    for i in range(0, len(prompts), batch):
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds[i : i + batch]]
        out = pipe(
            list(prompts[i : i + batch]),
            num_inference_steps=SAMPLER_STEPS,
            guidance_scale=GUIDANCE,
            generator=gens,
            height=res,
            width=res,
            **kwargs,
        )
        images.extend(out.images)
    return images


def load_pipe(threads: int):
    import torch

    from dti.mini.model import PACKAGED
    from dti.models import load_adapter

    if threads:
        torch.set_num_threads(threads)
    pipe = load_adapter(str(PACKAGED), torch.float32, "cpu", quiet=True).pipe
    pipe.set_progress_bar_config(disable=True)
    return pipe


def vocab_table(pipe: Any):
    return getattr(pipe, ENCODER).get_input_embeddings().weight.detach()


def settings_of(pipe: Any, args: argparse.Namespace) -> dict[str, Any]:
    table = vocab_table(pipe)
    factor = ti_lr_factor(table)
    lora = {"lora": args.lora, "lora_lr": args.lora_lr} if getattr(args, "lora", 0) else {}
    return {
        **lora,
        "steps": args.steps,
        "batch": 4,
        "prompts_per_subject": args.prompts,
        "seeds": list(range(args.seeds)),
        "sampler_steps": SAMPLER_STEPS,
        "guidance": GUIDANCE,
        "vocab_mean_norm": float(table.norm(dim=-1).mean()),
        "vocab_width": int(table.shape[-1]),
        "vocab_coordinate_std": float(table.std()),
        "clip_l_coordinate_scale": coordinate_scale(CLIP_L_MEAN_NORM, CLIP_L_WIDTH),
        "ti_lr_factor": factor,
        "ti_lr": PAPER_TI_LR * factor,
        "ti_unscaled_lr": PAPER_TI_LR,
    }


def train_settings(method: str, s: dict[str, Any]) -> dict[str, Any]:
    """The `dti train` settings of a benchmark method (see the module doc for the learning rates)."""
    if method in LORA_METHODS:
        if not s.get("lora"):
            raise SystemExit(f"error: method {method} needs --lora RANK")
        lora = {"lora": s["lora"], "lora_lr": s["lora_lr"]}
        if method == "lora-only":
            return {**train_settings("ti", s), "word_steps": 0, **lora}
        return {**train_settings(method.removesuffix("+lora"), s), **lora}
    if method == "dti":
        return {"method": "dti"}
    if method in ("ti", "ti-unscaled"):
        return {"method": "ti", "lr": s["ti_lr"] if method == "ti" else s["ti_unscaled_lr"]}
    if method in ("ti-renorm", "crossinit"):
        return {"method": method, "lr": s["ti_lr"]}
    if method == "adamw-fixed":
        return {"method": "dti", "optimizer": "adamw", "lr": PAPER_TI_LR * UNIT_LR_FACTOR}
    if method == "dti-5x":
        return {"method": "dti", "magnitude": 5.0 * s["vocab_mean_norm"]}
    if method in QUANTIZED:
        return {"method": "dti", "quantize": method.split("-")[1]}
    from dti.methods import VARIANTS

    return dict(VARIANTS[method].settings)  # dti-min, dti-kappa0, dti-kappa5e-4: the paper's ablations


def learned(pipe: Any, photos: Path, subject: Any, method: str, folder: Path, s: dict[str, Any]):
    """The subject's concept for ``method``: trained now, or read back from a finished run folder."""
    from dti.concepts.concept import Concept
    from dti.training.session import train

    done = folder / "concept.safetensors"
    if done.exists() and (folder / "bench-seconds.json").exists():
        return Concept.load(done), json.loads((folder / "bench-seconds.json").read_text())["seconds"]
    if folder.exists():
        shutil.rmtree(folder)  # a run this benchmark started and did not finish
    t0 = time.perf_counter()
    settings = dict(steps=s["steps"], validate=False, progress=False, **train_settings(method, s))
    concept = train(photos, f"<{subject.name}>", subject.shape, pipe, folder, **settings)
    seconds = time.perf_counter() - t0
    from dti.core.files import write_json

    write_json(folder / "bench-seconds.json", {"seconds": seconds})
    return concept, seconds


def run_subject(pipe: Any, scorer: Any, subject: Any, out: Path, s: dict[str, Any], methods: Sequence[str] = METHODS) -> None:
    """Every method on one subject; writes subjects/<name>.jsonl and then the marker subjects/<name>.json."""
    import random

    from dti.core.files import save_images, write_json, write_text
    from dti.evaluation.protocol import class_prompt
    from dti.mini import world
    from dti.use.loading import load, unload

    token = f"<{subject.name}>"
    refs = world.reference_images(subject, 5)
    photos = out / "photos" / subject.name
    if not photos.exists():
        save_images([(im, photos / f"{i:02d}.png", {}) for i, im in enumerate(refs)])
    prompts = world.compositional_prompts(token, subject.shape, s["prompts_per_subject"], seed=0)
    seeds = s["seeds"]
    jobs = [(i, p, spec, seed) for i, (p, spec) in enumerate(prompts) for seed in seeds]
    text_prompts = [class_prompt(p, token, subject.shape) for _, p, _, _ in jobs]
    mean = s["vocab_mean_norm"]
    records, meta = [], {"subject": subject.name, "class_word": subject.shape, "split": subject.split, "methods": {}}
    concepts = {}
    for method in methods:
        t0 = time.perf_counter()
        info: dict[str, Any] = {}
        if method in TRAINED:
            concept, info["train_seconds"] = learned(pipe, photos, subject, method, out / "runs" / method / subject.name, s)
            concepts[method] = concept
        if method == "class-word":
            attached, texts = None, text_prompts
        else:
            source = concepts["ti"] if method == "ti-rescaled" else concepts[method]
            if method in LORA_METHODS:  # the run folder: its LoRA comes with the word
                source = out / "runs" / method / subject.name
            attached = load(pipe, source, rescale="mean" if method == "ti-rescaled" else None)
            info["norm_over_mean"] = float(attached.encoders[ENCODER].norms.mean()) / mean
            texts = [p for _, p, _, _ in jobs]
        try:
            images = generate(pipe, texts, [seed for *_, seed in jobs])
        finally:
            if attached is not None:
                unload(pipe, token)
        text = scorer.text_similarity(images, text_prompts)
        image = scorer.image_similarity(images, refs)
        paths = [Path("images") / method / subject.name / f"p{i:02d}-s{seed}.png" for i, _, _, seed in jobs]
        save_images([(im, out / rel, {}) for im, rel in zip(images, paths)])
        for (i, p, spec, seed), tp, rel, t, im in zip(jobs, text_prompts, paths, text, image):
            records.append(
                {
                    "method": method,
                    "subject": subject.name,
                    "kind": "object",
                    "prompt": p if method != "class-word" else tp,
                    "text_prompt": tp,
                    "seed": seed,
                    "image": str(rel),
                    "scores": {"mini.text": t, "mini.image": im},
                    "prompt_kind": prompt_kind(spec),
                    "prompt_index": i,
                }
            )
        info["seconds"] = time.perf_counter() - t0
        meta["methods"][method] = info
        print(
            f"{subject.name:9s} {method:12s} text {sum(text) / len(text):.3f} image {sum(image) / len(image):.3f} "
            f"norm/mean {info.get('norm_over_mean', float('nan')):.2f} ({info['seconds']:.0f} s)",
            flush=True,
        )
    # The judge's ceiling: clean renders of scenes that show exactly what each class-word prompt asks
    # (the subject itself in the token's place), one per (prompt, seed).
    rngs = [random.Random(f"ceiling-{subject.name}-{i}-{seed}") for i, _, _, seed in jobs]
    clean = [world.render(world.realize(spec, rng, {token: subject})) for (_, _, spec, _), rng in zip(jobs, rngs)]
    meta["ceiling"] = {
        "text": scorer.text_similarity(clean, text_prompts),
        "image": scorer.image_similarity(clean, refs),
        "prompt_kind": [prompt_kind(spec) for _, _, spec, _ in jobs],
    }
    write_text(out / "subjects" / f"{subject.name}.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    write_json(out / "subjects" / f"{subject.name}.json", meta)


def cmd_run(args: argparse.Namespace) -> None:
    from dti.core.files import write_json
    from dti.evaluation.scorers.mini import MiniJudgeScorer
    from dti.mini import world

    out = Path(args.out)
    pipe = load_pipe(args.threads)
    s = settings_of(pipe, args)
    known = {x.name: x for x in world.subjects()}
    names = args.subjects or list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        sys.exit(f"error: unknown subject(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    settings_file = out / "settings.json"
    if settings_file.exists():
        saved = json.loads(settings_file.read_text())
        if saved != s:
            sys.exit(f"error: {settings_file} holds other settings than this run's; use another --out")
    else:
        write_json(settings_file, s)
    print(f"TI lr factor {s['ti_lr_factor']:.2f} -> TI lr {s['ti_lr']:.4f} per sample (x batch 4)", flush=True)
    chosen = args.methods or ",".join(LORA_DEFAULT if args.lora else METHODS)
    methods = [m.strip() for m in chosen.split(",") if m.strip()]
    bad = [m for m in methods if m not in KNOWN]
    if bad or ("ti-rescaled" in methods and "ti" not in methods):
        sys.exit(f"error: unknown method(s) {', '.join(bad) or 'ti-rescaled without ti'}; choose from {', '.join(KNOWN)}")
    saved_methods = out / "methods.json"
    if saved_methods.exists() and json.loads(saved_methods.read_text()) != methods:
        sys.exit(f"error: {saved_methods} lists other methods than --methods; use another --out")
    write_json(saved_methods, methods)
    scorer = MiniJudgeScorer()
    for name in names:
        if (out / "subjects" / f"{name}.json").exists():
            print(f"{name}: done, skipped", flush=True)
            continue
        t0 = time.perf_counter()
        run_subject(pipe, scorer, known[name], out, s, methods)
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)


def cmd_blend(args: argparse.Namespace) -> None:
    """DTI slerp vs TI lerp between pairs of learned subjects: judge similarity to A and to B per weight."""
    from dti.concepts.blend import blend
    from dti.concepts.concept import Concept
    from dti.core.files import save_images, write_json
    from dti.core.images import grid
    from dti.evaluation.scorers.mini import MiniJudgeScorer
    from dti.mini import world
    from dti.use.loading import load, unload

    out = Path(args.out)
    pipe = load_pipe(args.threads)
    scorer = MiniJudgeScorer()
    known = {x.name: x for x in world.subjects()}
    weights = [i / (args.weights - 1) for i in range(args.weights)]
    seeds = list(range(args.seeds))
    saved = json.loads((out / "blend.json").read_text()) if (out / "blend.json").exists() else None
    if saved and (saved["weights"] != weights or saved["seeds"] != seeds):
        sys.exit(f"error: {out / 'blend.json'} was made with other weights or seeds; remove it or match them")
    rows = saved["rows"] if saved else []
    pairs = saved["pairs"] if saved else []
    for pair in args.pairs:
        if pair in pairs:
            print(f"blend {pair}: done, skipped", flush=True)
            continue
        a, b = pair.split(":")
        refs = {n: world.reference_images(known[n], 5) for n in (a, b)}
        for label, method, mode in (("DTI slerp", "dti", "slerp"), ("TI lerp", "ti", "lerp")):
            ca = Concept.load(out / "runs" / method / a / "concept.safetensors")
            cb = Concept.load(out / "runs" / method / b / "concept.safetensors")
            mix = blend(ca, cb.renamed(ca.token), weights, mode)
            tokens = [f"<mix{k}>" for k in range(len(weights))]
            for concept, token in zip(mix.concepts, tokens):
                load(pipe, concept.renamed(token))
            try:
                jobs = [(k, seed) for k in range(len(weights)) for seed in seeds]
                images = generate(pipe, [f"a {tokens[k]}" for k, _ in jobs], [seed for _, seed in jobs])
            finally:
                for token in tokens:
                    unload(pipe, token)
            sim_a = scorer.image_similarity(images, refs[a])
            sim_b = scorer.image_similarity(images, refs[b])
            for (k, seed), sa, sb in zip(jobs, sim_a, sim_b):
                rows.append({"pair": pair, "path": label, "weight": weights[k], "seed": seed, "sim_a": sa, "sim_b": sb})
            columns = [[images[k * len(seeds) + r] for r in range(min(4, len(seeds)))] for k in range(len(weights))]
            g = grid([[col[r] for col in columns] for r in range(len(columns[0]))], col_labels=[f"{w:.2f}" for w in weights])
            save_images([(g, out / "blend" / f"{a}-{b}-{label.replace(' ', '-')}.png", {})])
            print(f"blend {pair} {label} done", flush=True)
        pairs.append(pair)
        write_json(out / "blend.json", {"weights": weights, "seeds": seeds, "pairs": pairs, "rows": rows})


def _records(out: Path) -> tuple[list[dict], dict[str, dict]]:
    records, meta = [], {}
    for marker in sorted((out / "subjects").glob("*.json")):
        meta[marker.stem] = json.loads(marker.read_text())
        records += [json.loads(line) for line in (out / "subjects" / f"{marker.stem}.jsonl").read_text().splitlines()]
    return records, meta


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _by(records: Sequence[dict], method: str, key: str) -> dict[tuple, float]:
    return {(r["subject"], r["prompt_index"], r["seed"]): r["scores"][key] for r in records if r["method"] == method}


def summarize(records: Sequence[dict], meta: dict[str, dict]) -> dict[str, Any]:
    """Means with intervals over images and over subject means; paired DTI - X differences both ways."""
    from dti.evaluation.stats import bootstrap, paired_difference

    subjects = sorted(meta)
    present = [m for m in KNOWN if any(r["method"] == m for r in records)]
    summary: dict[str, Any] = {"methods": {}, "differences": {}, "by_kind": {}, "ceiling": {}}
    for method in present:
        row = {}
        for key in ("mini.text", "mini.image"):
            vals = _by(records, method, key)
            if not vals:
                continue
            per_subject = [_mean([v for k, v in vals.items() if k[0] == s]) for s in sorted({k[0] for k in vals})]
            row[key] = {"images": bootstrap(list(vals.values())).as_dict(), "subjects": bootstrap(per_subject).as_dict()}
        infos = [meta[s]["methods"][method] for s in subjects if method in meta[s]["methods"]]
        norms = [i["norm_over_mean"] for i in infos if "norm_over_mean" in i]
        secs = [i["train_seconds"] for i in infos if "train_seconds" in i]
        row["norm_over_mean"] = _mean(norms) if norms else None
        row["train_seconds"] = _mean(secs) if secs else None
        row["subjects"] = len(infos)
        summary["methods"][method] = row
    pairs = [("dti", other) for other in present if other != "dti"]
    pairs += [(added, "ti") for added in present if added in ADDED]  # the added methods against TI as well
    if "dti+lora" in present:  # issue 21: the fixed-norm word beside a LoRA against the other words beside one
        pairs += [("dti+lora", other) for other in present if other in LORA_METHODS and other != "dti+lora"]
    for first, other in pairs:
        diff = {}
        for key in ("mini.text", "mini.image"):
            d, o = _by(records, first, key), _by(records, other, key)
            keys = sorted(set(d) & set(o))
            if not keys:
                continue
            both = sorted({k[0] for k in keys})
            sd = [_mean([d[k] for k in keys if k[0] == s]) for s in both]
            so = [_mean([o[k] for k in keys if k[0] == s]) for s in both]
            diff[key] = {
                "images": paired_difference([d[k] for k in keys], [o[k] for k in keys]).as_dict(),
                "subjects": paired_difference(sd, so).as_dict(),
                "per_subject": dict(zip(both, [a - b for a, b in zip(sd, so)])),
            }
        if diff:
            summary["differences"][f"{first} - {other}"] = diff
    kinds = sorted({r["prompt_kind"] for r in records})
    for kind in kinds:
        sub = [r for r in records if r["prompt_kind"] == kind]
        entry = {}
        for method in present:
            vals = [r["scores"]["mini.text"] for r in sub if r["method"] == method]
            entry[method] = sum(vals) / len(vals) if vals else None
        d, t = _by(sub, "dti", "mini.text"), _by(sub, "ti", "mini.text")
        keys = sorted(set(d) & set(t))
        if keys:  # a run without TI (the quantization smoke) has no DTI - TI
            entry["dti - ti"] = paired_difference([d[k] for k in keys], [t[k] for k in keys]).as_dict()
        ceil = [v for s in subjects for v, k in zip(meta[s]["ceiling"]["text"], meta[s]["ceiling"]["prompt_kind"]) if k == kind]
        entry["ceiling"] = sum(ceil) / len(ceil)
        entry["images_per_method"] = len(keys) if keys else len(d)
        summary["by_kind"][kind] = entry
    summary["ceiling"] = {
        "text": bootstrap([v for s in subjects for v in meta[s]["ceiling"]["text"]]).as_dict(),
        "image": bootstrap([v for s in subjects for v in meta[s]["ceiling"]["image"]]).as_dict(),
    }
    return summary


def row_cosines(out: Path, methods: Sequence[str], subjects: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each trained method's learned rows against full-precision DTI's, subject by subject: cosine of the
    directions (1 = the same word). Answers whether a quantized base learns the same word, not only an
    equally good one."""
    import torch

    from dti.concepts.concept import Concept

    def flat(concept: Concept, what: str = "directions") -> torch.Tensor:
        """Every encoder's unit rows (or initializer rows) as one vector, in a fixed order."""
        return torch.cat([getattr(concept.encoders[e], what).flatten() for e in sorted(concept.encoders)]).double()

    cosines: dict[str, dict[str, Any]] = {}
    for method in methods:
        if method == "dti" or method not in TRAINED:
            continue
        per: dict[str, float] = {}
        for subject in subjects:
            ours, ref = (out / "runs" / m / subject / "concept.safetensors" for m in (method, "dti"))
            if not (ours.exists() and ref.exists()):
                continue
            a, b = Concept.load(ours), Concept.load(ref)
            per[subject] = float(torch.nn.functional.cosine_similarity(flat(a), flat(b), dim=0))
        if per:
            cosines[method] = {"mean": _mean(list(per.values())), "min": min(per.values()), "per_subject": per}
    if cosines:  # the scale: how far full-precision DTI moved from its initializer
        per = {}
        for subject in subjects:
            ref = Concept.load(out / "runs" / "dti" / subject / "concept.safetensors")
            if all(v.init is not None for v in ref.encoders.values()):
                per[subject] = float(torch.nn.functional.cosine_similarity(flat(ref, "init"), flat(ref), dim=0))
        if per:
            cosines["initializer (scale)"] = {"mean": _mean(list(per.values())), "min": min(per.values()), "per_subject": per}
    return cosines


def blend_summary(data: dict) -> dict[str, Any]:
    """Per path and weight: similarity to A and to B with intervals over pairs x seeds; at the middle,
    the paired DTI - TI difference of min(sim A, sim B) (a blend that is both, not one or the other)."""
    from dti.evaluation.stats import bootstrap, paired_difference

    rows = data["rows"]
    out: dict[str, Any] = {"curves": {}, "middle": {}}
    for path in ("DTI slerp", "TI lerp"):
        out["curves"][path] = [
            {
                "weight": w,
                "sim_a": bootstrap([r["sim_a"] for r in rows if r["path"] == path and r["weight"] == w]).as_dict(),
                "sim_b": bootstrap([r["sim_b"] for r in rows if r["path"] == path and r["weight"] == w]).as_dict(),
            }
            for w in data["weights"]
        ]
    mid = data["weights"][len(data["weights"]) // 2]

    def both(path: str) -> dict[tuple, float]:
        return {(r["pair"], r["seed"]): min(r["sim_a"], r["sim_b"]) for r in rows if r["path"] == path and r["weight"] == mid}

    d, t = both("DTI slerp"), both("TI lerp")
    keys = sorted(set(d) & set(t))
    out["middle"] = {
        "weight": mid,
        "min_sim_dti": bootstrap([d[k] for k in keys]).as_dict(),
        "min_sim_ti": bootstrap([t[k] for k in keys]).as_dict(),
        "dti - ti": paired_difference([d[k] for k in keys], [t[k] for k in keys]).as_dict(),
    }
    return out


def _fmt(i: dict) -> str:
    return f"{i['mean']:.3f} [{i['low']:.3f}, {i['high']:.3f}]"


def plot_norms(out: Path, subjects: Sequence[str], mean: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dti.training.run_folder import read_log

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    shown = (("ti", "tab:red"), ("ti-unscaled", "tab:orange"), ("crossinit", "tab:purple"), ("ti-renorm", "tab:green"), ("dti", "tab:blue"))
    for method, colour in shown:
        for k, subject in enumerate(subjects):
            folder = out / "runs" / method / subject
            if not folder.exists():
                continue
            log = read_log(folder)
            norms = [r["norms"][ENCODER][0] / mean for r in log]
            ax.plot([r["step"] for r in log], norms, color=colour, alpha=0.5, label=method if k == 0 else None)
    ax.axhline(1.0, color="0.4", linestyle="--", label="vocabulary mean")
    ax.set_xlabel("step")
    ax.set_ylabel("norm / vocabulary mean")
    ax.set_title("dti-mini: learned vector norm during training (each line a subject)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_blend(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, name in zip(axes, ("DTI slerp", "TI lerp")):
        curve = summary["curves"][name]
        w = [c["weight"] for c in curve]
        for key, colour, label in (("sim_a", "tab:blue", "similarity to A"), ("sim_b", "tab:red", "similarity to B")):
            ax.plot(w, [c[key]["mean"] for c in curve], color=colour, label=label)
            ax.fill_between(w, [c[key]["low"] for c in curve], [c[key]["high"] for c in curve], color=colour, alpha=0.2)
        ax.set_title(name)
        ax.set_xlabel("weight (0 = A, 1 = B)")
    axes[0].set_ylabel("judge similarity (95% interval)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(summary: dict, settings: dict, blend: dict | None, subjects: Sequence[str]) -> str:
    m = summary["methods"]
    lines = [
        "| method | text fidelity (images) | text (subject means) | subject similarity (images) | image (subject means) "
        "| final norm / mean | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, row in m.items():
        if "mini.text" not in row:
            continue
        norm = "-" if row["norm_over_mean"] is None else f"{row['norm_over_mean']:.2f}"
        secs = "-" if row["train_seconds"] is None else f"{row['train_seconds']:.0f}"
        lines.append(
            f"| {method} | {_fmt(row['mini.text']['images'])} | {_fmt(row['mini.text']['subjects'])} | "
            f"{_fmt(row['mini.image']['images'])} | {_fmt(row['mini.image']['subjects'])} | {norm} | {secs} |"
        )
    c = summary["ceiling"]
    lines.append(f"| judge on clean renders (ceiling) | {_fmt(c['text'])} | | {_fmt(c['image'])} | | | |")
    lines += [
        "",
        "Paired differences (95% bootstrap; images = subject x prompt x seed, subjects = subject means):",
        "",
        "| difference | text (images) | text (subjects) | image (images) | image (subjects) |",
        "|---|---|---|---|---|",
    ]
    for name, d in summary["differences"].items():
        lines.append(
            f"| {name} | {_fmt(d['mini.text']['images'])} | {_fmt(d['mini.text']['subjects'])} | "
            f"{_fmt(d['mini.image']['images'])} | {_fmt(d['mini.image']['subjects'])} |"
        )
    cos = summary.get("row_cosine_to_dti") or {}
    if cos:
        lines += [
            "",
            "Learned rows' cosine to full-precision DTI's (same subject, seed and photos; directions):",
            "",
            "| method | mean over subjects | lowest subject | per subject |",
            "|---|---|---|---|",
        ]
        for name, c in cos.items():
            each = ", ".join(f"{s} {v:.4f}" for s, v in c["per_subject"].items())
            lines.append(f"| {name} | {c['mean']:.4f} | {c['min']:.4f} | {each} |")
    key = "dti - ti" if "dti - ti" in summary["differences"] else next(iter(summary["differences"]), None)
    per = summary["differences"].get(key) if key else None
    if per is not None:
        lines += [
            "",
            f"{key.upper()} per subject (text / image): "
            + ", ".join(f"{s} {v:+.3f} / {per['mini.image']['per_subject'][s]:+.3f}" for s, v in per["mini.text"]["per_subject"].items()),
        ]
    lines += [
        "",
        "Text fidelity by prompt kind:",
        "",
        "| prompt kind | images per method | " + " | ".join(m) + " | DTI - TI | judge ceiling |",
        "|---|---|" + "---|" * len(m) + "---|---|",
    ]
    for kind, e in summary["by_kind"].items():
        vals = " | ".join("-" if e.get(x) is None else f"{e[x]:.3f}" for x in m)
        gap = _fmt(e["dti - ti"]) if "dti - ti" in e else "-"
        lines.append(f"| {kind} | {e['images_per_method']} | {vals} | {gap} | {e['ceiling']:.3f} |")
    if blend:
        lines += [
            "",
            "Blend (similarity to A / to B; mean [95% interval] over pairs x seeds):",
            "",
            "| weight | DTI slerp: A | DTI slerp: B | TI lerp: A | TI lerp: B |",
            "|---|---|---|---|---|",
        ]
        for d, t in zip(blend["curves"]["DTI slerp"], blend["curves"]["TI lerp"]):
            lines.append(f"| {d['weight']:.2f} | {_fmt(d['sim_a'])} | {_fmt(d['sim_b'])} | {_fmt(t['sim_a'])} | {_fmt(t['sim_b'])} |")
        mid = blend["middle"]
        lines += [
            "",
            f"At weight {mid['weight']:.2f}, min(sim A, sim B): DTI slerp {_fmt(mid['min_sim_dti'])}, TI lerp {_fmt(mid['min_sim_ti'])}, "
            f"paired DTI - TI {_fmt(mid['dti - ti'])}.",
        ]
    return "\n".join(lines) + "\n"


def save_grids(out: Path, records: Sequence[dict], subject: str, docs: Path, rows: int = 8) -> None:
    """One image grid per method for ``subject``: its first ``rows`` prompts x every seed."""
    from PIL import Image

    from dti.core.files import save_images
    from dti.core.images import grid

    for method in KNOWN:
        mine = [r for r in records if r["method"] == method and r["subject"] == subject and r["prompt_index"] < rows]
        if not mine:
            continue
        seeds = sorted({r["seed"] for r in mine})
        prompts = sorted({r["prompt_index"] for r in mine})
        cell = {(r["prompt_index"], r["seed"]): r["image"] for r in mine}
        labels = [next(r["prompt"] for r in mine if r["prompt_index"] == i) for i in prompts]
        images = [[Image.open(out / cell[i, seed]).convert("RGB") for seed in seeds] for i in prompts]
        g = grid(images, row_labels=labels, col_labels=[f"seed {x}" for x in seeds])
        save_images([(g, docs / f"grid-{method}-{subject}.png", {})])


def cmd_report(args: argparse.Namespace) -> None:
    from dti.core.files import write_json, write_text

    out = Path(args.out)
    settings = json.loads((out / "settings.json").read_text())
    records, meta = _records(out)
    if not records:
        sys.exit(f"error: {out} holds no finished subject; run `benchmarks/mini.py run --out {out}` first")
    subjects = sorted(meta)
    summary = summarize(records, meta)
    summary["row_cosine_to_dti"] = row_cosines(out, list(summary["methods"]), subjects)
    blend = blend_summary(json.loads((out / "blend.json").read_text())) if (out / "blend.json").exists() else None
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    plot_norms(out, subjects, settings["vocab_mean_norm"], docs / "norms.png")
    if blend:
        plot_blend(blend, docs / "blend.png")
        for path in sorted((out / "blend").glob("*.png")):
            shutil.copyfile(path, docs / f"blend-{path.name}")
    save_grids(out, records, subjects[0] if args.grid_subject not in subjects else args.grid_subject, docs)
    results = Path(args.results)
    body = markdown(summary, settings, blend, subjects)
    head = (
        f"# dti-mini: TI vs DTI ({len(subjects)} subjects: {', '.join(subjects)})\n\n"
        f"`{' '.join(sys.argv)}` on {platform.machine()}, torch threads {args.threads or 'default'}, {time.strftime('%Y-%m-%d')}. "
        f"{settings['steps']} steps, batch 4, {settings['prompts_per_subject']} prompts x {len(settings['seeds'])} seeds per subject; "
        f"TI lr {settings['ti_lr']:.4f} per sample (factor {settings['ti_lr_factor']:.2f}), "
        f"TI-unscaled lr {settings['ti_unscaled_lr']}.\n\n"
    )
    write_text(results / f"{args.name}.md", head + body)
    write_json(results / f"{args.name}.json", {"settings": settings, "summary": summary, "blend": blend, "subjects": meta})
    write_text(results / f"{args.name}.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    try:
        from dti.evaluation.report import write_report
        from dti.evaluation.scorers.mini import MiniJudgeScorer
    except ImportError:
        print("dti.evaluation.report is not there: left the JSONL and images for the lead to render", flush=True)
    else:
        write_report(records, {"mini": MiniJudgeScorer().info}, out / "report", "dti-mini: TI vs DTI", settings, [("Details", body)])
        print(f"report: {out / 'report' / 'report.html'}", flush=True)
    print(head + body)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="learn and score subjects")
    r.add_argument("--subjects", nargs="*", default=None, help="subject names (default: all 11)")
    r.add_argument("--steps", type=int, default=400, help="training steps (the paper's 400)")
    r.add_argument("--prompts", type=int, default=16, help="compositional prompts per subject")
    r.add_argument("--seeds", type=int, default=4)
    r.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated, of {', '.join(KNOWN)} [default: {','.join(METHODS)}; with --lora {','.join(LORA_DEFAULT)}]",
    )
    r.add_argument("--lora", type=int, default=0, metavar="RANK", help="the rank of the +lora methods' LoRA (issue 21)")
    r.add_argument("--lora-lr", type=float, default=1e-4, help="the +lora methods' LoRA learning rate")
    b = sub.add_parser("blend", help="DTI slerp vs TI lerp between learned subjects")
    b.add_argument("--pairs", nargs="*", default=list(DEFAULT_PAIRS), help="A:B subject pairs")
    b.add_argument("--seeds", type=int, default=8)
    b.add_argument("--weights", type=int, default=7, help="points along the path, ends included")
    rep = sub.add_parser("report", help="tables, intervals and plots from a finished run")
    rep.add_argument("--name", default=f"mini-{time.strftime('%Y-%m-%d')}", help="benchmarks/results/<name>.{md,json,jsonl}")
    rep.add_argument("--results", default="benchmarks/results")
    rep.add_argument("--docs", default="docs/benchmarks/mini")
    rep.add_argument("--grid-subject", default="coral", help="the subject whose images are shown as grids")
    for q in (r, b, rep):
        q.add_argument("--out", default="runs/mini", help="the run's working folder")
        q.add_argument("--threads", type=int, default=1, help="torch threads (1: the shared 2-core machine)")
    args = p.parse_args(argv)
    {"run": cmd_run, "blend": cmd_blend, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    main()
