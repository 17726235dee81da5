"""The training loop: photos + pipeline adapter + trainable rows + optimizer -> a Concept.

Everything that can be wrong with the input is checked before anything is written: settings,
output folder, photos, model family, placeholder and initializer. Then the run folder is
created and filled as training goes (log, snapshots, samples), the concept last.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from dti import __version__
from dti.concepts.concept import MAX_ROW_NORM, Concept, EncoderVectors
from dti.concepts.formats import check_trigger_word, file_stem, write, write_diffusers
from dti.core import sphere
from dti.core.devices import resolve_device
from dti.core.draws import SampleDraws, batch_indices
from dti.core.errors import DTIError, warn
from dti.core.files import save_image, write_json
from dti.core.images import grid
from dti.core.optim import RiemannianSGD, guarded_step
from dti.models import Adapter, CropInfo, EncoderSlot, adapter_for, load_adapter, load_tokenizers, model_hints, resolve_dtype
from dti.text.vocab import TrainableRows, check_placeholder, initializer_ids, resolve_magnitude, vocab_stats, vocabulary_rows
from dti.training import checkpoints, frozen, offload
from dti.training.config import TrainConfig, check, check_settings, ignored_settings, resolve
from dti.training.data import TEMPLATE_SETS, LatentCache, SubjectData, check_photos, list_images, load_image
from dti.training.distributed import Ranks
from dti.training.lock import RunLock
from dti.training.plots import plot_norms
from dti.training.run_folder import WEBUI_DIR, RunFolder
from dti.training.stopping import RunStopped, StopRequests
from dti.use.generate import render
from dti.use.loading import attach_vectors


def load_photos(folder: str | Path) -> list[Image.Image]:
    """All photos of the subject, decoded (so an unreadable file fails before any model loads)."""
    return [load_image(path) for path in list_images(folder)]


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
        self, config: TrainConfig, adapter: Adapter, photos: Sequence[Image.Image], run: RunFolder | None, ranks: Ranks | None = None
    ) -> None:
        self.config = c = config
        self.adapter = adapter
        self.run = run
        self.ranks = ranks or Ranks()
        if c.batch_size % self.ranks.world:
            raise DTIError(f"--batch-size {c.batch_size} must split evenly over the {self.ranks.world} processes; use a multiple")
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
        device = adapter.device
        self._row_dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        self.sync_every = default_sync_every(device)

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        c = self.config
        self.adapter.freeze()
        check_family_settings(type(self.adapter), [slot.name for slot in self.adapter.encoders], c)
        self.adapter.options.update(c.family_options or {})
        if c.gradient_checkpointing:
            self.adapter.denoiser.enable_gradient_checkpointing()
        self._undo_compile = None
        counts = set()
        slots = self.adapter.encoders
        trained = set(c.encoders or [slot.name for slot in slots])
        for slot in slots:
            ids = initializer_ids(slot.tokenizer, c.init, slot.name)
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
            elif c.method == "dti":
                m = resolve_magnitude(c.magnitude, stats)
                rows = TrainableRows(raw, "sphere" if c.optimizer == "rsgd" else "normalized", m)
            elif c.method == "crossinit":
                m = None
                rows = TrainableRows(self.adapter.contextual_init(slot, ids).cpu(), "free")
            else:
                m = None
                rows = TrainableRows(raw, "free")
            self.magnitudes[slot.name] = m
            rows.to(self.adapter.device)
            self.rows[slot.name] = rows
        if len(counts) != 1:
            raise DTIError(f"--init {c.init!r} gives different vector counts per encoder {sorted(counts)}; use a single common word")
        for slot in slots:
            attach_vectors(slot, c.token, self.rows[slot.name], c.pooling)
            self.attached.append(slot)
        self.trained = [slot.name for slot in slots if slot.name in trained]
        # encoders that do not learn the word: each prompt's output kept once, the encoder off the device
        crop = CropInfo(self.data.original_sizes[0], (0, 0), (c.resolution, c.resolution))
        frozen.keep_outputs(
            self.adapter, [s for s in slots if s.name not in trained], [s for s in slots if s.name in trained], self.data.prompts(), crop
        )
        self.kinds = {slot.name: slot.kind for slot in slots}
        self.crossinit_targets = {name: rows.vectors() for name, rows in self.rows.items()}
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
        self.records = [self.record(0, None)]
        if c.crop_positions:  # every crop the run can draw, encoded before the first step; then the VAE can go
            with offload.vae_home(self.adapter):
                for crop in self.data.crops():
                    self.cache.distribution(self.data, crop)
            offload.park(self.adapter)

    def _optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        lr = c.effective_lr
        if c.optimizer == "rsgd":
            groups = [
                {"params": [self.rows[name].param], "prior": self.init_dirs[name].to(self.rows[name].param.device)} for name in self.trained
            ]
            return RiemannianSGD(groups, lr=lr, kappa=c.kappa, beta=c.beta, eps=c.eps)
        params = [self.rows[name].param for name in self.trained]
        # capturable: the step counter stays on the GPU, so a skipped step is undone there (guarded_step)
        capturable = self.adapter.device.type == "cuda"
        return torch.optim.AdamW(params, lr=lr, betas=tuple(c.adam_betas), weight_decay=c.weight_decay, capturable=capturable)

    def detach(self) -> None:
        from dti.text.attach import detach

        for slot in self.attached:
            detach(slot.tokenizer, slot.text_encoder, self.config.token)
        self.attached.clear()
        offload.unpark(self.adapter)
        frozen.release(self.adapter)
        if getattr(self, "_undo_compile", None) is not None:
            self._undo_compile()
            self._undo_compile = None

    # ------------------------------------------------------------------ one step
    def _regularizer(self) -> torch.Tensor | None:
        """Prior terms the optimizer does not apply itself."""
        c = self.config
        terms = []
        if c.method == "dti" and c.optimizer == "adamw" and c.kappa > 0:
            for name in self.trained:
                rows, mu = self.rows[name], self.init_dirs_dev[name]
                terms.append(-c.kappa * (mu * sphere.normalize(rows.param)).sum())
        if c.method == "crossinit" and c.crossinit_lambda > 0:
            for name in self.trained:
                terms.append(c.crossinit_lambda * torch.nn.functional.mse_loss(self.rows[name].param, self.crossinit_targets[name]))
        return torch.stack(terms).sum() if terms else None

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
            applied = guarded_step(self.optimizer, self.trainable(), (synced[1] > 0) & ~halted, usable_rows)
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
            "base_model": str(c.model),
            "family": self.adapter.family,
            "pipeline_class": self.adapter.pipeline_class,
            "step": step,
            "steps": c.steps,
            "batch_size": c.batch_size,
            "grad_accum": c.grad_accum,
            "lr": c.effective_lr,
            "kappa": c.kappa,
            "beta": c.beta,
            "magnitude": c.magnitude if c.method == "dti" else None,
            "resolution": c.resolution,
            "seed": c.seed,
            "pooling": c.pooling,
            "encoders_trained": self.trained,
            "skipped_steps": self.skipped,
            "family_options": self.adapter.record_options(),
            "vocab_norms": self.stats,
            "dti_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
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
                [render(self.adapter.pipe, p, s, c.validation_steps, c.validation_guidance, c.resolution) for s in c.validation_seeds]
                for p in prompts
            ]
        return grid(rows, row_labels=prompts, col_labels=[f"seed {s}" for s in c.validation_seeds])

    def _save_samples(self, step: int) -> None:
        assert self.run is not None
        save_image(self.samples(), self.run.sample_grid(step))

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
        self.begin_log()
        quiet = not (c.progress and self.ranks.main)
        bar = tqdm(total=c.steps, initial=self.step_count, desc=f"dti {c.method}", disable=quiet, dynamic_ncols=True)
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
        return self.concept(c.steps)

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

    def begin_log(self) -> None:
        """A fresh run's log starts with its step-0 record."""
        run = self.run if self.ranks.main else None
        if run is not None and self.step_count == 0:
            run.rewrite_log(self.records[:1])

    def after_step(self, step: int, loss: float | None, bar: Any = None, values: Sequence[float] | None = None) -> dict[str, Any]:
        """Record step ``step`` (``values``: its :meth:`record_values`, read); write its log line,
        snapshot, samples and checkpoint as the settings ask; stop the run (:class:`RunStopped`)
        after ``max_bad_steps`` bad steps in a row."""
        c = self.config
        run = self.run if self.ranks.main else None
        rec = self.record(step, loss, values)
        self.records.append(rec)
        if bar is not None:
            first = next(iter(rec["norms"].values()))
            bar.set_postfix(loss="skipped" if loss is None else f"{loss:.4f}", norm=f"{first[0]:.3f}")
        if run is not None:
            if step % max(c.log_every, 1) == 0 or step == c.steps or loss is None:
                run.append_log(rec)
            if c.snapshot_every and step % c.snapshot_every == 0 and step < c.steps:
                self.concept(step).save(run.snapshot(step))
            if c.validate and c.validation_every and step % c.validation_every == 0 and step < c.steps:
                self._save_samples(step)
            if c.checkpoint_every and step % c.checkpoint_every == 0 and step < c.steps:
                self.save_checkpoint()
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
        c, run = self.config, self.run
        self.setup()
        if saved is not None:
            self.load_state_dict(saved)
        if run is not None and self.ranks.main:
            write_json(run.config, _recorded_config(c))
            if saved is not None:
                logged = [r for r in self.records if r["step"] == 0 or r["step"] % max(c.log_every, 1) == 0 or r.get("skipped")]
                run.rewrite_log(logged)

    def complete(self, concept: Concept) -> None:
        """The last step is done: write the results and commit an overwrite."""
        self.finish(concept)
        if self.run is not None and self.ranks.main:
            self.run.commit()
        self.ranks.barrier()

    def finish(self, concept: Concept) -> None:
        """Write the run's results: samples, plot, diffusers files, the final checkpoint (so the
        run can later be trained further), and the concept last."""
        if self.run is None or not self.ranks.main:
            return
        c = self.config
        if c.validate:
            sheet = self.samples()
            save_image(sheet, self.run.sample_grid(c.steps))
            save_image(sheet, self.run.work / "samples.png")
        plot_norms(self.records, self.stats, self.run.norms_plot, title=f"{c.token} ({c.method}, init '{c.init}')")
        write_diffusers(concept, self.run.work)
        write(concept, "a1111", self.run.work / WEBUI_DIR / f"{self.webui_name}.safetensors")
        if c.checkpoint_every:
            self.save_checkpoint()
        concept.save(self.run.concept)


