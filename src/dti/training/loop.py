"""The training loop: photos + pipeline adapter + the method's rows and optimizer -> a Concept.

A :class:`Trainer` is one run: it attaches the word's rows (:meth:`Trainer.setup`), takes optimizer
steps decided on the device (:meth:`Trainer.launch`), reads them on the host now and then
(:meth:`Trainer.fit`), and hands each step's record to its callbacks
(:mod:`dti.training.callbacks`: log, snapshots, samples, checkpoints, the results). What the method
is comes from :mod:`dti.methods`; setting up and resuming a run folder is :mod:`dti.training.session`.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from dti import methods
from dti.concepts.concept import MAX_ROW_NORM, Concept, EncoderVectors
from dti.core import sphere
from dti.core.draws import SampleDraws, batch_indices
from dti.core.errors import DTIError, warn
from dti.core.images import grid
from dti.core.optim import guarded_step
from dti.core.rows import TrainableRows
from dti.core.version import __version__
from dti.methods import EncoderStart
from dti.models import Adapter, CropInfo, EncoderSlot, model_hints, model_record
from dti.text.templates import TEMPLATE_SETS
from dti.text.vocab import vocab_stats, vocabulary_rows
from dti.text.words import initializer_ids
from dti.training import checkpoints, frozen, offload, quantize, residency
from dti.training.callbacks import Callback, default_callbacks
from dti.training.checks import check_family_settings, webui_name
from dti.training.config import TrainConfig
from dti.training.data import LatentCache, SubjectData
from dti.training.distributed import Ranks
from dti.training.lora import RunLora
from dti.training.run_folder import RunFolder
from dti.training.stopping import RunStopped, StopRequests
from dti.use.generate import render


@dataclasses.dataclass
class MicroBatch:
    """One micro-batch of a run, ready for :meth:`Adapter.loss`."""

    latents: torch.Tensor
    prompts: list[str]
    crops: list[CropInfo]
    draws: SampleDraws


SYNC_EVERY = 25  # steps the host lets a GPU run ahead before reading the loss (see Trainer.fit)


def default_sync_every(device: torch.device) -> int:
    """Steps between the host's reads of the device: CUDA runs ahead meanwhile; on the CPU a read costs nothing."""
    return 1 if device.type == "cpu" else SYNC_EVERY


