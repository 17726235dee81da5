"""Regional ``torch.compile`` of the frozen networks a training step runs through.

A DTI step runs the denoiser forward and backward and the text encoders forward and backward (the
gradient has to reach the new word's row), so both are compiled, block by block: the repeated
blocks a model names (diffusers' ``_repeated_blocks``, or the classes of transformers'
``_no_split_modules`` that occur more than once, e.g. ``CLIPEncoderLayer``). One block is
compiled once and reused by its identical siblings, so compile time stays a fraction of
compiling the whole network, and the embedding layer that holds the learned rows stays eager.
Compilation is undone when the run ends: the pipeline is handed back as it was found.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from torch import nn


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The submodules of ``model`` worth compiling one at a time (see the module doc)."""
    named = getattr(model, "_repeated_blocks", None) or getattr(model, "_no_split_modules", None) or []
    counts = Counter(type(m).__name__ for m in model.modules())
    wanted = {name for name in named if counts[name] > 1}
    return [m for m in model.modules() if type(m).__name__ in wanted]


def compile_regions(models: Iterable[nn.Module], **options) -> Callable[[], None]:
    """Compile the repeated blocks of every model in place (``nn.Module.compile``); returns the undo.
    A model with no repeated blocks is compiled whole."""
    compiled: list[nn.Module] = []
    for model in models:
        blocks = repeated_blocks(model) or [model]
        for block in blocks:
            if getattr(block, "_compiled_call_impl", None) is None:  # never twice, never a user's own compile
                block.compile(**options)
                compiled.append(block)

    def undo() -> None:
        for block in compiled:
            block._compiled_call_impl = None
        compiled.clear()

    return undo