def usable_rows(rows: torch.Tensor) -> torch.Tensor:
    """Whether every row is finite and within the norm a concept file may hold (a scalar tensor)."""
    norms = rows.detach().double().norm(dim=-1)
    return rows.isfinite().all() & (norms <= MAX_ROW_NORM).all() & (norms > 0).all()


def webui_name(token: str, tokenizers: dict[str, Any], warn_user: bool = True) -> str:
    """The A1111 / ComfyUI / kohya file name (the trigger word those tools use): the token without
    brackets, or ``dti-<name>`` when that name is an ordinary word (A1111 would put the concept in
    place of every "toy" in every prompt), said once."""
    stem = file_stem(token)
    try:
        check_trigger_word(token, tokenizers)
    except DTIError:
        if warn_user:
            warn(
                f"{stem!r} is an ordinary word, so it cannot be the A1111 / ComfyUI trigger word; the single-file embedding is "
                f"webui/dti-{stem}.safetensors (type dti-{stem} in A1111, embedding:dti-{stem} in ComfyUI)"
            )
        return f"dti-{stem}"
    return stem


def check_words(tokenizers: dict[str, Any], token: str, init: str) -> None:
    """The placeholder must be new and the initializer known, in every encoder's tokenizer."""
    for name, tokenizer in tokenizers.items():
        check_placeholder(tokenizer, token, name)
        initializer_ids(tokenizer, init, name)


