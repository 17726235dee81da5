"""``--vram``'s presets measured on a card: peak device memory and step time of each preset (issue 20).

    python benchmarks/gpu_vram.py --device cuda --json OUT.json                 # the default cases (GPU, ~6 min)
    python benchmarks/gpu_vram.py --device cpu --tiny --cases sd:8 --json OUT   # the smoke run (CPU, seconds)

For each ``family:card`` case, the library's ``--vram`` choice at the family's defaults
(``dti.training.memory.choose`` on the full-size profile ``benchmarks/memory.py --presets`` prints) is
applied to a full-size pipeline with RANDOM weights (``benchmarks/full_configs.py``, built in bf16 on
the device, then handed to ``dti.train`` as a caller would: quantized and offloaded by the run, its
full-precision weights parked in host memory; so the card must hold the whole bf16 pipeline once,
HiDream-I1's 57 GiB, before the run's setup). After the run's setup the device's peak
statistics are reset; ``torch.cuda.max_memory_allocated`` over the steps is the number to set against
the estimate, and the median time between launched steps (synchronized) the cost. A case that does
not fit the card it was chosen for still runs on the bigger one this runs on: the point is the
measured peak against the estimate, and each case has its own time limit in gpu_step.sh.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

#: family:card; the issue's targets
CASES = ("sdxl:8", "sana:12", "flux2_klein:12", "flux:16", "flux:12", "qwenimage:24", "hidream:24")


def run_case(family: str, card: int, device: str, steps: int, tiny: bool, workdir: Path) -> dict[str, Any]:
    import memory as bench
    from step import synthetic_photos

    import dti
    from dti.models import ADAPTERS
    from dti.training.loop import Trainer
    from dti.training.memory import Setup, activations_for, choose, estimate

    prof = bench.profile(family)
    cls = next(c for c in ADAPTERS.values() if c.family == prof.family)
    ref = activations_for(prof)
    d = cls.defaults
    setup = Setup(
        resolution=int(d.get("resolution") or ref[0]), batch_size=int(d.get("batch_size", 4)), grad_accum=int(d.get("grad_accum", 1))
    )
    choice = choose(prof, setup, card, set())
    settings = {**{"resolution": setup.resolution, "batch_size": setup.batch_size, "grad_accum": setup.grad_accum}, **choice.changed}
    est = estimate(prof, Setup(**{**setup.__dict__, **choice.changed}), ref)
    if tiny:
        from dti.testing import build_tiny

        folder = workdir / f"tiny-{family}"
        build_tiny(family, folder)
        from dti.models import load_adapter

        pipe = load_adapter(folder).pipe
        settings["resolution"] = 64
    else:
        from full_configs import build_pipeline

        pipe = build_pipeline(family, torch.bfloat16, device)  # random init on the card: seconds, where the host takes minutes
    photos = workdir / f"photos-{family}"
    photos.mkdir(parents=True, exist_ok=True)
    for k, photo in enumerate(synthetic_photos(4, settings["resolution"])):
        photo.save(photos / f"{k}.png")
    # handed in on the device, as a caller's pipeline is; quantizing parks the full-precision weights in host memory and
    # offloading every block, both during the run's setup (before the peak statistics are reset)
    pipe.to(device)
    times: list[float] = []
    setup_fn, launch = Trainer.setup, Trainer.launch

    def after_setup(self: Trainer) -> None:
        setup_fn(self)
        gc.collect()
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            out["after_setup_gib"] = torch.cuda.memory_allocated() / 2**30

    def timed(self: Trainer, step: int) -> Any:
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter())
        return launch(self, step)

    out: dict[str, Any] = {"family": family, "card": card, "settings": settings, "estimate_peak_gib": round(est.peak_gib, 2)}
    Trainer.setup, Trainer.launch = after_setup, timed
    try:
        t0 = time.perf_counter()
        dti.train(str(photos), "<bench>", "dog", model=pipe, steps=steps, validate=False, progress=False, precision="bf16", **settings)
        out["run_s"] = round(time.perf_counter() - t0, 1)
    finally:
        Trainer.setup, Trainer.launch = setup_fn, launch
    if device == "cuda":
        out["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        out["max_memory_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    out["step_ms_median"] = round(statistics.median(gaps) * 1000, 1) if gaps else None
    del pipe
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--cases", nargs="+", default=list(CASES), help="family:card, e.g. flux:12")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--tiny", action="store_true", help="the tiny test pipelines (a smoke run on CPU)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="dti-vram-") as tmp:
        for case in args.cases:
            family, card = case.split(":")
            try:
                row = run_case(family, int(card), args.device, args.steps, args.tiny, Path(tmp))
            except Exception as exc:  # one case failing (out of memory) must not lose the others
                row = {"family": family, "card": int(card), "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
            print(json.dumps(row), flush=True)
            rows.append(row)
            if args.json:
                result = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "rows": rows}
                if args.device == "cuda":
                    result["device"] = torch.cuda.get_device_name(0)
                Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
