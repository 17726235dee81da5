"""Step time of every family's tiny pipeline (``dti.testing.BUILDERS``), and the full tiny
end-to-end path on SDXL, timed.

    python benchmarks/tiny_train.py [--steps 20] [--families sd,sdxl,sd3,flux,pixart,sana] [--photos ../shared/data/dreambooth/dog]

Prints a Markdown table; paste it into benchmarks/RESULTS.md with the date and machine.
Timed here, never in tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

REPO = Path(__file__).resolve().parents[1]


def step_times(model: Path, photos: Path, steps: int, method: str) -> tuple[float, float]:
    from dti.models import load_adapter
    from dti.training.config import TrainConfig, resolve
    from dti.training.data import load_photos
    from dti.training.loop import Trainer

    adapter = load_adapter(model, quiet=True)
    config = TrainConfig(photos=str(photos), token="<t>", init="dog", model=str(model), method=method, resolution=64, progress=False)
    config = resolve(config, adapter.defaults, adapter.native_resolution())
    trainer = Trainer(config, adapter, load_photos(photos), run=None)
    trainer.setup()
    trainer.step()  # warm-up (first crops are encoded here)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.step()
        times.append(time.perf_counter() - t0)
    trainer.detach()
    return statistics.median(times), min(times)


def end_to_end(model: Path, photos: Path, out: Path, steps: int) -> float:
    """CLI train (fresh process, imports included) -> diffusers load_textual_inversion -> generate."""
    script = f"""
import torch
from diffusers import StableDiffusionXLPipeline
from dti.text.vocab import pool_at_end_token
pipe = StableDiffusionXLPipeline.from_pretrained({str(model)!r})
for f, tok, enc in [("learned_embeds.safetensors", pipe.tokenizer, pipe.text_encoder),
                    ("learned_embeds_2.safetensors", pipe.tokenizer_2, pipe.text_encoder_2)]:
    pipe.load_textual_inversion({str(out)!r} + "/" + f, tokenizer=tok, text_encoder=enc)
    pool_at_end_token(enc, tok.eos_token_id)
img = pipe("a <my-dog> in the snow", num_inference_steps=4, height=64, width=64,
           generator=torch.Generator().manual_seed(0)).images[0]
img.save({str(out)!r} + "/generated.png")
"""
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "dti",
            "train",
            str(photos),
            "--token",
            "<my-dog>",
            "--init",
            "dog",
            "--model",
            str(model),
            "--output",
            str(out),
            "--steps",
            str(steps),
            "--resolution",
            "64",
            "--sample-steps",
            "4",
            "--quiet",
        ],
        check=True,
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--photos", default=str(REPO.parent / "shared" / "data" / "dreambooth" / "dog"))
    parser.add_argument("--families", default="sd,sdxl,sd3,sd3-no-t5,flux,pixart,sana", help="keys of dti.testing.BUILDERS")
    parser.add_argument("--no-e2e", dest="e2e", action="store_false", help="skip the SDXL end-to-end timing")
    args = parser.parse_args()
    from dti.testing import build_tiny

    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows, builds = [], []
        for name in args.families.split(","):
            t0 = time.perf_counter()
            model = build_tiny(name, tmp / name)
            builds.append(f"{name} {time.perf_counter() - t0:.1f} s")
            for method in ("dti", "ti"):
                median, best = step_times(model, Path(args.photos), args.steps, method)
                rows.append(f"| {name}-tiny | {method} | 4 | 64 | {median * 1000:.0f} ms | {best * 1000:.0f} ms |")
        e2e = end_to_end(build_tiny("sdxl", tmp / "e2e-sdxl"), Path(args.photos), tmp / "run", args.steps) if args.e2e else None
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {platform.python_version()}")
    print(f"build + save: {', '.join(builds)}\n")
    print("| model | method | batch | px | median step | best step |\n|---|---|---|---|---|---|")
    print("\n".join(rows))
    if e2e is not None:
        print(
            f"\nend to end (`dti train` {args.steps} steps on SDXL-tiny incl. samples, new process -> diffusers "
            f"load_textual_inversion -> generate): {e2e:.1f} s"
        )


if __name__ == "__main__":
    main()
