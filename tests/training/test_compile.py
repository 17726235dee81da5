"""`--compile`: regional torch.compile of the denoiser's and text encoders' repeated blocks gives the
eager run's rows, and the pipeline is handed back uncompiled."""

from __future__ import annotations

import torch
from transformers import CLIPTextConfig, CLIPTextModel

from conftest import load_pipe
from dti.models import adapter_for
from dti.training.compiling import compile_regions, repeated_blocks
from dti.training.config import TrainConfig, resolve
from dti.training.data import load_photos
from dti.training.loop import Trainer


def test_repeated_blocks_are_the_layers_not_the_embeddings():
    model = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4))
    assert [type(b).__name__ for b in repeated_blocks(model)] == ["CLIPEncoderLayer"] * 3  # CLIPTextEmbeddings occurs once
    undo = compile_regions([model])
    assert all(b._compiled_call_impl is not None for b in repeated_blocks(model))
    embeddings = [m for m in model.modules() if type(m).__name__ == "CLIPTextEmbeddings"]
    assert len(embeddings) == 1 and embeddings[0]._compiled_call_impl is None  # the learned rows' module stays eager
    undo()
    assert all(getattr(m, "_compiled_call_impl", None) is None for m in model.modules())


def _rows(pipe, photos, compile_):
    adapter = adapter_for(pipe)
    settings = dict(steps=2, resolution=64, progress=False, validate=False, compile=compile_)
    config = resolve(TrainConfig(photos=str(photos), token="<t>", init="dog", model="tiny", **settings), adapter.defaults, 64)
    trainer = Trainer(config, adapter, load_photos(photos), None)
    trainer.setup()
    blocks = [b for net in (pipe.unet, pipe.text_encoder) for b in repeated_blocks(net)]
    assert blocks and all((b._compiled_call_impl is not None) == compile_ for b in blocks)  # compiled exactly when asked
    losses = [trainer.step(), trainer.step()]
    rows = {k: v.vectors().detach().clone() for k, v in trainer.rows.items()}
    trainer.detach()
    return losses, rows


def test_a_compiled_run_trains_the_eager_run_and_leaves_the_pipeline_eager(tiny_sd, photos, one_thread):
    pipe = load_pipe(tiny_sd)
    eager_losses, eager_rows = _rows(pipe, photos, False)
    losses, rows = _rows(pipe, photos, True)
    assert torch.allclose(torch.tensor(losses), torch.tensor(eager_losses), rtol=1e-5, atol=1e-6)
    for name in eager_rows:
        assert torch.allclose(rows[name], eager_rows[name], atol=1e-6), name
    for net in (pipe.unet, pipe.text_encoder):
        assert all(getattr(m, "_compiled_call_impl", None) is None for m in net.modules())
