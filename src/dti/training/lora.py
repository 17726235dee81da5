"""The LoRA a run trains beside its word (``--lora RANK``): put into the pipeline when the run is set
up, stepped by its own AdamW in the same guarded step as the word, saved in every checkpoint, written
as two files when the run finishes, taken out of the pipeline when the run ends.

The word keeps its method and optimizer (RiemannianSGD for ``dti``: the word stays at its norm); the
LoRA's parameters are the only other thing that learns (the base weights stay frozen, bit for bit).
With ``--quantize`` (QLoRA) the base layers are quantized first and the LoRA wraps the quantized
layer, its own weights in fp32; its files are the same as a full-precision run's (the keys name the
layers, not their quantized wrappers), and the concept records the scheme (``lora.quantize``).
A step whose loss or any gradient (the word's or the LoRA's) is not finite skips both; ``word_steps``
and ``lora_steps`` stop one before the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dti.concepts.concept import Concept
from dti.concepts.kinds import single_file_keys
from dti.core.errors import DTIError
from dti.core.files import atomic_write_all
from dti.core.optim import guarded_step
from dti.models import Adapter, EncoderSlot
from dti.models.base import lora_text_targets
from dti.training.config import TrainConfig
from dti.use import lora as lora_files


def _finite(p: torch.Tensor) -> torch.Tensor:
    return p.isfinite().all()


class RunLora:
    """The LoRA of one run: its layers in the pipeline's modules, its parameters and its optimizer."""

    name = lora_files.TRAIN_NAME

    def __init__(self, adapter: Adapter, config: TrainConfig, trained: Sequence[EncoderSlot]) -> None:
        c = config
        assert c.lora is not None and adapter.lora_targets  # refused before (training.checks.check_family_settings)
        self.rank = int(c.lora)
        self.alpha = float(c.lora_alpha or c.lora)
        self.lora_steps = c.steps if c.lora_steps is None else c.lora_steps
        self.quantize = c.quantize  # the base's weights it learned beside (its files load into a full-precision base too)
        self.modules: dict[str, torch.nn.Module] = {adapter.denoiser_name: adapter.denoiser}
        self.targets: dict[str, tuple[str, ...]] = {adapter.denoiser_name: tuple(adapter.lora_targets)}
        if c.lora_text_encoder:
            for slot in trained:
                self.modules[slot.name] = slot.text_encoder
                self.targets[slot.name] = lora_text_targets(slot.kind)
        self.layers: dict[str, int] = {}
        done: list[str] = []
        try:
            with torch.random.fork_rng(devices=[]):  # the LoRA's A matrices: a function of the seed alone
                torch.manual_seed(c.seed)
                for component, module in self.modules.items():
                    self.layers[component] = len(lora_files.inject(module, self.rank, self.alpha, self.targets[component], self.name))
                    done.append(component)
        except BaseException:
            for component in done:
                lora_files.remove(self.modules[component], self.name)
            raise
        self.params = [p for module in self.modules.values() for p in lora_files.lora_parameters(module, self.name)]
        capturable = self.params[0].device.type == "cuda"  # a skipped step is undone on the device (guarded_step)
        self.optimizer = torch.optim.AdamW(
            self.params, lr=c.lora_lr, betas=tuple(c.adam_betas), weight_decay=c.weight_decay, capturable=capturable
        )

    def grads(self) -> list[torch.Tensor]:
        return [p.grad for p in self.params if p.grad is not None]

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, step: int, allowed: torch.Tensor) -> None:
        """The LoRA's AdamW step where ``allowed`` (the word's step was kept), up to ``lora_steps``."""
        if step <= self.lora_steps:
            guarded_step(self.optimizer, self.params, allowed, _finite)

    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        """component -> its LoRA weights (PEFT's layout, on the CPU)."""
        return {component: lora_files.lora_state(module, self.name) for component, module in self.modules.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.state(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Any) -> None:
        if not isinstance(state, dict) or set(state.get("weights", {})) != set(self.modules) or "optimizer" not in state:
            raise DTIError("the checkpoint holds no LoRA for this run's components; start a new run")
        for component, module in self.modules.items():
            lora_files.load_state(module, self.name, state["weights"][component])
        self.optimizer.load_state_dict(state["optimizer"])

    def remove(self) -> None:
        """The pipeline's modules as the run found them."""
        for module in self.modules.values():
            lora_files.remove(module, self.name)

    def record(self) -> dict[str, Any]:
        """What a concept records of its LoRA."""
        return {
            "rank": self.rank,
            "alpha": self.alpha,
            "targets": {component: list(t) for component, t in self.targets.items()},
            "layers": dict(self.layers),
            "lr": self.optimizer.param_groups[0]["lr"],
            "steps": self.lora_steps,
            "file": lora_files.DIFFUSERS_FILE,
            "quantize": self.quantize,
        }

    def norm(self) -> float:
        return sum(lora_files.norm(state, self.alpha, self.rank) ** 2 for state in self.state().values()) ** 0.5

    # ------------------------------------------------------------------ files
    def write(self, folder: Path, webui: Path, concept: Concept, trigger: str, encoders: Sequence[str]) -> list[Path]:
        """diffusers' ``pytorch_lora_weights.safetensors`` in ``folder`` and kohya's file (the word bundled) at ``webui``."""
        from safetensors.torch import save_file

        parts = self.state()
        configs = {component: lora_files.peft_config(self.rank, self.alpha, self.targets[component]) for component in parts}
        tensors = lora_files.diffusers_tensors(parts)
        header = lora_files.diffusers_metadata(parts, configs)
        kohya = lora_files.kohya_tensors(parts, self.alpha, encoders, dtype=torch.float32)
        keys = single_file_keys(concept.encoders, concept.meta, "a1111")
        for key, component in lora_files.bundle_keys(trigger, keys).items():
            kohya[key] = concept.encoders[component].vectors.float().clone()  # one tensor per key (safetensors shares none)
        meta = {
            "written_by": "dti",  # an --overwrite may replace it (dti.training.run_folder)
            "ss_network_module": "networks.lora",
            "ss_network_dim": str(self.rank),
            "ss_network_alpha": str(self.alpha),
        }
        return atomic_write_all(
            [
                (folder / lora_files.DIFFUSERS_FILE, lambda tmp: save_file(tensors, str(tmp), metadata=header)),
                (webui, lambda tmp: save_file(kohya, str(tmp), metadata=meta)),
            ]
        )
