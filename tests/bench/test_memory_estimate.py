"""benchmarks/memory.py: the tracker counts what it should, the flash-attention stand-in saves what
the CUDA kernel saves (never the L x L matrix), and the estimator runs dti's step end to end on a
tiny SDXL, counting with fake tensors exactly what real CPU tensors allocate."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
memory = pytest.importorskip("memory")
full_configs = pytest.importorskip("full_configs")

MemoryTracker, rounded = memory.MemoryTracker, memory.rounded


def test_rounding_is_the_caching_allocators():
    assert [rounded(n) for n in (0, 1, 511, 512, 513, 4000, 1024)] == [0, 512, 512, 512, 1024, 4096, 1024]


def test_tracker_counts_live_storages_exactly():
    tracker = MemoryTracker()
    with tracker:
        a = torch.empty(1000)  # 4000 bytes -> 4096
        b = a * 2  # 4096
        view = b[:10]  # an alias: nothing
        empty = torch.empty(0)  # nothing
        assert tracker.current == 8192
        del b
        gc.collect()
        assert tracker.current == 8192  # the view keeps b's storage alive
        del view
        gc.collect()
        assert tracker.current == 4096
        d = torch.empty(128, dtype=torch.float64)  # exactly 1024
        assert tracker.current == 4096 + 1024
        a.mul_(3)  # in place: nothing
        assert tracker.current == 4096 + 1024
    assert tracker.peak == 8192
    del a, d, empty


def test_tracker_follows_autograd_and_frozen_weights():
    x = torch.zeros(64, 100, requires_grad=True)  # 25600 bytes = 50 blocks
    w = torch.zeros(100, 100)  # frozen: 40000 -> 40448
    tracker = MemoryTracker()
    with tracker:
        tracker.hold([x, w])
        held = tracker.current
        assert held == 25600 + 40448
        loss = (x @ w).relu().sum()
        # mm's output lives until relu's exists (then only relu's output is saved; x is not, w needs no grad)
        assert tracker.peak == held + 2 * 25600
        assert tracker.current == held + 25600 + 512
        loss.backward()
        del loss
        gc.collect()
        assert x.grad is not None and w.grad is None
        assert tracker.current == held + 25600  # x.grad only: the graph is gone


def _qkv(length=256, heads=4, dim=16, batch=2, dtype=torch.float32):
    # (B, L, H, D) projections viewed as (B, H, L, D), as diffusers and transformers call SDPA
    return [torch.zeros(batch, length, heads, dim, dtype=dtype).transpose(1, 2).requires_grad_(True) for _ in range(3)]


def test_flash_stand_in_saves_what_the_cuda_kernel_saves():
    batch, heads, length, dim = 2, 4, 256, 16
    q, k, v = _qkv(length, heads, dim, batch)
    tracker = MemoryTracker()
    with memory.cuda_attention(), tracker:
        out = F.scaled_dot_product_attention(q, k, v)
        assert out.shape == (batch, heads, length, dim)
        saved = out.grad_fn.saved_tensors
        shapes = sorted((tuple(t.shape), t.dtype) for t in saved)
        assert shapes == sorted([(tuple(q.shape), q.dtype)] * 4 + [((batch, heads, length), torch.float32)])
        assert all(t.numel() < length * length for t in saved)  # no L x L matrix, not even one head's
        # forward: the output and the float32 logsumexp, nothing else
        assert tracker.current == rounded(out.numel() * 4) + rounded(batch * heads * length * 4)
        out.sum().backward()
    assert q.grad.shape == q.shape and k.grad.shape == k.shape and v.grad.shape == v.shape
    assert F.scaled_dot_product_attention is not memory.flash_sdpa  # restored


def test_math_attention_would_save_the_matrix():
    """What the stand-in avoids: the CPU / math path keeps (B, H, L, L) for backward."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    length = 256
    q, k, v = _qkv(length)
    flash, math_path = MemoryTracker(), MemoryTracker()
    with memory.cuda_attention(), flash:
        kept_flash = F.scaled_dot_product_attention(q, k, v)
    with sdpa_kernel(SDPBackend.MATH), math_path:
        kept_math = F.scaled_dot_product_attention(q, k, v)
    assert math_path.current - flash.current >= 2 * 4 * length * length * 4  # at least one fp32 (B, H, L, L)
    del kept_flash, kept_math


