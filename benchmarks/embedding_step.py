"""What the trainable-rows design saves, at the real text-encoder sizes (random weights, no download).

    python benchmarks/embedding_step.py [--encoder clip-l|bigg] [--batch 4] [--steps 10]

The textual-inversion scripts of diffusers and kohya make the whole ``49408 x d`` input-embedding
table trainable, hand it to AdamW, and after every step copy the original rows back. dti routes
the new token's ids to a small fp32 block (``dti.text.vocab.ExtendedEmbedding``) and steps only that
block. Both variants run the same text-encoder forward/backward on the same prompts; we time one
training step of the text side (forward, backward, optimizer, restore) and count the bytes of
gradient + optimizer state. The UNet's share is identical in both and left out.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from transformers import CLIPTextConfig, CLIPTextModel

from dti.core import sphere
from dti.core.optim import RiemannianSGD
from dti.core.rows import TrainableRows
from dti.testing import clip_tokenizer
from dti.text.vocab import attach

SIZES = {  # the released configs' shapes
    "clip-l": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, projection_dim=768),
    "bigg": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20, projection_dim=1280),
}


def encoder(name: str) -> CLIPTextModel:
    cfg = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, bos_token_id=0, eos_token_id=2, pad_token_id=1, **SIZES[name])
    torch.manual_seed(0)
    return CLIPTextModel(cfg).eval().requires_grad_(False)


def full_table_step(model, ids, placeholder_id, opt, original):
    """diffusers/kohya style: the whole table trains; everything but the new row is restored."""
    out = model(ids).last_hidden_state
    out.float().pow(2).mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        keep = torch.ones(original.shape[0], dtype=torch.bool)
        keep[placeholder_id] = False
        model.get_input_embeddings().weight[keep] = original[keep]


def dti_step(model, ids, opt):
    out = model(ids).last_hidden_state
    out.float().pow(2).mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def timed(fn, steps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def baseline(name: str, prompts: list[str], steps: int) -> tuple[float, int, int]:
    """diffusers/kohya: resized table, all of it trainable. Returns (seconds, gradient bytes, state bytes)."""
    model = encoder(name)
    tok = clip_tokenizer()
    tok.add_tokens(["<new>"])
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    table = model.get_input_embeddings().weight
    table.requires_grad_(True)
    original = table.detach().clone()
    ids = tok(prompts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    opt = torch.optim.AdamW([table], lr=5e-3)
    seconds = timed(lambda: full_table_step(model, ids, len(tok) - 1, opt, original), steps)
    state = sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
    return seconds, table.numel() * table.element_size(), state


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", choices=sorted(SIZES), default="clip-l")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = clip_tokenizer()
    prompts = ["a photo of a <new>"] * args.batch

    t_full, grad_a, state_a = baseline(args.encoder, prompts, args.steps)

    # dti: the frozen table plus one trainable row
    model = encoder(args.encoder)
    init = model.get_input_embeddings().weight[[tok.convert_tokens_to_ids("dog</w>")]]
    rows = TrainableRows(init, "sphere", float(model.get_input_embeddings().weight.norm(dim=-1).mean()))
    attach(tok, model, ["<new>"], rows)
    ids = tok(prompts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    opt_b = RiemannianSGD([{"params": [rows.param], "prior": sphere.normalize(init)}], lr=0.04, kappa=1e-4)
    t_dti = timed(lambda: dti_step(model, ids, opt_b), args.steps)
    state_b = sum(v.numel() * v.element_size() for s in opt_b.state.values() for v in s.values() if torch.is_tensor(v))
    grad_b = rows.param.numel() * 4

    print(
        f"{args.encoder} text encoder, batch {args.batch}, {platform.machine()} {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, {os.cpu_count()} cores"
    )
    print("| variant | median step (text side) | gradient | optimizer state |\n|---|---|---|---|")
    mib = 2**20
    print(f"| full table + AdamW + restore (diffusers/kohya) | {t_full * 1000:.0f} ms | {grad_a / mib:.1f} MiB | {state_a / mib:.1f} MiB |")
    print(f"| dti trainable rows + RiemannianSGD | {t_dti * 1000:.0f} ms | {grad_b / 2**10:.1f} KiB | {state_b} B |")


if __name__ == "__main__":
    main()
