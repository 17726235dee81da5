"""Personalization methods compared on dti-mini, scored by the mini world's judge.

    python benchmarks/mini.py [--model PATH] [--split eval] [--steps 200] [--out bench-mini]

For every subject of the split and every method (TI, DTI, TI-rescaled, CrossInit, and the paper's
ablations: AdamW at fixed norm, magnitude min / 5x mean, kappa 0 / 5x), learn the word from the
subject's 5 reference renders, generate a fixed set of compositional prompts (the token plus 1-3
other attributes) x seeds, and report text fidelity, subject similarity, final norm / vocabulary
mean and training time. Also: image grids per method, a plot of norm over steps for TI and DTI,
and a blend test between two subjects (DTI slerp vs TI lerp) scored along the path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from dti.blend import blend
from dti.config import BASE_LR
from dti.generate import interpolation_grid, interpolation_images, render
from dti.images import grid
from dti.loading import load, unload
from dti.mini import world
from dti.mini.judge import Judge
from dti.mini.model import PACKAGED
from dti.models import load_adapter
from dti.run_folder import read_log
from dti.tokens import vocab_stats
from dti.trainer import train

GUIDANCE = 4.0
KAPPA = 1e-4


def methods(mean: float, ti_lr: float | None = None) -> dict[str, dict]:
    """Method name -> training settings (None for methods that reuse another's vectors).

    ``ti_lr`` overrides the AdamW learning rate of the unconstrained methods (TI, CrossInit): an
    Adam step moves each coordinate by about the learning rate, so how far TI's norm can run away in
    a fixed number of steps depends on the base model's embedding scale, not on the method."""
    free = {} if ti_lr is None else {"lr": ti_lr}
    return {
        "TI": dict(method="ti", **free),
        "DTI": dict(method="dti"),
        "TI-rescaled": None,  # the TI vectors, rescaled to the vocabulary mean at load time
        "CrossInit": dict(method="crossinit", **free),
        "AdamW fixed norm": dict(method="dti", optimizer="adamw"),
        "DTI magnitude min": dict(method="dti", magnitude="min"),
        "DTI magnitude 5x mean": dict(method="dti", magnitude=str(5 * mean)),
        "DTI kappa 0": dict(method="dti", kappa=0.0),
        "DTI kappa 5x": dict(method="dti", kappa=5 * KAPPA),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(PACKAGED))
    p.add_argument("--split", default="eval", choices=("dev", "eval"))
    p.add_argument("--steps", type=int, default=200, help="training steps (the paper's 400, halved for the small model)")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--sampler-steps", type=int, default=20)
    p.add_argument("--only", nargs="*", default=None, help="run only these methods")
    p.add_argument("--ti-lr", type=float, default=None, help=f"TI's and CrossInit's per-sample AdamW lr (default {BASE_LR['adamw']})")
    p.add_argument("--out", default="bench-mini")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.ti_lr is not None and args.ti_lr <= 0:
        p.error(f"--ti-lr {args.ti_lr}: must be a positive learning rate, e.g. 0.17")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = load_adapter(args.model, torch.float32, "cpu", quiet=True).pipe
    judge = Judge.load()
    mean = vocab_stats(pipe.text_encoder_2.get_input_embeddings().weight).mean
    table = methods(mean, args.ti_lr)
    if args.only:
        table = {k: v for k, v in table.items() if k in args.only or (k == "TI-rescaled" and "TI" in args.only)}
    subjects = world.subjects(args.split)
    results: dict[str, list[dict]] = {name: [] for name in table}
    concepts: dict[tuple[str, str], object] = {}
    runs = Path(tempfile.mkdtemp(prefix="bench-mini-"))
    for subject in subjects:
        photos = runs / "photos" / subject.name
        photos.mkdir(parents=True)
        refs = world.reference_images(subject, 5)
        for i, im in enumerate(refs):
            im.save(photos / f"{i:02d}.png")
        token = f"<{subject.name}>"
        prompts = world.compositional_prompts(token, subject.shape, args.prompts, seed=0)
        for name, settings in table.items():
            t0 = time.perf_counter()
            if settings is None:
                concept, rescale, seconds = concepts[("TI", subject.name)], "mean", 0.0
            else:
                run = runs / name.replace(" ", "-") / subject.name
                concept = train(photos, token, subject.shape, pipe, run, steps=args.steps, validate=False, progress=False, **settings)
                rescale, seconds = None, time.perf_counter() - t0
                if name in ("TI", "DTI"):
                    (out / "logs").mkdir(exist_ok=True)
                    (out / "logs" / f"{name}-{subject.name}.json").write_text(json.dumps(read_log(run)))
            concepts[(name, subject.name)] = concept
            attached = load(pipe, concept, rescale=rescale)
            norm = float(attached.encoders["text_encoder_2"].norms.mean())
            images, fid, sim = [], [], []
            try:
                for prompt, spec in prompts:
                    row = [render(pipe, prompt, s, args.sampler_steps, GUIDANCE, None) for s in range(args.seeds)]
                    images.append(row)
                    fid += judge.text_fidelity(row, spec)
                    sim += judge.subject_similarity(row, refs)
            finally:
                unload(pipe, token)
            results[name].append(
                {
                    "subject": subject.name,
                    "text_fidelity": statistics.mean(fid),
                    "subject_similarity": statistics.mean(sim),
                    "norm_over_mean": norm / mean,
                    "train_seconds": seconds,
                }
            )
            (out / "grids").mkdir(exist_ok=True)
            grid(images, row_labels=[pr for pr, _ in prompts], col_labels=[f"seed {s}" for s in range(args.seeds)]).save(
                out / "grids" / f"{name.replace(' ', '-')}-{subject.name}.png"
            )
            print(
                f"{subject.name:10s} {name:22s} fidelity {statistics.mean(fid):.3f} similarity {statistics.mean(sim):.3f} "
                f"norm/mean {norm / mean:.2f} ({seconds:.0f} s)",
                flush=True,
            )
    summary = {
        name: {k: statistics.mean(r[k] for r in rows) for k in ("text_fidelity", "subject_similarity", "norm_over_mean", "train_seconds")}
        for name, rows in results.items()
        if rows
    }
    lines = [
        f"# dti-mini benchmark ({args.split} subjects: {', '.join(s.name for s in subjects)})",
        "",
        f"`{' '.join(sys.argv)}` on {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d')}. {args.steps} steps, batch 4; {args.prompts} prompts x {args.seeds} seeds per subject.",
        "",
        "| method | text fidelity | subject similarity | final norm / vocab mean | train time |",
        "|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['text_fidelity']:.3f} | {s['subject_similarity']:.3f} | "
            f"{s['norm_over_mean']:.2f} | {s['train_seconds']:.0f} s |"
        )
    if "TI" in table and "DTI" in table and len(subjects) >= 2:
        lines += ["", *blend_test(pipe, judge, concepts, subjects[:2], out, args.sampler_steps)]
    if "TI" in table and "DTI" in table:
        plot_norms(out, subjects, mean)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"summary": summary, "per_subject": results}, indent=2))
    print("\n".join(lines))