def check_family_settings(cls: type[Adapter], names: Sequence[str], c: TrainConfig) -> None:
    """``--encoders`` and ``--option`` must name what this model has (checked before weights load
    and before any folder is made); ``names`` are the model's text encoders."""
    unknown = sorted(set(c.encoders or names) - set(names))
    if unknown:
        raise DTIError(f"--encoders {','.join(unknown)} is not a text encoder of this model; it has {', '.join(names)}")
    unknown = sorted(set(c.family_options or {}) - set(cls.default_options))
    if unknown:
        have = ", ".join(sorted(cls.default_options)) or "none"
        raise DTIError(f"--option {unknown[0]} is not an option of {cls.pipeline_class}; it has {have}")
    for key, value in (c.family_options or {}).items():
        check_option_value(key, value, cls.default_options[key])


def check_option_value(key: str, value: Any, default: Any) -> None:
    """A family option has its default's type; numbers are finite, positive and sane."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise DTIError(f"--option {key}={value!r} must be true or false")
        return
    if isinstance(default, (int, float)):
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not numeric or (isinstance(default, int) and not isinstance(value, int)):
            kind = "a whole number" if isinstance(default, int) else "a number"
            raise DTIError(f"--option {key}={value!r} must be {kind}, e.g. {key}={default}")
        limit = 4096 if isinstance(default, int) else 1e3  # token counts of any encoder; guidance scales
        if not (math.isfinite(value) and 0 < value <= limit):
            raise DTIError(f"--option {key}={value!r} must be a finite number in (0, {limit:g}], e.g. {key}={default}")


def check_family_words(cls: type[Adapter], token: str) -> None:
    """Families whose pipelines lower-case prompts (PixArt, SANA) could never see a mixed-case token."""
    if getattr(cls, "lowercases_prompts", False) and token != token.lower():
        raise DTIError(f"--token {token!r} has capitals, but {cls.pipeline_class} lower-cases every prompt; use {token.lower()!r}")


def train(
    photos: str | os.PathLike | None = None,
    token: str | None = None,
    init: str | None = None,
    model: str | os.PathLike | Any | None = None,
    output: str | os.PathLike | None = None,
    *,
    config: TrainConfig | None = None,
    **settings: Any,
) -> Concept:
    """Learn a concept from a folder of photos; returns it and (with ``output``) writes a run folder.

    ``model`` is a hub id, a local diffusers folder, or an already loaded pipeline (it is left
    as it was found). ``settings`` are :class:`~dti.training.config.TrainConfig` fields, e.g.
    ``steps=400, method="ti"``. An interrupted run (SIGTERM, Ctrl-C, repeated non-finite
    losses) raises :class:`~dti.training.stopping.RunStopped` after saving a checkpoint; :func:`resume`
    continues it.
    """
    base = _base_config(config)
    given = {"photos": photos, "token": token, "init": init, "output": output}
    pipe = None
    if model is not None and not isinstance(model, (str, os.PathLike)):
        pipe = model
        given["model"] = getattr(getattr(pipe, "config", None), "_name_or_path", None) or type(pipe).__name__
    elif model is not None:
        given["model"] = str(model)
    settings = _checked_settings(settings)
    values = {k: str(v) if isinstance(v, os.PathLike) else v for k, v in given.items() if v is not None}
    c = dataclasses.replace(base, **values, **settings)
    for name in ("photos", "token", "model"):
        if not getattr(c, name):
            raise DTIError(f"--{name} is missing; see `dti train --help`")
    check(c)
    ranks = Ranks()
    if ranks.main:
        for line in ignored_settings(c):
            warn(line)
    lock = None
    if c.output and ranks.main:
        out = Path(c.output)
        if out.exists() and not out.is_dir():
            raise DTIError(f"--output {out} is a file; choose a folder path")
        lock = _take_lock(out, lambda: RunFolder.for_new_run(out, c.overwrite))
    try:
        run = None
        if c.output:  # the main process checks and owns the folder; the others only know where it is
            run = RunFolder.for_new_run(c.output, c.overwrite) if ranks.main else RunFolder(c.output)
        photo_paths = list_images(c.photos)
        photo_images = load_photos(c.photos)
        adapter, c = _prepare(c, pipe, ranks)
        if ranks.main:
            for line in check_photos(photo_images, c.resolution):
                warn(line)
        trainer = Trainer(c, adapter, photo_images, run, ranks)
        trainer.extra_state["photos"] = checkpoints.photos_fingerprint(photo_paths)
        if run is not None and ranks.main:
            run.create()
        return _run(trainer, saved=None)
    finally:
        if lock is not None:
            lock.release()
            _remove_if_empty(lock.folder)


def resume(run_folder: str | os.PathLike, pipe: Any | None = None, **settings: Any) -> Concept:
    """Continue the run in ``run_folder`` from its last checkpoint, bit-identically to a run that
    was never stopped. ``settings`` may change only what does not change the result: ``steps``
    (to train a finished run further), ``progress``, ``device``, ``checkpoint_every``,
    ``keep_checkpoints``, ``max_bad_steps``. A finished run is left as it is: one warning line,
    and its concept is returned."""
    try:
        return resume_run(run_folder, pipe, **settings)
    except RunFinished as done:
        warn(str(done))
        return Concept.load(RunFolder.for_resume(run_folder).path)


def resume_run(run_folder: str | os.PathLike, pipe: Any | None = None, **settings: Any) -> Concept:
    allowed = {"steps", "progress", "device", "checkpoint_every", "keep_checkpoints", "max_bad_steps"}
    settings = _checked_settings(settings, "dti.resume()")
    changed = sorted(set(settings) - allowed)
    if changed:
        flag = "--" + changed[0].replace("_", "-")
        raise DTIError(
            f"{flag} cannot change when a run is resumed (the run continues with its own settings); "
            f"start a new run to change it, or resume with only --steps/--device/--quiet"
        )
    ranks = Ranks()
    run = RunFolder.for_resume(run_folder)
    c = TrainConfig.from_file(run.config)
    c = dataclasses.replace(c, output=str(run.path), overwrite=False, **settings)
    check(c)
    lock = _take_lock(run.path, lambda: None) if ranks.main else None
    try:
        found = checkpoints.load_latest(run.checkpoints)
        finished = run.concept.is_file()
        if finished and found is not None and found[0] >= c.steps:
            done = found[0]
            raise RunFinished(f"{run.path} already finished at step {done}; nothing to do (pass --steps above {done} to train further)")
        if finished and found is None:
            raise RunFinished(f"{run.path} already finished and keeps no checkpoint; nothing to do")
        if found is not None and found[0] > c.steps:
            raise DTIError(f"--steps {c.steps} is below the step {found[0]} this run already reached; pass more steps")
        photo_paths = list_images(c.photos)
        photo_images = load_photos(c.photos)
        adapter, c = _prepare(c, pipe, ranks)
        trainer = Trainer(c, adapter, photo_images, run, ranks)
        trainer.extra_state["photos"] = checkpoints.photos_fingerprint(photo_paths)
        if found is not None:
            checkpoints.check_same_photos(found[1].get("extra", {}).get("photos"), trainer.extra_state["photos"], c.photos)
        return _run(trainer, saved=found[1] if found else None)
    finally:
        if lock is not None:
            lock.release()


class RunFinished(Exception):
    """``resume`` of a run that has nothing left to do (the CLI says so and exits 0)."""


def _base_config(config: TrainConfig | str | os.PathLike | dict[str, Any] | None) -> TrainConfig:
    """``config=``: a TrainConfig, a settings file (.toml / .json) or a dict of settings."""
    if config is None:
        return TrainConfig()
    if isinstance(config, TrainConfig):
        return config
    if isinstance(config, (str, os.PathLike)):
        return TrainConfig.from_file(config)
    if isinstance(config, dict):
        return TrainConfig.from_dict(config, source="config=")
    raise DTIError(f"config= takes a TrainConfig, a .toml/.json settings file or a dict, not a {type(config).__name__}")


def _checked_settings(settings: dict[str, Any], source: str = "dti.train()") -> dict[str, Any]:
    """Keyword settings of the Python API: known fields of the right types, or one line."""
    return dict(check_settings(settings, source)) if settings else {}


def _take_lock(folder: Path, check_folder: Any) -> RunLock:
    """Lock ``folder`` (refused while another live run holds it), then run the folder checks; a
    folder this call created is removed again when a check refuses it."""
    created = not folder.exists()
    lock = RunLock(folder)
    lock.acquire()
    try:
        check_folder()
    except BaseException:
        lock.release()
        if created:
            _remove_if_empty(folder)
        raise
    return lock


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _prepare(c: TrainConfig, pipe: Any | None, ranks: Ranks) -> tuple[Adapter, TrainConfig]:
    """Load (or adopt) the pipeline after every cheap check, and resolve the family's defaults."""
    device = ranks.device if ranks.device is not None and c.device == "auto" else resolve_device(c.device)
    if pipe is None:
        cls, tokenizers = load_tokenizers(c.model)  # fail fast on token/initializer, before the weights
        check_family_words(cls, c.token)
        check_family_settings(cls, list(tokenizers), c)
        check_words(tokenizers, c.token, c.init)
        adapter = load_adapter(c.model, resolve_dtype(c.precision, device), device, quiet=not c.progress)
    else:
        adapter = adapter_for(pipe)
    check_family_words(type(adapter), c.token)
    check_words({slot.name: slot.tokenizer for slot in adapter.encoders}, c.token, c.init)
    check_family_settings(type(adapter), [slot.name for slot in adapter.encoders], c)
    c = resolve(c, adapter.defaults, adapter.native_resolution(), model_hints(c.model))
    if c.resolution % adapter.resolution_multiple:
        raise DTIError(f"--resolution {c.resolution} must be a multiple of {adapter.resolution_multiple} for this model")
    return adapter, c


def _recorded_config(c: TrainConfig) -> dict[str, Any]:
    """The resolved config as saved with the run: local paths made absolute, so ``--resume``
    works from any folder."""
    data = {**c.to_dict(), "dti_version": __version__}
    data["photos"] = str(Path(c.photos).resolve())
    if Path(c.model).exists():
        data["model"] = str(Path(c.model).resolve())
    return data


def _run(trainer: Trainer, saved: dict[str, Any] | None) -> Concept:
    """Set up, restore ``saved``, train to the last step, write the results, commit an overwrite."""
    c, run = trainer.config, trainer.run
    try:
        with StopRequests() as stop:
            trainer.start(saved)
            try:
                concept = trainer.fit(stop)
            except KeyboardInterrupt:  # a second Ctrl-C: the last periodic checkpoint remains
                hint = f"; continue from its last checkpoint with `{trainer._resume_hint()}`" if run is not None else ""
                raise RunStopped(f"Ctrl-C at step {trainer.step_count} of {c.steps}{hint}", 130) from None
            trainer.complete(concept)
    finally:
        trainer.detach()
    return concept
