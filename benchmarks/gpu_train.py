"""A whole DTI personalization, timed from loading the model to the saved concept (issue 12).

    python benchmarks/gpu_train.py --family sdxl --device cuda --steps 400 --compile --json OUT
    python benchmarks/gpu_train.py --tiny --device cpu --steps 2 --json OUT     # the smoke run (tests)

Builds the full-size architecture with RANDOM weights (``benchmarks/full_configs.py``; ``--tiny``:
the tiny test pipeline) and saves it as a diffusers folder in ``--precision``, writes 4 synthetic
photos, then runs the real command line in a fresh process::

    dti train PHOTOS --model FOLDER --token <bench> --init dog --steps N --out RUN
              --precision bf16 --resolution 768 --batch-size 4 [--compile] [--crop-positions 2]

and times it from start to exit: interpreter start, the pipeline's ``from_pretrained`` from disk,
setup, compilation, N steps, the final validation samples (unless ``--no-validation``), every file
written. The target: <= 75 s for SDXL at 400 steps on an H100/H200 with ``--compile``. The time
to build and save the random pipeline is reported apart (it stands in for a download).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402


def build_folder(args: argparse.Namespace, folder: Path) -> float:
    """The pipeline saved to ``folder``; seconds taken."""
    t0 = time.perf_counter()
    if args.tiny:
        from dti.testing import build_tiny

        build_tiny(args.family, folder)
    else:
        sys.path.insert(0, str(HERE))
        from full_configs import build_pipeline

        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.precision]
        pipe = build_pipeline(args.family, dtype, args.device)
        pipe.save_pretrained(folder, safe_serialization=True)
        del pipe
        if args.device == "cuda":
            torch.cuda.empty_cache()
    return time.perf_counter() - t0


def write_photos(folder: Path, size: int) -> None:
    from step import synthetic_photos

    folder.mkdir(parents=True)
    for k, photo in enumerate(synthetic_photos(4, size)):
        photo.save(folder / f"{k}.png")


def command(args: argparse.Namespace, model: Path, photos: Path, run: Path) -> list[str]:
    cmd = [sys.executable, "-m", "dti", "train", str(photos), "--model", str(model), "--token", "<bench>"]
    cmd += ["--init", "dog", "--steps", str(args.steps), "--out", str(run), "--device", args.device, "--quiet"]
    cmd += ["--batch-size", str(args.batch), "--checkpoint-every", "0", "--precision", args.precision]
    if args.resolution:
        cmd += ["--resolution", str(args.resolution)]
    if args.compile:
        cmd.append("--compile")
    if args.crop_positions:
        cmd += ["--crop-positions", str(args.crop_positions)]
    if args.no_validation:
        cmd.append("--no-validation")
    return cmd


def run(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp_path = Path(tmp)
        model, photos, out = tmp_path / "model", tmp_path / "photos", tmp_path / "run"
        build_s = build_folder(args, model)
        write_photos(photos, args.resolution or (64 if args.tiny else 1024))
        cmd = command(args, model, photos, out)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall_s = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"dti train exited {proc.returncode}:\n{proc.stderr[-4000:]}")
        log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        concept = out / "concept.safetensors"
        return {
            "family": args.family,
            "setting": "tiny" if args.tiny else "full",
            "device": args.device,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "steps": args.steps,
            "batch": args.batch,
            "resolution": args.resolution,
            "precision": args.precision,
            "compile": args.compile,
            "crop_positions": args.crop_positions,
            "validation": not args.no_validation,
            "wall_s": round(wall_s, 2),
            "target_s": 75.0 if (args.family == "sdxl" and not args.tiny and args.steps == 400) else None,
            "build_and_save_s": round(build_s, 2),
            "concept_bytes": concept.stat().st_size,
            "last_loss": log[-1]["loss"],
            "logged_steps": len(log) - 1,
            "dti_train": cmd[1:],
            "torch": torch.__version__,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": ["python", "benchmarks/gpu_train.py", *(args.argv or sys.argv[1:])],
        }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="sdxl")
    p.add_argument("--tiny", action="store_true", help="the tiny test pipeline (a smoke run, seconds on CPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--resolution", type=int, default=None, help="default: the family's (SDXL 768); tiny: 64")
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--compile", action="store_true")
    p.add_argument("--crop-positions", type=int, default=0)
    p.add_argument("--no-validation", action="store_true")
    p.add_argument("--workdir", default=None, help="where the model folder is written (default: the system's temp)")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    if args.tiny and args.resolution is None:
        args.resolution = 64
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    args.argv = None if argv is None else list(argv)
    result = run(args)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    target = f" (target {result['target_s']:.0f} s)" if result["target_s"] else ""
    print(f"{result['family']} {result['setting']} {result['steps']} steps on {result['gpu'] or 'cpu'}: {result['wall_s']:.1f} s{target}")
    return result


if __name__ == "__main__":
    main()