def tiny_sdxl() -> dict:
    clip = dict(full_configs.CLIP_L, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32)
    unet = dict(
        full_configs.SDXL_UNET,
        sample_size=16,
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
        block_out_channels=[32, 64],
        layers_per_block=1,
        transformer_layers_per_block=[1, 2],
        attention_head_dim=[2, 4],
        cross_attention_dim=64,
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,
        norm_num_groups=8,
    )
    vae = dict(
        full_configs.SDXL_VAE,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        block_out_channels=[8, 16],
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=32,
    )
    spec = dict(full_configs.FAMILIES["sdxl"])
    spec.update(
        unet=("UNet2DConditionModel", unet),
        vae=("AutoencoderKL", vae),
        text_encoder=("CLIPTextModel", clip),
        text_encoder_2=("CLIPTextModelWithProjection", clip),
    )
    return spec


def test_estimator_end_to_end_on_a_tiny_sdxl_fake_equals_real():
    spec = tiny_sdxl()
    fake = memory.Estimator("sdxl", torch.float32, spec=spec)
    real = memory.Estimator("sdxl", torch.float32, spec=spec, fake=False)
    assert isinstance(next(fake.pipe.unet.parameters()), torch._subclasses.fake_tensor.FakeTensor)
    assert not isinstance(next(real.pipe.unet.parameters()), torch._subclasses.fake_tensor.FakeTensor)
    plain, real_plain, ckpt = fake.step(2, 32, False), real.step(2, 32, False), fake.step(2, 32, True)
    assert plain["peak_bytes"] > plain["resident_bytes"] > 0
    assert plain["resident_bytes"] == real_plain["resident_bytes"]
    # the same computation on real CPU tensors allocates what the fake one counts (exactly, in this
    # torch; 1% allowed for CPU kernels whose outputs differ from their meta formulas)
    assert abs(plain["peak_bytes"] - real_plain["peak_bytes"]) <= 0.01 * real_plain["peak_bytes"], (plain, real_plain)
    assert plain["left_after_step_bytes"] < 64 * 1024  # only the rows' gradients outlive the step
    assert ckpt["saved_at_forward_end_bytes"] < plain["saved_at_forward_end_bytes"]  # checkpointing saves less
    assert ckpt["resident_bytes"] == plain["resident_bytes"]
    floor = fake.floor(2, 32)
    assert floor["resident_bytes"] < plain["resident_bytes"]  # the denoiser alone
    assert floor["conditioning"]["encoder_hidden_states"] == [2, 77, 64]


def test_smallest_fitting_takes_the_cheapest_savers():
    def row(batch, ckpt, vae, peak):
        r = {"family": "sdxl", "resolution": 768, "batch": batch, "gradient_checkpointing": ckpt, "vae_on_device": vae, "peak_gib": peak}
        r.update({f"fits {card}": memory.fits(peak, size) for card, size in memory.CARDS_GIB.items()})
        return r

    rows = [
        row(1, False, True, 12.0),
        row(4, False, True, 18.0),
        row(4, False, False, 17.0),
        row(4, True, True, 9.0),
        row(4, True, False, 8.0),
    ]
    by_card = {s["card"]: s for s in memory.smallest_fitting(rows)}
    assert by_card["16 GB"]["batch 1"].startswith("none") and by_card["24 GB"]["batch 4"].startswith("none")
    assert by_card["16 GB"]["batch 4"] == "--gradient-checkpointing (9.0 GiB)"  # offloading the VAE alone is not enough


def test_margin_rule():
    assert memory.fits(13.6, 16.0) and not memory.fits(13.7, 16.0)
    assert memory.fits(20.9, 24.0) and not memory.fits(21.0, 24.0)
