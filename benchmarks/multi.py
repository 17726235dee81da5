"""K concepts trained at once in one process (dti.training.multi) against K sequential runs (issue 12, part 3).

    python benchmarks/multi.py [--family sd,sdxl] [--ks 1,2,4,8] [--device cpu|cuda] [--full]
        [--batch N] [--resolution PX] [--precision auto|fp32|bf16|fp16] [--steps N] [--warmup N]
        [--reps N] [--threads N] [--mixes batch,group] --json OUT [--md OUT]

For each family and each K: K subjects (noise photos of exactly the resolution, different per
subject, so after the warm-up every crop's latents are cached: the steady-state step), each with
its own seed and the same settings (method dti, per-concept batch ``--batch``):

- sequential: K ordinary :class:`~dti.training.loop.Trainer` runs one after another on the loaded model,
  each ``--steps`` steps after ``--warmup`` (what K `dti train` runs do, less their K model loads:
  the load is timed once and reported apart, ``load_s``);
- batch: one :class:`~dti.training.multi.MultiTrainer` step = one denoiser pass over the K concepts'
  batches stacked (K x ``--batch`` samples), per-sample losses, one backward, K optimizer steps;
- group: one MultiTrainer step = K loss calls and backwards (bit-identical to K single runs).

Throughput is concept-steps per second (K x steps / seconds). Each repetition runs the modes in an
order rotated by one (so load on a shared machine hits all alike); the medians are reported. The
rows each mode ends with are compared with the sequential runs' (``max_row_diff``: the same steps
from the same start, so 0 for group and ~1e-8 for batch on CPU). Tiny pipelines by default
(``dti.testing``); ``--full`` builds the full-size architecture with random weights
(``benchmarks/full_configs.py``). Timed here, never in tests.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch
from PIL import Image

HERE = Path(__file__).resolve().parent


def subject_photos(root: Path, k: int, resolution: int) -> Path:
    folder = root / f"subject-{k}"
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(1000 + k)
    for i in range(4):
        pixels = (torch.rand(resolution, resolution, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return folder


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Subjects:
    """K trainers' configs and photos (built once per K; trainers are made fresh per timing)."""

    def __init__(self, args: argparse.Namespace, adapter: Any, k: int, root: Path) -> None:
        from dti.training.config import TrainConfig, resolve
        from dti.training.data import load_photos

        self.adapter = adapter
        self.configs, self.photos = [], []
        for i in range(k):
            folder = subject_photos(root, i, args.resolution)
            c = TrainConfig(
                photos=str(folder),
                token=f"<s{i}>",
                init="dog",
                model="bench",
                batch_size=args.batch,
                resolution=args.resolution,
                seed=i,
                progress=False,
                validate=False,
            )
            self.configs.append(resolve(c, adapter.defaults, adapter.native_resolution()))
            self.photos.append(load_photos(folder))

    def trainer(self, i: int) -> Any:
        from dti.training.loop import Trainer

        t = Trainer(self.configs[i], self.adapter, self.photos[i], None)
        t.setup()
        return t


def rows(t: Any) -> dict[str, torch.Tensor]:
    return {name: r.param.detach().float().cpu().clone() for name, r in t.rows.items()}


