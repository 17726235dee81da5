"""Section 5 of issue 20: a sweep shared by several workers (two `dti sweep` processes on one --out, or
`accelerate launch --num_processes 2 -m dti sweep`).

Each run is claimed through its run folder's lock, sweep.json is rewritten under its own lock and
merged (no worker's record lost), a dead worker's run is taken over by the next worker, and the
concepts equal one worker's bit for bit (CPU). Real processes on dti-mini, 2 subjects, 3 steps at 32 px.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from dti.training.sweep import sweep

MANIFEST = """
[defaults]
steps = 3
resolution = 32
no-validation = true
checkpoint-every = 1

[subjects.alpha]
photos = "alpha"
class = "star"
kind = "object"
init = "star"

[subjects.beta]
photos = "beta"
class = "heart"
kind = "object"
init = "heart"
"""
METHODS = "dti"
RUNS = [("dti", "alpha"), ("dti", "beta")]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("subjects")
    for name, seed in (("alpha", 1), ("beta", 2)):
        (root / name).mkdir()
        g = torch.Generator().manual_seed(seed)
        for i in range(3):
            arr = (torch.rand(48, 40 + 8 * i, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(arr).save(root / name / f"{i}.png")
    (root / "subjects.toml").write_text(MANIFEST)
    return root / "subjects.toml"


@pytest.fixture(scope="module")
def reference(manifest, tmp_path_factory) -> Path:
    """One worker, in this process."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("one") / "out"
        runs = sweep(manifest, METHODS, "dti-mini", out, quiet=True, progress=False, device="cpu")
        assert [r.status for r in runs] == ["done"] * len(RUNS)
        return out
    finally:
        torch.set_num_threads(before)


def worker(manifest: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, "-m", "dti", "sweep", str(manifest), "--methods", METHODS, "--model", "dti-mini", "--out", str(out)]
    return subprocess.Popen([*argv, "--device", "cpu"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def same_concepts(a: Path, b: Path) -> None:
    for method, subject in RUNS:
        x, y = load_file(a / method / subject / "concept.safetensors"), load_file(b / method / subject / "concept.safetensors")
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), (method, subject, key)


def test_two_workers_share_one_sweep_and_train_each_run_once(manifest, reference, tmp_path):
    out = tmp_path / "out"
    start = time.monotonic()
    procs = [worker(manifest, out) for _ in range(2)]
    logs = [p.communicate(timeout=240)[0] for p in procs]
    seconds = time.monotonic() - start
    assert [p.returncode for p in procs] == [0, 0], logs
    trained = [line for log in logs for line in log.splitlines() if ": training -> " in line or ": continuing " in line]
    assert len(trained) == len(RUNS), logs  # every run trained by exactly one worker
    index = json.loads((out / "sweep.json").read_text())
    assert sorted((r["method"], r["subject"], r["status"]) for r in index["runs"]) == sorted((m, s, "done") for m, s in RUNS)
    assert not list(out.rglob(".dti.lock")) and not (out / ".sweep-index.lock").exists()
    same_concepts(reference, out)
    print(f"two workers: {seconds:.1f} s")


def test_a_dead_workers_run_is_taken_over_by_the_next(manifest, reference, tmp_path):
    out = tmp_path / "out"
    first = worker(manifest, out)
    checkpoints = out / "dti" / "alpha" / "checkpoints"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None and not any(checkpoints.glob("*")):
        time.sleep(0.05)
    assert first.poll() is None, first.communicate()[0]
    first.send_signal(signal.SIGKILL)  # dies holding the run's lock, mid-run
    first.communicate()
    assert (out / "dti" / "alpha" / ".dti.lock").exists()
    second = worker(manifest, out)
    log = second.communicate(timeout=240)[0]
    assert second.returncode == 0, log
    assert "dti alpha: continuing from its checkpoint" in log, log
    same_concepts(reference, out)