class Trainer:
    """One run: built from a resolved config, an adapter and decoded photos."""

    def __init__(
        self,
        config: TrainConfig,
        adapter: Adapter,
        photos: Sequence[Image.Image],
        run: RunFolder | None,
        ranks: Ranks | None = None,
        callbacks: Sequence[Callback] | None = None,
    ) -> None:
        self.config = c = config
        self.adapter = adapter
        self.run = run
        self.ranks = ranks or Ranks()
        self.method = methods.get(c.method)
        #: What writes the run's files, in order (log, snapshots, samples, plot, tool files, checkpoints, the concept).
        self.callbacks: list[Callback] = list(default_callbacks() if callbacks is None else callbacks)
        if c.batch_size % self.ranks.world:
            raise DTIError(
                f"{{batch_size}} {c.batch_size} must split evenly over the {self.ranks.world} processes; use a multiple",
                settings=["batch_size"],
            )
        templates = TEMPLATE_SETS[c.templates] if isinstance(c.templates, str) else tuple(c.templates)
        self.data = SubjectData(
            photos, c.resolution, c.token, templates, snap=adapter.resolution_multiple, seed=c.seed, positions=c.crop_positions
        )
        self.cache = LatentCache(adapter.encode_pixels)
        self.attached: list[EncoderSlot] = []
        self.rows: dict[str, TrainableRows] = {}
        self.init_dirs: dict[str, torch.Tensor] = {}
        self.magnitudes: dict[str, float | None] = {}
        self.stats: dict[str, dict[str, float]] = {}
        self.records: list[dict[str, Any]] = []
        self.step_count = 0  # optimizer steps taken (or skipped) so far
        self.skipped = 0  # steps skipped for a non-finite loss or gradient, in all
        self.bad_in_row = 0
        self.scaler: torch.amp.GradScaler | None = None
        self.extra_state: dict[str, Any] = {}  # saved with checkpoints, e.g. the photos' fingerprint
        self._bad_dev: tuple[torch.Tensor, torch.Tensor] | None = None  # see update()
        self.lora: RunLora | None = None  # the LoRA learned beside the word (--lora), see setup()
        self.word_steps = c.steps if c.word_steps is None else c.word_steps
        device = adapter.device
        self._row_dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        self.sync_every = default_sync_every(device)

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        c = self.config
        self.adapter.freeze()
        # a handed-in pipeline's weights come back when the run ends (dti's own was quantized as it loaded)
        quantize.apply(self.adapter, c.quantize, keep=True)
        check_family_settings(type(self.adapter), [slot.name for slot in self.adapter.encoders], c)
        self.adapter.options.update(c.family_options or {})
        if c.gradient_checkpointing:
            self.adapter.denoiser.enable_gradient_checkpointing()
        self._undo_compile = None
        counts = set()
        slots = self.adapter.encoders
        trained = set(c.encoders or [slot.name for slot in slots])
        candidates = model_hints(c.model).get("class_words", []) if c.model else []
        for slot in slots:
            ids = initializer_ids(slot.tokenizer, c.init, slot.name, candidates)
            counts.add(len(ids))
            table = vocabulary_rows(slot.tokenizer, slot.text_encoder)
            stats = vocab_stats(table)
            self.stats[slot.name] = stats.as_dict()
            raw = table[ids].detach().float().cpu()
            self.init_dirs[slot.name] = sphere.normalize(raw)
            if slot.name not in trained:  # the initializer's rows, fixed: training and generation agree
                m = None
                rows = TrainableRows(raw, "free")
                rows.param.requires_grad_(False)
            else:
                start = EncoderStart(slot.name, raw, stats, lambda slot=slot, ids=ids: self.adapter.contextual_init(slot, ids).cpu())
                m = self.method.magnitude(c, stats)
                rows = self.method.rows(start, c, m)
            self.magnitudes[slot.name] = m
            rows.to(self.adapter.device)
            self.rows[slot.name] = rows
        if len(counts) != 1:
            raise DTIError(
                f"{{init}} {c.init!r} gives different vector counts per encoder {sorted(counts)}; use a single common word",
                settings=["init"],
            )
        for slot in slots:
            slot.attach(c.token, self.rows[slot.name], c.pooling)
            self.attached.append(slot)
        self.trained = [slot.name for slot in slots if slot.name in trained]
        # the order of what changes the pipeline's modules: quantize (above) -> LoRA -> compile -> offload (below).
        # The LoRA wraps the quantized layer; it comes before compiling (the compiled blocks hold its layers) and
        # before offloading: PEFT makes a LoRA's weights on the device of its base layer's weight (an offloaded
        # one waits in host memory), and the offload hook takes the frozen weights it finds then, never the
        # LoRA's trainable ones, which stay on the device with their optimizer's state (residency.Block).
        if c.lora:
            self.lora = RunLora(self.adapter, c, [slot for slot in slots if slot.name in trained])
        # encoders that do not learn the word: each prompt's output kept once, the encoder off the device
        crop = CropInfo(self.data.original_sizes[0], (0, 0), (c.resolution, c.resolution))
        frozen.keep_outputs(
            self.adapter, [s for s in slots if s.name not in trained], [s for s in slots if s.name in trained], self.data.prompts(), crop
        )
        self.kinds = {slot.name: slot.kind for slot in slots}
        self.start_rows = {name: rows.vectors() for name, rows in self.rows.items()}  # where each row started (CrossInit's pull)
        # on the device once: a host tensor used in a step would be a blocking copy every step
        self.init_dirs_dev = {name: d.to(self.adapter.device) for name, d in self.init_dirs.items()}
        self.webui_name = webui_name(c.token, {slot.name: slot.tokenizer for slot in slots}, warn_user=self.ranks.main)
        self.optimizer = self._optimizer()
        if self.adapter.denoiser.dtype == torch.float16:  # fp16 activations: scale the loss so gradients do not underflow
            self.scaler = torch.amp.GradScaler(self.adapter.device.type, init_scale=2.0**12)
        if c.compile:  # after attaching: the blocks compiled never hold the learned rows
            from dti.training.compiling import compile_regions

            encoders = [slot.text_encoder for slot in slots if not frozen.served(self.adapter, slot.name)]
            self._undo_compile = compile_regions([self.adapter.denoiser, *encoders])
        self._offload(slots)  # last: the blocks as they will run (quantized, with the LoRA's layers)
        self.records = [self.record(0, None)]
        if c.crop_positions:  # every crop the run can draw, encoded before the first step; then the VAE can go
            with offload.vae_home(self.adapter):
                for crop in self.data.crops():
                    self.cache.distribution(self.data, crop)
            offload.park(self.adapter)

    def _offload(self, slots: Sequence[EncoderSlot]) -> None:
        """``--offload``: the denoiser's and the learning encoders' frozen weights on the device only while they run."""
        mode = self.config.offload
        learning = [slot.text_encoder for slot in slots if not frozen.served(self.adapter, slot.name)]
        if not residency.apply(self.adapter, mode, [self.adapter.denoiser, *learning]) and mode != "none" and self.ranks.main:
            warn(f"--offload {mode} has no effect on a CPU run: the weights already live in host memory")

    def _optimizer(self) -> torch.optim.Optimizer:
        trained = {name: self.rows[name] for name in self.trained}
        priors = {name: self.init_dirs[name] for name in self.trained}
        return self.method.optimizer(self.config, trained, priors, self.magnitudes)

    def detach(self) -> None:
        from dti.text.attach import detach

        for slot in self.attached:
            detach(slot.tokenizer, slot.text_encoder, self.config.token)
        self.attached.clear()
        if self.lora is not None:  # the pipeline's layers as the run found them
            self.lora.remove()
        self.adapter.release_hooks()  # frozen encoders back home, the VAE back on its device
        if getattr(self, "_undo_compile", None) is not None:
            self._undo_compile()
            self._undo_compile = None

    # ------------------------------------------------------------------ one step
    def _regularizer(self) -> torch.Tensor | None:
        """The method's terms that the optimizer does not apply itself."""
        trained = {name: self.rows[name] for name in self.trained}
        priors = {name: self.init_dirs_dev[name] for name in self.trained}
        return self.method.regularizer(self.config, trained, priors, self.start_rows)

    def trainable(self) -> list[torch.nn.Parameter]:
        return [self.rows[name].param for name in self.trained]

    def step(self, step: int | None = None) -> float | None:
        """Take optimizer step ``step`` (default: the next one) and read its result on the host; its
        samples and noise are those of (seed, step, rank) alone. Returns the loss (averaged over
        processes), or None when the loss or a gradient was not finite and the step was skipped
        (the rows unchanged). :meth:`fit` uses :meth:`launch` and reads the device only now and then."""
        step = self.step_count + 1 if step is None else step
        return self.settle(step, self.launch(step).tolist())

    def launch(self, step: int) -> torch.Tensor:
        """Optimizer step ``step``, decided on the device: forward, backward, averaged gradients and the
        update, or its undoing when the loss or a gradient is not finite. Returns the step's
        :meth:`update` row, still on the device (nothing here waits for the device)."""
        c = self.config
        self.optimizer.zero_grad(set_to_none=True)
        if self.lora is not None:
            self.lora.zero_grad()
        total = torch.zeros((), device=self.adapter.device)
        for micro in range(c.grad_accum):
            batch = self.micro_batch(step, micro)
            scaled, logged = self.objective(self.adapter.loss(batch.latents, batch.prompts, batch.crops, batch.draws))
            scaled.backward()
            total = total + logged
        return self.update(step, total)

    # The step's phases, also driven by :class:`dti.training.multi.MultiTrainer` (K concepts, one batch).
    def micro_batch(self, step: int, micro: int) -> MicroBatch:
        """Micro-batch ``micro`` of optimizer step ``step``: samples, latents and draws of (seed, index)."""
        c = self.config
        indices = batch_indices(step, micro, c.batch_size, c.grad_accum, self.ranks.rank, self.ranks.world)
        samples = self.data.batch(indices)
        draws = SampleDraws(c.seed, indices)
        latents = self.cache.sample(self.data, samples, draws)
        crops = [CropInfo(self.data.original_sizes[s.image], (s.top, s.left), (c.resolution, c.resolution)) for s in samples]
        return MicroBatch(latents, [s.prompt for s in samples], crops, draws)

    def objective(self, loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what to backpropagate, the logged loss's share) for one micro-batch's mean loss: the
        prior terms added, divided over the micro-batches, scaled for fp16."""
        c = self.config
        objective = loss
        reg = self._regularizer()
        if reg is not None:
            objective = objective + reg
        objective = objective / c.grad_accum
        scaled = self.scaler.scale(objective) if self.scaler is not None else objective
        return scaled, loss.detach().float() / c.grad_accum

    def gathered(self, total: torch.Tensor) -> torch.Tensor:
        """After the backward passes: gradients averaged over processes and unscaled; returns
        ``[loss, finite]`` as one tensor, still on the device (the caller syncs)."""
        grads = [p.grad for p in self.trainable() if p.grad is not None]
        if self.lora is not None:  # the LoRA's gradients are averaged and checked with the word's
            grads += self.lora.grads()
        self.ranks.mean_([total, *grads])
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        finite = torch.stack([total.isfinite(), *(g.isfinite().all() for g in grads)]).all()
        return torch.stack([total.float(), finite.float()])

    def update(self, step: int, total: torch.Tensor) -> torch.Tensor:
        """After step ``step``'s backward passes (``total``: its logged loss): the optimizer step, or a
        skip when the loss or a gradient is not finite or an update would push a row past a usable
        norm. Returns ``[loss, applied, bad, *record values]`` on the device. Without a loss scaler
        nothing here syncs: the skip is a ``torch.where`` between the updated and the old rows and
        optimizer state, and after ``max_bad_steps`` bad steps in a row every later update is held
        back on the device too, so a run that stops stops exactly where the host will find it."""
        synced = self.gathered(total)
        self.step_count = step
        if self.scaler is not None:  # GradScaler decides on the host (its step reads found_inf)
            applied, bad = self._update_scaled(synced)
        else:
            if self._bad_dev is None:  # (bad steps in a row, the run has stopped), as the device counts them
                self._bad_dev = torch.tensor(self.bad_in_row, device=synced.device), torch.tensor(False, device=synced.device)
            count, halted = self._bad_dev
            allowed = (synced[1] > 0) & ~halted
            # past word_steps the word holds still (the LoRA may learn on); the step still counts as taken
            applied = guarded_step(self.optimizer, self.trainable(), allowed, usable_rows) if step <= self.word_steps else allowed
            if self.lora is not None:  # kept only with the word's: a skipped step skips both
                self.lora.step(step, applied)
            bad = ~applied
            count = torch.where(applied, torch.zeros_like(count), count + 1)
            self._bad_dev = count, halted | (count >= self.config.max_bad_steps)  # the host stops at this step
        flags = torch.stack([applied, bad]).to(self._row_dtype)
        return torch.cat([synced[:1].to(self._row_dtype), flags, self.record_values()])

    def _update_scaled(self, synced: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fp16's update through the GradScaler (one host sync): an overflow lowers the scale and skips
        the step without counting it as bad."""
        assert self.scaler is not None
        value, ok = synced.tolist()
        device = synced.device
        no, yes = torch.tensor(False, device=device), torch.tensor(True, device=device)
        if not ok:
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.update()  # lowers the scale; an overflow of fp16 gradients is not a bad step
            return no, (no if math.isfinite(value) else yes)
        free = self.trainable()
        before = [p.detach().clone() for p in free]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if free and not bool(torch.stack([usable_rows(p) for p in free]).all()):  # a row blew up (huge lr): undo
            with torch.no_grad():
                for p, old in zip(free, before):
                    p.copy_(old)
            return no, yes
        return yes, no

    def settle(self, step: int, row: Sequence[float]) -> float | None:
        """The host's part of step ``step`` once its :meth:`update` row is read: the skip counters.
        Returns the loss, or None for a skipped step."""
        applied, bad = row[1] > 0, row[2] > 0
        if bad:
            self.skipped += 1
            self.bad_in_row += 1
        elif applied:
            self.bad_in_row = 0
        return float(row[0]) if applied else None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue bit-identically (no random state: every draw
        is a function of (seed, sample index))."""
        return {
            "step": self.step_count,
            "rows": {name: rows.param.detach().cpu().clone() for name, rows in self.rows.items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "records": list(self.records),
            "skipped": self.skipped,
            "bad_in_row": self.bad_in_row,
            "config": self.config.to_dict(),
            "extra": dict(self.extra_state),
            **({"lora": self.lora.state_dict()} if self.lora is not None else {}),
            "dti_version": __version__,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (call after :meth:`setup`)."""
        missing = sorted({"step", "rows", "optimizer", "records"} - set(state if isinstance(state, dict) else {}))
        if missing:
            raise DTIError(f"the checkpoint is damaged (no {', '.join(missing)}); delete it to resume from the one before, or start again")
        if set(state["rows"]) != set(self.rows):
            raise DTIError(f"the checkpoint holds rows for {sorted(state['rows'])}, this run trains {sorted(self.rows)}; start a new run")
        with torch.no_grad():
            for name, rows in self.rows.items():
                saved = state["rows"][name]
                if saved.shape != rows.param.shape:
                    raise DTIError(f"the checkpoint's {name} rows are {list(saved.shape)}, this model's are {list(rows.param.shape)}")
                rows.param.copy_(saved.to(rows.param.device))
        self.optimizer.load_state_dict(state["optimizer"])
        if self.lora is not None:
            if "lora" not in state:
                raise DTIError("the checkpoint holds no LoRA, this run trains one; start a new run")
            self.lora.load_state_dict(state["lora"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step_count = int(state["step"])
        self.records = list(state["records"])
        self.skipped = int(state.get("skipped", 0))
        self.bad_in_row = int(state.get("bad_in_row", 0))
        self._bad_dev = None

    # ------------------------------------------------------------------ results
    def concept(self, step: int) -> Concept:
        c = self.config
        encoders = {
            name: EncoderVectors(
                rows.vectors(), self.magnitudes[name], self.init_dirs[name], kind=self.kinds[name], trained=name in self.trained
            )
            for name, rows in self.rows.items()
        }
        meta = {
            "method": c.method,
            "optimizer": c.optimizer,
            "initializer": c.init,
            "base_model": model_record(c.model),
            "family": self.adapter.family,
            "pipeline_class": self.adapter.pipeline_class,
            "step": step,
            "steps": c.steps,
            "batch_size": c.batch_size,
            "grad_accum": c.grad_accum,
            "lr": c.effective_lr,
            "kappa": c.kappa,
            "beta": c.beta,
            "magnitude": c.magnitude if self.method.fixed_norm else None,
            "resolution": c.resolution,
            "seed": c.seed,
            "pooling": c.pooling,
            "quantize": c.quantize,
            **({"lora": self.lora.record(), "word_steps": self.word_steps} if self.lora is not None else {}),
            "encoders_trained": self.trained,
            "skipped_steps": self.skipped,
            "family_options": self.adapter.record_options(),
            "vocab_norms": self.stats,
            "dti_version": __version__,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        return Concept(c.token, encoders, meta)

    def record_values(self) -> torch.Tensor:
        """The rows' norms and angles to their initializer (radians), on the device: per encoder,
        its norms then its angles (what :meth:`record` reads)."""
        parts = []
        for name, rows in self.rows.items():
            vectors = rows.vectors()
            parts += [vectors.norm(dim=-1).to(self._row_dtype), sphere.angle(vectors, self.init_dirs_dev[name]).to(self._row_dtype)]
        return torch.cat(parts)

    def record(self, step: int, loss: float | None, values: Sequence[float] | None = None) -> dict[str, Any]:
        """Step ``step``'s log record, from :meth:`record_values` read on the host (now, if not given)."""
        values = list(self.record_values().tolist() if values is None else values)
        norms, angles, at = {}, {}, 0
        for name, rows in self.rows.items():
            n = rows.param.shape[0]
            norms[name] = [round(float(v), 6) for v in values[at : at + n]]
            angles[name] = [round(math.degrees(float(a)), 4) for a in values[at + n : at + 2 * n]]
            at += 2 * n
        skipped = {"skipped": True} if loss is None and step > 0 else {}
        return {
            "step": step,
            "loss": None if loss is None else round(loss, 6),
            **skipped,
            "lr": self.config.effective_lr,
            "norms": norms,
            "angle_to_init_deg": angles,
        }

    def samples(self) -> Image.Image:
        """The validation grid: rows = prompts, columns = seeds, through the pipeline's own ``__call__``."""
        c = self.config
        prompts = [p.format(c.token) for p in c.validation_prompts]
        with offload.vae_home(self.adapter), frozen.all_home(self.adapter):
            rows = [
                [render(self.adapter.pipe, p, s, c.sample_steps, c.validation_guidance, c.resolution) for s in c.validation_seeds]
                for p in prompts
            ]
        return grid(rows, row_labels=prompts, col_labels=[f"seed {s}" for s in c.validation_seeds])

    def save_checkpoint(self) -> None:
        if self.run is not None and self.ranks.main:
            checkpoints.save(self.run.checkpoints, self.step_count, self.state_dict(), self.config.keep_checkpoints)

    # ------------------------------------------------------------------ loop
    def fit(self, stop: StopRequests | None = None) -> Concept:
        """Steps from where the trainer stands (0, or a loaded checkpoint's step) to the last. Steps are
        launched without waiting for the device; the host reads their results every ``sync_every``
        steps and at each step that writes something (log flush, snapshot, samples, checkpoint, the
        end) or sees a stop request."""
        c = self.config
        quiet = not (c.progress and self.ranks.main)
        bar = tqdm(total=c.steps, initial=self.step_count, desc=f"training {c.token} ({c.method})", disable=quiet, dynamic_ncols=True)
        pending: list[tuple[int, torch.Tensor]] = []
        try:
            for step in range(self.step_count + 1, c.steps + 1):
                pending.append((step, self.launch(step)))
                bar.update(1)
                asked = stop is not None and stop.requested is not None
                if self.sync_due(step, asked):
                    self.flush(pending, bar)
                    pending.clear()
                    if stop is not None and step < c.steps and self.ranks.any_(stop.requested is not None):
                        self._stop_signal(step, stop)
        finally:
            bar.close()
        self.check_learned()
        return self.concept(c.steps)

    def check_learned(self) -> None:
        """At the last step: a run none of whose steps was applied learned nothing, and says so
        (:class:`RunStopped`, status 1) instead of writing the initializer as a learned word."""
        if self.step_count > 0 and self.skipped >= self.step_count:
            hint = "lower --lr" + (" or use --precision fp32" if self.adapter.denoiser.dtype != torch.float32 else "")
            raise RunStopped(
                f"every one of the {self.step_count} steps was skipped (the loss or a gradient was never finite, or every update "
                f"pushed a row past norm {MAX_ROW_NORM:g}): nothing was learned and no concept was written; {hint} and start again",
                1,
            )

    def sync_due(self, step: int, stop_asked: bool = False) -> bool:
        """Whether the host reads the device after step ``step``: on the cadence, at the last step, at a
        step that saves something, and (one process) when a stop was asked. Every process of a
        data-parallel run answers alike, so their collectives meet."""
        c = self.config
        every = lambda n: bool(n) and step % n == 0  # noqa: E731
        saves = every(c.snapshot_every) or every(c.checkpoint_every) or (c.validate and every(c.validation_every))
        return every(max(self.sync_every, 1)) or step >= c.steps or saves or (stop_asked and self.ranks.world == 1)

    def flush(self, pending: Sequence[tuple[int, torch.Tensor]], bar: Any = None) -> None:
        """Read the launched steps' rows (one host sync) and do their host work in order."""
        if not pending:
            return
        rows = torch.stack([row for _, row in pending]).tolist()
        for (step, _), row in zip(pending, rows):
            self.after_step(step, self.settle(step, row), bar, row[3:])

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files (the main process of a run with a folder)."""
        return self.run is not None and self.ranks.main

    def after_step(self, step: int, loss: float | None, bar: Any = None, values: Sequence[float] | None = None) -> dict[str, Any]:
        """Record step ``step`` (``values``: its :meth:`record_values`, read) and hand it to the callbacks
        (log line, snapshot, samples, checkpoint, as the settings ask); stop the run
        (:class:`RunStopped`) after ``max_bad_steps`` bad steps in a row."""
        c = self.config
        rec = self.record(step, loss, values)
        self.records.append(rec)
        if bar is not None:
            first = next(iter(rec["norms"].values()))
            bar.set_postfix(loss="skipped" if loss is None else f"{loss:.4f}", norm=f"{first[0]:.3f}")
        if self.writes:
            for callback in self.callbacks:
                callback.on_step(self, step, rec, loss)
        if self.bad_in_row >= c.max_bad_steps:
            self._stop_numerics(step)
        return rec

    def _resume_hint(self) -> str:
        return f"dti train --resume {self.run.path}" if self.run is not None else "a new run"

    def _save_stopped(self, step: int) -> Path | None:
        """A stopping run's checkpoint and the concept of ``step`` (the last good one); its path."""
        if self.run is None or not self.ranks.main:
            return None
        self.save_checkpoint()
        return self.concept(step).save(self.run.snapshot(step))

    def _stop_numerics(self, step: int) -> None:
        self.step_count = step  # steps launched after it were held back on the device: the state is step's
        c, good = self.config, step - self.bad_in_row
        path = self._save_stopped(good)
        where = f"; the last good concept (step {good}) is {path}" if path else ""
        hint = "lower --lr" + (" or use --precision fp32" if self.adapter.denoiser.dtype != torch.float32 else "")
        raise RunStopped(
            f"the loss or gradient was not finite (or an update pushed a row past norm {MAX_ROW_NORM:g}) for {self.bad_in_row} steps "
            f"in a row (steps {good + 1}-{step} of {c.steps}, "
            f"skipped){where}; {hint} and start again, or continue with `{self._resume_hint()}`",
            1,
        )

    def _stop_signal(self, step: int, stop: StopRequests) -> None:
        path = self._save_stopped(step)
        where = f"; checkpoint and concept saved ({path})" if path else ""
        message = f"{stop.requested} at step {step} of {self.config.steps}{where}; continue with `{self._resume_hint()}`"
        raise RunStopped(message, stop.exit_code)

    def start(self, saved: dict[str, Any] | None = None) -> None:
        """Set up, restore ``saved`` (a checkpoint's state), write the run's config.json (and a
        resumed run's log as of its checkpoint)."""
        self.setup()
        if saved is not None:
            self.load_state_dict(saved)
        if self.writes:
            for callback in self.callbacks:
                callback.on_start(self, saved is not None)

    def complete(self, concept: Concept) -> None:
        """The last step is done: write the results and commit an overwrite."""
        self.finish(concept)
        if self.run is not None and self.ranks.main:
            self.run.commit()
        self.ranks.barrier()

    def finish(self, concept: Concept) -> None:
        """Write the run's results through the callbacks: samples, plot, the tools' files, the final
        checkpoint (so the run can later be trained further), and the concept last."""
        if self.writes:
            for callback in self.callbacks:
                callback.on_finish(self, concept)


def usable_rows(rows: torch.Tensor) -> torch.Tensor:
    """Whether every row is finite and within the norm a concept file may hold (a scalar tensor)."""
    norms = rows.detach().double().norm(dim=-1)
    return rows.isfinite().all() & (norms <= MAX_ROW_NORM).all() & (norms > 0).all()
