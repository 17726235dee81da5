"""Shared fixtures: offline hub, tiny pipelines built once per session, the DreamBooth photos."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DREAMBOOTH = Path(os.environ.get("DTI_DREAMBOOTH", REPO.parent / "shared" / "data" / "dreambooth"))


@pytest.fixture
def one_thread():
    """Small models on a busy 2-core machine run far faster on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def dreambooth() -> Path:
    if not (DREAMBOOTH / "dog").is_dir():
        pytest.skip(f"DreamBooth dataset not found at {DREAMBOOTH} (set DTI_DREAMBOOTH)")
    return DREAMBOOTH


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    from dti.testing import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny") / "sd")


@pytest.fixture(scope="session")
def tiny_sd_v(tmp_path_factory) -> Path:
    from dti.testing import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny") / "sd-v", prediction_type="v_prediction")


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory) -> Path:
    from dti.testing import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny") / "sdxl")


@pytest.fixture(scope="session")
def clip_tok():
    from dti.testing import clip_tokenizer

    return clip_tokenizer()


@pytest.fixture()
def photos(tmp_path) -> Path:
    """Four small synthetic photos (one non-square), for tests that need no real data."""
    folder = tmp_path / "photos"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i, size in enumerate([(80, 64), (64, 64), (96, 72), (64, 64)]):
        arr = (torch.rand(size[1], size[0], 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(folder / f"{i:02d}.png")
    return folder


@pytest.fixture
def away_is_nan(monkeypatch):
    """Offloading (``--offload``) on the CPU, and an away weight holds NaN: using one that was not brought back
    shows (in the loss, a gradient, or what a LoRA learns)."""
    from dti.training import residency

    monkeypatch.setattr(residency, "parking_for", lambda device: torch.device("cpu"))
    monkeypatch.setattr(residency, "away", lambda host: torch.full_like(host, float("nan")))


def load_pipe(folder: Path):
    from dti.models import load_adapter

    return load_adapter(folder).pipe


def nan_loss_at(monkeypatch, bad) -> dict[str, int]:
    """The DDPM loss is NaN at the given loss calls (1-based; a container read at each call, so a
    test may change it): a bad step. Returns the call counter (reset it with ``calls["n"] = 0``)."""
    from dti.models.ddpm import DDPMAdapter

    real = DDPMAdapter.loss
    calls = {"n": 0}

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        loss = real(self, *args, **kwargs)
        return loss * float("nan") if calls["n"] in bad else loss

    monkeypatch.setattr(DDPMAdapter, "loss", flaky)
    return calls


@pytest.fixture()
def base_args(photos, tiny_sd, tmp_path):
    """A quick, valid `dti train` command line on the tiny SD pipeline (tests vary one flag at a time)."""
    return [
        "train",
        photos,
        "--token",
        "<t>",
        "--init",
        "dog",
        "--model",
        tiny_sd,
        "--output",
        tmp_path / "out",
        "--steps",
        "2",
        "--resolution",
        "64",
        "--no-validation",
        "--quiet",
    ]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Every tiny family's pipeline folder, built on first use (``tiny_models("flux")``)."""
    from dti.testing import build_tiny

    root = tmp_path_factory.mktemp("families")
    built = {}

    def get(name):
        if name not in built:
            built[name] = build_tiny(name, root / name)
        return built[name]

    return get


def sigterm_in_multi_step(monkeypatch, after: int = 1) -> None:
    """A SIGTERM delivered as a MultiTrainer launches the step after its first concept's step ``after``."""
    import signal

    from dti.training.multi import MultiTrainer

    real = MultiTrainer.launch

    def launch(self):
        if self.trainers[0].step_count == after:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self)

    monkeypatch.setattr(MultiTrainer, "launch", launch)
