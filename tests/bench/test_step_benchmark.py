"""benchmarks/step.py (issue 12's harness) runs on the tiny pipelines and writes a sane JSON.

Correctness only, no timing thresholds: the keys are there, the times are positive and finite,
every part of the step is measured, the ratio is step / floor, and the parts add up to the
instrumented step.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

TOP_KEYS = {
    "floor_ms",
    "step_ms",
    "step_over_floor",
    "parts_ms",
    "peak_memory_mb",
    "first_step_s",
    "machine",
    "torch",
    "diffusers",
    "transformers",
    "date",
    "command",
}


@pytest.fixture(scope="module")
def step_module():
    spec = importlib.util.spec_from_file_location("dti_bench_step", REPO / "benchmarks" / "step.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.mark.parametrize(("family", "encoders"), [("sd", ["text_encoder"]), ("sdxl", ["text_encoder", "text_encoder_2"])])
def test_step_benchmark_tiny(step_module, tmp_path, family, encoders):
    out = tmp_path / f"step-{family}.json"
    argv = ["--family", family, "--tiny", "--device", "cpu", "--steps", "2", "--warmup", "1", "--threads", "1", "--json", str(out)]
    returned = step_module.main(argv)
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(returned))  # what main returns is what it wrote

    assert TOP_KEYS <= set(data)
    assert data["family"] == family and data["setting"] == "tiny" and data["device"] == "cpu"
    assert data["command"][-len(argv) :] == argv
    for key in ("floor_ms", "step_ms", "peak_memory_mb", "first_step_s"):
        assert math.isfinite(data[key]) and data[key] > 0, key
    assert data["step_over_floor"] == pytest.approx(data["step_ms"] / data["floor_ms"], rel=1e-3)
    assert data["step_deferred_ms"] > 0 and data["step_deferred_over_floor"] == pytest.approx(
        data["step_deferred_ms"] / data["floor_ms"], rel=1e-3
    )
    assert len(data["floor_ms_all"]) == len(data["step_ms_all"]) == 2
    assert data["nonfinite_steps"] == 0
    assert data["vae_encodes_in_timed_steps"] == 0  # the synthetic subject's crops are all cached before timing
    assert data["text_encoders"] == encoders
    assert data["machine"]["cpu_count"] >= 1 and data["machine"]["gpu"] is None
    for name in ("torch", "diffusers", "transformers", "date"):
        assert isinstance(data[name], str) and data[name]

    parts = data["parts_ms"]
    expected = set(step_module.PART_NAMES) | {f"text_encoder_fwd:{e}" for e in encoders} | {"denoiser_fwd_bwd"}
    assert set(parts) == expected
    assert all(math.isfinite(v) for v in parts.values())
    # every measured stage took time; gaps ("other", "encode_prompt_other") may round to ~0 but not go far below
    for name in ("data", "latents", "denoiser_fwd", "denoiser_bwd", "text_encoders_bwd", "update", "host_sync", "optimizer", "loss_other"):
        assert parts[name] > 0, name
    for e in encoders:
        assert parts[f"text_encoder_fwd:{e}"] > 0, e
    assert parts["other"] >= 0 and parts["encode_prompt_other"] >= 0
    assert parts["denoiser_fwd_bwd"] == pytest.approx(parts["denoiser_fwd"] + parts["denoiser_bwd"], abs=2e-3)
    # the disjoint parts cover the instrumented step (medians of 2 runs each: loosely)
    disjoint = sum(v for k, v in parts.items() if k != "denoiser_fwd_bwd")
    assert disjoint == pytest.approx(data["parts_step_ms"], rel=0.5)
    # the floor ran the denoiser backward to the conditioning: SD's hidden states, SDXL's also the pooled embedding
    assert len(data["conditioning_shapes"]) == (2 if family == "sdxl" else 1)
    assert data["conditioning_shapes"][0][0] == 4  # batch 4 (default)


def test_full_size_configs_assemble(step_module):
    """Every family's full-size pipeline (benchmarks/full_configs.py) assembles on the meta device (no memory) into a
    real diffusers pipeline that dti adapts, with the published parameter counts."""
    import torch

    from dti.models import adapter_for

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import full_configs
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    assert set(full_configs.FAMILIES) == set(step_module.FAMILIES)
    for family, spec in full_configs.FAMILIES.items():
        pipe = full_configs.build_pipeline(family, torch.bfloat16, "meta")
        adapter = adapter_for(pipe)
        assert type(pipe).__name__ == spec["pipeline"] and adapter.family == family.split("-")[0]  # wan-14b: the wan family
        assert adapter.denoiser.dtype == torch.bfloat16
        counts = {name: sum(p.numel() for p in getattr(pipe, name).parameters()) / 1e6 for name in full_configs.PUBLISHED_MILLIONS[family]}
        for name, published in full_configs.PUBLISHED_MILLIONS[family].items():
            assert counts[name] == pytest.approx(published, rel=0.01), (family, name)


def test_the_whole_run_timer_trains_through_the_real_command_line(tmp_path):
    """benchmarks/gpu_train.py (the GPU's 400-step timing) on the tiny pipeline: it builds, saves,
    trains through `dti train` in a fresh process and reports the concept it wrote."""
    spec = importlib.util.spec_from_file_location("dti_bench_gpu_train", REPO / "benchmarks" / "gpu_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "train.json"
    argv = ["--family", "sd", "--tiny", "--device", "cpu", "--steps", "2", "--batch", "1", "--precision", "fp32"]
    argv += ["--no-validation", "--crop-positions", "2", "--workdir", str(tmp_path), "--json", str(out)]
    result = module.main(argv)
    assert json.loads(out.read_text()) == result
    assert result["logged_steps"] == 2 and math.isfinite(result["last_loss"]) and result["concept_bytes"] > 0
    assert result["wall_s"] > 0 and result["target_s"] is None
    assert "--crop-positions" in result["dti_train"] and list(tmp_path.iterdir()) == [out]  # the model folder is gone