def blend_test(pipe, judge, concepts, pair, out: Path, sampler_steps: int) -> list[str]:
    """Judge scores along DTI slerp and TI lerp paths between two subjects."""
    a, b = pair
    refs = {s.name: world.reference_images(s, 5) for s in pair}
    weights = [i / 6 for i in range(7)]
    lines = [
        f"## Blend `<{a.name}>` -> `<{b.name}>` (similarity to A / to B, mean of 4 seeds)",
        "",
        "| weight | DTI slerp | TI lerp |",
        "|---|---|---|",
    ]
    scores = {}
    for label, method, mode in (("DTI slerp", "DTI", "slerp"), ("TI lerp", "TI", "lerp")):
        ca, cb = concepts[(method, a.name)], concepts[(method, b.name)]
        mix = blend(ca, cb.renamed(ca.token), weights, mode)
        columns = interpolation_images(pipe, mix, "a {}", range(4), sampler_steps, GUIDANCE)
        interpolation_grid(columns, weights, range(4)).save(out / f"blend-{label.replace(' ', '-')}.png")
        scores[label] = [
            (statistics.mean(judge.subject_similarity(c, refs[a.name])), statistics.mean(judge.subject_similarity(c, refs[b.name])))
            for c in columns
        ]
    for i, w in enumerate(weights):
        d, t = scores["DTI slerp"][i], scores["TI lerp"][i]
        lines.append(f"| {w:.2f} | {d[0]:.2f} / {d[1]:.2f} | {t[0]:.2f} / {t[1]:.2f} |")
    return lines


def plot_norms(out: Path, subjects, mean: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for method, colour in (("TI", "tab:red"), ("DTI", "tab:blue")):
        for k, subject in enumerate(subjects):
            log = json.loads((out / "logs" / f"{method}-{subject.name}.json").read_text())
            ax.plot(
                [r["step"] for r in log],
                [r["norms"]["text_encoder_2"][0] / mean for r in log],
                color=colour,
                alpha=0.7,
                label=method if k == 0 else None,
            )
    ax.axhline(1.0, color="0.4", linestyle="--", label="vocabulary mean")
    ax.set_xlabel("step")
    ax.set_ylabel("norm / vocabulary mean")
    ax.set_title("dti-mini: learned vector norm during training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "norms.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