def timed(step: Any, args: argparse.Namespace, device: torch.device) -> float:
    """Seconds of ``args.steps`` calls of ``step`` after ``args.warmup`` untimed ones."""
    for _ in range(args.warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    return time.perf_counter() - t0


def time_sequential(s: Subjects, args: argparse.Namespace, device: torch.device) -> tuple[float, list[dict[str, torch.Tensor]]]:
    """Seconds of the K runs' timed steps (each run's warm-up untimed), and each run's final rows."""
    total, finals = 0.0, []
    for i in range(len(s.configs)):
        t = s.trainer(i)
        total += timed(t.step, args, device)
        finals.append(rows(t))
        t.detach()
    return total, finals


def time_multi(s: Subjects, args: argparse.Namespace, device: torch.device, mix: str) -> tuple[float, list[dict[str, torch.Tensor]]]:
    from dti.training.multi import MultiTrainer

    trainers = [s.trainer(i) for i in range(len(s.configs))]
    multi = MultiTrainer(trainers, [f"s{i}" for i in range(len(trainers))], mix)
    try:
        return timed(multi.step, args, device), [rows(t) for t in trainers]
    finally:
        multi.detach()


def max_diff(a: Sequence[dict[str, torch.Tensor]], b: Sequence[dict[str, torch.Tensor]]) -> float:
    return max(float((x[n] - y[n]).abs().max()) for x, y in zip(a, b) for n in x)


def machine(device: torch.device) -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


def run_family(family: str, args: argparse.Namespace, device: torch.device, work: Path) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    from step import build_pipe

    from dti.core.devices import resolve_dtype
    from dti.models import adapter_for
    from dti.training.multi import per_sample_losses

    dtype = resolve_dtype(args.precision, device)
    pipe, times = build_pipe(argparse.Namespace(tiny=not args.full, family=family), dtype, device, work)
    adapter = adapter_for(pipe)
    mixes = [m for m in args.mixes if m != "batch" or per_sample_losses(adapter)]
    skipped = sorted(set(args.mixes) - set(mixes))
    out: dict[str, Any] = {"family": family, "size": "full" if args.full else "tiny", "dtype": str(dtype), **times, "by_k": []}
    if skipped:
        out["not_run"] = {m: "the adapter's loss has no reduction='none' (the models/ diff)" for m in skipped}
    for k in args.ks:
        s = Subjects(args, adapter, k, work / family / f"k{k}")
        modes = ["sequential", *mixes]
        seconds: dict[str, list[float]] = {m: [] for m in modes}
        finals: dict[str, Any] = {}
        load = [os.getloadavg()[0]]
        for rep in range(args.reps):
            order = modes[rep % len(modes) :] + modes[: rep % len(modes)]
            for mode in order:
                took, end = time_sequential(s, args, device) if mode == "sequential" else time_multi(s, args, device, mode)
                seconds[mode].append(took)
                finals[mode] = end
            load.append(os.getloadavg()[0])
        median = {m: statistics.median(v) for m, v in seconds.items()}
        rate = {m: k * args.steps / median[m] for m in modes}
        best = {m: k * args.steps / min(v) for m, v in seconds.items()}  # the least disturbed repetition
        row = {
            "k": k,
            "samples_per_step": {"sequential": args.batch, **{m: k * args.batch if m == "batch" else args.batch for m in mixes}},
            "seconds": seconds,
            "concept_steps_per_s": rate,
            "speedup_vs_sequential": {m: rate[m] / rate["sequential"] for m in mixes},
            "best_concept_steps_per_s": best,
            "best_speedup_vs_sequential": {m: best[m] / best["sequential"] for m in mixes},
            "max_row_diff_vs_sequential": {m: max_diff(finals[m], finals["sequential"]) for m in mixes},
            "load_average_1min": load,
        }
        out["by_k"].append(row)
        shown = ", ".join(f"{m} {rate[m]:.2f}" for m in modes)
        print(f"{family} K={k}: concept-steps/s {shown}", flush=True)
    del pipe, adapter
    return out


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    where = m["gpu"] or f"{m['cpu_count']} CPU cores, {m['torch_threads']} torch threads"
    lines = [
        f"# K concepts at once vs K sequential runs ({result['date']})",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {where}; {m['platform']}; torch {m['torch']}  ",
        f"Settings: per-concept batch {result['settings']['batch']}, resolution {result['settings']['resolution']}, "
        f"{result['settings']['steps']} timed steps after {result['settings']['warmup']} warm-up, "
        f"median of {result['settings']['reps']} rotated repetitions; method dti (RiemannianSGD)",
        "",
    ]
    for fam in result["families"]:
        lines += [
            f"## {fam['family']} ({fam['size']}, {fam['dtype']}; model load {fam.get('load_s', 0):.2f} s, paid once instead of K times)",
            "",
        ]
        mixes = list(fam["by_k"][0]["speedup_vs_sequential"])
        head = "| K | sequential c-steps/s | " + " | ".join(f"{x} c-steps/s | {x} speed-up (best rep) | {x} max row diff" for x in mixes)
        lines += [head + " | load avg (1 min) |", "|---|---|" + "---|---|---|" * len(mixes) + "---|"]
        for r in fam["by_k"]:
            rate, sp, diff = r["concept_steps_per_s"], r["speedup_vs_sequential"], r["max_row_diff_vs_sequential"]
            bsp = r["best_speedup_vs_sequential"]
            cells = " | ".join(f"{rate[x]:.2f} | {sp[x]:.2f}x ({bsp[x]:.2f}x) | {diff[x]:.1e}" for x in mixes)
            load = r["load_average_1min"]
            lines.append(f"| {r['k']} | {rate['sequential']:.2f} | {cells} | {min(load):.1f}-{max(load):.1f} |")
        lines += ["", "c-steps/s: concept-steps per second, median over the repetitions; (best rep): ratio of the fastest repetitions."]
        if fam.get("not_run"):
            lines.append("")
            lines += [f"Not run: {k} ({v})." for k, v in fam["not_run"].items()]
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="sd,sdxl", help="comma-separated families (dti.testing builders / full_configs)")
    p.add_argument("--ks", default="1,2,4,8", help="comma-separated numbers of concepts at once")
    p.add_argument("--device", default="cpu")
    p.add_argument("--full", action="store_true", help="full-size architectures with random weights instead of the tiny pipelines")
    p.add_argument("--batch", type=int, default=2, help="per-concept batch")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--precision", default="auto")
    p.add_argument("--steps", type=int, default=5, help="timed steps per concept")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--mixes", default="batch,group")
    p.add_argument("--json", required=True)
    p.add_argument("--md")
    args = p.parse_args(argv)
    args.families = [f for f in args.family.split(",") if f]
    args.ks = [int(k) for k in args.ks.split(",") if k]
    args.mixes = [m for m in args.mixes.split(",") if m]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    device = torch.device(args.device)
    result: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "command": "python benchmarks/multi.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "machine": machine(device),
        "settings": {k: getattr(args, k) for k in ("batch", "resolution", "precision", "steps", "warmup", "reps", "ks", "mixes")},
        "families": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            result["families"].append(run_family(family, args, device, Path(tmp)))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.md:
        Path(args.md).write_text(markdown(result) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
