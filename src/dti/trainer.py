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

from dti import __version__, sphere
from dti.concept import Concept, EncoderVectors
from dti.config import TrainConfig, check, resolve
from dti.data import TEMPLATE_SETS, LatentCache, SubjectData, list_images, load_image
from dti.errors import DTIError
from dti.fileio import write_json
from dti.formats import write, write_diffusers
from dti.generate import render
from dti.images import grid
from dti.loading import attach_vectors
from dti.models import Adapter, CropInfo, EncoderSlot, adapter_for, load_adapter, load_tokenizers, model_hints, resolve_dtype
from dti.optim import RiemannianSGD
from dti.plots import plot_norms
from dti.run_folder import WEBUI_DIR, RunFolder, check_output
from dti.tokens import (
    TrainableRows,
    check_placeholder,
    initializer_ids,
    resolve_magnitude,
    vocab_stats,
    vocabulary_rows,
)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise DTIError(f"--device {device!r} is not a torch device; use auto, cpu or cuda") from None


def load_photos(folder: str | Path) -> list[Image.Image]:
    """All photos of the subject, decoded (so an unreadable file fails before any model loads)."""
    return [load_image(path) for path in list_images(folder)]


class Trainer:
    """One run: built from a resolved config, an adapter and decoded photos."""

    def __init__(self, config: TrainConfig, adapter: Adapter, photos: Sequence[Image.Image], run: RunFolder | None) -> None:
        self.config = c = config
        self.adapter = adapter
        self.run = run
        templates = TEMPLATE_SETS[c.templates] if isinstance(c.templates, str) else tuple(c.templates)
        self.data = SubjectData(photos, c.resolution, c.token, templates, snap=adapter.resolution_multiple, seed=c.seed)
        self.cache = LatentCache(adapter.encode_pixels)
        self.generator = torch.Generator("cpu").manual_seed(c.seed)
        self.attached: list[EncoderSlot] = []
        self.rows: dict[str, TrainableRows] = {}
        self.init_dirs: dict[str, torch.Tensor] = {}
        self.magnitudes: dict[str, float | None] = {}
        self.stats: dict[str, dict[str, float]] = {}
        self.records: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        c = self.config
        self.adapter.freeze()
        check_family_settings(type(self.adapter), [slot.name for slot in self.adapter.encoders], c)
        self.adapter.options.update(c.family_options or {})
        if c.gradient_checkpointing:
            self.adapter.denoiser.enable_gradient_checkpointing()
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
        self.kinds = {slot.name: slot.kind for slot in slots}
        self.crossinit_targets = {name: rows.vectors() for name, rows in self.rows.items()}
        self.optimizer = self._optimizer()

    def _optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        lr = c.effective_lr
        if c.optimizer == "rsgd":
            groups = [
                {"params": [self.rows[name].param], "prior": self.init_dirs[name].to(self.rows[name].param.device)} for name in self.trained
            ]
            return RiemannianSGD(groups, lr=lr, kappa=c.kappa, beta=c.beta, eps=c.eps)
        params = [self.rows[name].param for name in self.trained]
        return torch.optim.AdamW(params, lr=lr, betas=tuple(c.adam_betas), weight_decay=c.weight_decay)

    def detach(self) -> None:
        from dti.attach import detach

        for slot in self.attached:
            detach(slot.tokenizer, slot.text_encoder, self.config.token)
        self.attached.clear()

    # ------------------------------------------------------------------ one step
    def _regularizer(self) -> torch.Tensor | None:
        """Prior terms the optimizer does not apply itself."""
        c = self.config
        terms = []
        if c.method == "dti" and c.optimizer == "adamw" and c.kappa > 0:
            for name in self.trained:
                rows, mu = self.rows[name], self.init_dirs[name].to(self.rows[name].param.device)
                terms.append(-c.kappa * (mu * sphere.normalize(rows.param)).sum())
        if c.method == "crossinit" and c.crossinit_lambda > 0:
            for name in self.trained:
                terms.append(c.crossinit_lambda * torch.nn.functional.mse_loss(self.rows[name].param, self.crossinit_targets[name]))
        return torch.stack(terms).sum() if terms else None

    def step(self) -> float:
        c = self.config
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(c.grad_accum):
            samples = self.data.batch(c.batch_size)
            latents = self.cache.sample(self.data, samples, self.generator)
            crops = [CropInfo(self.data.original_sizes[s.image], (s.top, s.left), (c.resolution, c.resolution)) for s in samples]
            loss = self.adapter.loss(latents, [s.prompt for s in samples], crops, self.generator)
            objective = loss
            reg = self._regularizer()
            if reg is not None:
                objective = objective + reg
            (objective / c.grad_accum).backward()
            total += float(loss.detach()) / c.grad_accum
        if not math.isfinite(total):
            raise FloatingPointError(f"loss became {total}; lower --lr or use --precision fp32")
        self.optimizer.step()
        return total

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
            "family_options": self.adapter.record_options(),
            "vocab_norms": self.stats,
            "dti_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        return Concept(c.token, encoders, meta)

    def record(self, step: int, loss: float | None) -> dict[str, Any]:
        norms, angles = {}, {}
        for name, rows in self.rows.items():
            vectors = rows.vectors().cpu()
            norms[name] = [round(float(n), 6) for n in vectors.norm(dim=-1)]
            angles[name] = [round(math.degrees(float(a)), 4) for a in sphere.angle(vectors, self.init_dirs[name])]
        return {
            "step": step,
            "loss": None if loss is None else round(loss, 6),
            "lr": self.config.effective_lr,
            "norms": norms,
            "angle_to_init_deg": angles,
        }

    def samples(self) -> Image.Image:
        """The validation grid: rows = prompts, columns = seeds, through the pipeline's own ``__call__``."""
        c = self.config
        prompts = [p.format(c.token) for p in c.validation_prompts]
        rows = [
            [render(self.adapter.pipe, p, s, c.validation_steps, c.validation_guidance, c.resolution) for s in c.validation_seeds]
            for p in prompts
        ]
        return grid(rows, row_labels=prompts, col_labels=[f"seed {s}" for s in c.validation_seeds])

    def _save_samples(self, step: int) -> None:
        assert self.run is not None
        sheet = self.samples()
        path = self.run.sample_grid(step)
        path.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(path)

    # ------------------------------------------------------------------ loop
    def fit(self) -> Concept:
        c = self.config
        start = self.record(0, None)
        self.records.append(start)
        if self.run is not None:
            self.run.append_log(start)
        bar = tqdm(range(1, c.steps + 1), desc=f"dti {c.method}", disable=not c.progress, dynamic_ncols=True)
        for step in bar:
            loss = self.step()
            rec = self.record(step, loss)
            self.records.append(rec)
            if self.run is not None and (step % max(c.log_every, 1) == 0 or step == c.steps):
                self.run.append_log(rec)
            first = next(iter(rec["norms"].values()))
            bar.set_postfix(loss=f"{loss:.4f}", norm=f"{first[0]:.3f}")
            if self.run is None:
                continue
            if c.snapshot_every and step % c.snapshot_every == 0 and step < c.steps:
                self.concept(step).save(self.run.snapshot(step))
            if c.validate and c.validation_every and step % c.validation_every == 0 and step < c.steps:
                self._save_samples(step)
        return self.concept(c.steps)

    def finish(self, concept: Concept) -> None:
        """Write the run's results: samples, plot, diffusers files, and the concept last."""
        if self.run is None:
            return
        c = self.config
        if c.validate:
            self._save_samples(c.steps)
            sheet = Image.open(self.run.sample_grid(c.steps))
            sheet.save(self.run.path / "samples.png")
        plot_norms(self.records, self.stats, self.run.norms_plot, title=f"{c.token} ({c.method}, init '{c.init}')")
        write_diffusers(concept, self.run.path)
        write(concept, "a1111", self.run.path / WEBUI_DIR)
        concept.save(self.run.concept)


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
    as it was found). ``settings`` are :class:`~dti.config.TrainConfig` fields, e.g.
    ``steps=400, method="ti"``.
    """
    base = config or TrainConfig()
    given = {"photos": photos, "token": token, "init": init, "output": output}
    pipe = None
    if model is not None and not isinstance(model, (str, os.PathLike)):
        pipe = model
        given["model"] = getattr(getattr(pipe, "config", None), "_name_or_path", None) or type(pipe).__name__
    elif model is not None:
        given["model"] = str(model)
    unknown = set(settings) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise TypeError(f"unknown training settings: {sorted(unknown)}")
    values = {k: str(v) if isinstance(v, os.PathLike) else v for k, v in given.items() if v is not None}
    c = dataclasses.replace(base, **values, **settings)
    for name in ("photos", "token", "model"):
        if not getattr(c, name):
            raise DTIError(f"--{name} is missing; see `dti train --help`")
    check(c)
    if c.output:
        check_output(c.output, c.overwrite)
    photo_images = load_photos(c.photos)
    device = resolve_device(c.device)
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
    run = None
    if c.output:
        run = RunFolder(c.output)
        run.create(c.overwrite)
    trainer = Trainer(c, adapter, photo_images, run)
    try:
        trainer.setup()
        if run is not None:
            write_json(run.config, {**c.to_dict(), "dti_version": __version__})
        concept = trainer.fit()
        trainer.finish(concept)
    finally:
        trainer.detach()
    return concept
