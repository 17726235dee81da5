"""A training run as a session over its folder: set up (checks, lock, run folder, model), run, and
resume; the public ``dti.train`` and ``dti.resume``.

Everything that can be wrong with the input is checked before anything is written: settings,
output folder, photos, model family, placeholder and initializer. Then the run folder is created
and the :class:`~dti.training.loop.Trainer` fills it as training goes (its callbacks), the concept
last. One writer per folder (:mod:`dti.training.lock`); a killed run resumes bit-identically from
its last checkpoint (:func:`resume`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from dti.concepts.concept import Concept
from dti.core.devices import resolve_device, resolve_dtype
from dti.core.errors import DTIError, note, warn
from dti.models import Adapter, adapter_for, load_adapter, load_tokenizers, model_hints
from dti.training import checkpoints, memory, quantize, quanto_extension
from dti.training.checks import check_family_settings, check_family_words, check_words
from dti.training.config import TrainConfig, check, check_settings, ignored_settings, resolve
from dti.training.data import check_photos, list_images, load_photos
from dti.training.distributed import Ranks
from dti.training.lock import RunLock
from dti.training.loop import Trainer
from dti.training.run_folder import RunFolder
from dti.training.stopping import RunStopped, StopRequests


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
    settings = checked_settings(settings)
    values = {k: str(v) if isinstance(v, os.PathLike) else v for k, v in given.items() if v is not None}
    c = dataclasses.replace(base, **values, **settings)
    for name in ("photos", "token", "model"):
        if not getattr(c, name):
            raise DTIError(f"{{{name}}} is missing; see `dti train --help`", settings=[name])
    check(c)
    ranks = Ranks()
    lock = None
    if c.output and ranks.main:
        out = Path(c.output)
        if out.exists() and not out.is_dir():
            raise DTIError(f"{{output}} {out} is a file; choose a folder path", settings=["output"])
        lock = take_lock(out, lambda: RunFolder.for_new_run(out, c.overwrite, inputs(c)))
    if ranks.main:  # after the output's refusals, which are then the only line
        for line in ignored_settings(c):
            warn(line)
    try:
        run = None
        if c.output:  # the main process checks and owns the folder; the others only know where it is
            run = RunFolder.for_new_run(c.output, c.overwrite, inputs(c)) if ranks.main else RunFolder(c.output)
        photo_paths = list_images(c.photos)
        photo_images = load_photos(c.photos)
        adapter, c = prepare(c, pipe, ranks, given={k for k, v in settings.items() if v is not None})
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
            remove_if_empty(lock.folder)


def resume(run_folder: str | os.PathLike, pipe: Any | None = None, **settings: Any) -> Concept:
    """Continue the run in ``run_folder`` from its last checkpoint, bit-identically to a run that
    was never stopped. ``settings`` may change only what does not change the result: ``steps``
    (to train a finished run further), ``progress``, ``device``, ``checkpoint_every``,
    ``keep_checkpoints``, ``max_bad_steps``. A finished run is left as it is: one warning line,
    and its concept is returned."""
    try:
        return resume_run(run_folder, pipe, **settings)[0]
    except RunFinished as done:
        warn(str(done))
        return Concept.load(RunFolder.for_resume(run_folder).path)


def resume_run(run_folder: str | os.PathLike, pipe: Any | None = None, **settings: Any) -> tuple[Concept, int]:
    """:func:`resume`, for callers that say how it went: (the concept, the step it continued from;
    0 when no checkpoint was readable and the run trained again from the start). A run with nothing
    left to do raises :class:`RunFinished`."""
    settings = checked_settings(settings, "dti.resume()")
    check_resume_settings(settings)
    ranks = Ranks()
    run = RunFolder.for_resume(run_folder)
    c = TrainConfig.from_file(run.config)
    c = dataclasses.replace(c, output=str(run.path), overwrite=False, **settings)
    check(c)
    lock = take_lock(run.path, lambda: None) if ranks.main else None
    try:
        found = checkpoints.load_latest(run.checkpoints)
        finished = run.concept.is_file()
        if finished and run.staged and (found is None or found[0] >= c.steps):
            if ranks.main:  # the overwrite finished but could not replace the earlier results: do it now
                run.commit()
            raise RunFinished(f"{run.path}: the finished overwrite now replaces the earlier results; nothing left to train")
        if finished and found is not None and found[0] >= c.steps:
            done = found[0]
            raise RunFinished(f"{run.path} already finished at step {done}; nothing to do (pass --steps above {done} to train further)")
        if finished and found is None:
            raise RunFinished(f"{run.path} already finished and keeps no checkpoint; nothing to do")
        if found is not None and found[0] > c.steps:
            raise DTIError(
                f"{{steps}} {c.steps} is below the step {found[0]} this run already reached; pass more steps", settings=["steps"]
            )
        if found is None and ranks.main:
            warn(
                f"{run.path} keeps no readable checkpoint (the run stopped before its first one, or they were removed or damaged); "
                "it trains again from step 0 with its own settings"
            )
        photo_paths = list_images(c.photos)
        photo_images = load_photos(c.photos)
        adapter, c = prepare(c, pipe, ranks)
        trainer = Trainer(c, adapter, photo_images, run, ranks)
        trainer.extra_state["photos"] = checkpoints.photos_fingerprint(photo_paths)
        if found is not None:
            checkpoints.check_same_photos(found[1].get("extra", {}).get("photos"), trainer.extra_state["photos"], c.photos)
        return _run(trainer, saved=found[1] if found else None), (found[0] if found else 0)
    finally:
        if lock is not None:
            lock.release()


#: What a resumed run may change: nothing that changes the result.
RESUME_SETTINGS = ("steps", "progress", "device", "checkpoint_every", "keep_checkpoints", "max_bad_steps")


def check_resume_settings(settings: dict[str, Any], what: str = "a run") -> None:
    """Refuse a setting a resumed run cannot change (it continues with its own settings)."""
    changed = sorted(set(settings) - set(RESUME_SETTINGS))
    if changed:
        raise DTIError(
            f"{{{changed[0]}}} cannot change when {what} is resumed (it continues with its own settings); start a new run "
            "to change it, or resume with only {steps}, {device}, {progress} and the checkpoint settings",
            settings=[changed[0], "steps", "device", "progress"],
        )


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


def checked_settings(settings: dict[str, Any], source: str = "dti.train()") -> dict[str, Any]:
    """Keyword settings of the Python API: known fields of the right types, or one line."""
    return dict(check_settings(settings, source)) if settings else {}


def take_lock(folder: Path, check_folder: Any) -> RunLock:
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
            remove_if_empty(folder)
        raise
    return lock


def inputs(c: TrainConfig) -> dict[str, Any]:
    """The folders a run reads, which its output must stay out of."""
    return {"photos": c.photos, "model": c.model}


def remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def prepare(c: TrainConfig, pipe: Any | None, ranks: Ranks, given: set[str] | None = None) -> tuple[Adapter, TrainConfig]:
    """Load (or adopt) the pipeline after every cheap check, and resolve the family's defaults. ``given``: settings
    the caller gave even at their default value (the others given are those that differ from it), kept by ``vram``."""
    device = ranks.device if ranks.device is not None and c.device == "auto" else resolve_device(c.device)
    hints = model_hints(c.model)
    words = hints.get("class_words", [])
    if c.vram is not None:
        c = _vram(c, pipe, device, ranks, given or set())
    if c.quantize != "none":
        quantize.load(c.quantize)  # the backend imported quietly, before diffusers or transformers import it loudly
        if c.quantize == "int4" and torch.device(device).type == "cpu":
            quanto_extension.ready()  # built now, said, and never a silent wait on a lock a killed run left
    if pipe is None:
        cls, tokenizers = load_tokenizers(c.model)  # fail fast on token/initializer, before the weights
        check_family_words(cls, c.token)
        check_family_settings(cls, list(tokenizers), c)
        check_words(tokenizers, c.token, c.init, words)
        dtype = resolve_dtype(c.precision, device)
        if c.quantize == "none":
            adapter = load_adapter(c.model, dtype, device, quiet=not c.progress)
        else:  # quantized in host memory, then moved: the device never holds the full-precision weights, which are dropped
            adapter = load_adapter(c.model, dtype, "cpu", quiet=not c.progress)
            quantize.apply(adapter, c.quantize, keep=False)
            if torch.device(device).type != "cpu":
                adapter.pipe.to(device)
                adapter = adapter_for(adapter.pipe)
    else:
        adapter = adapter_for(pipe)
    check_family_words(type(adapter), c.token)
    check_words({slot.name: slot.tokenizer for slot in adapter.encoders}, c.token, c.init, words)
    check_family_settings(type(adapter), [slot.name for slot in adapter.encoders], c)
    c = resolve(c, adapter.defaults, adapter.native_resolution(), hints)
    if c.resolution % adapter.resolution_multiple:
        raise DTIError(
            f"{{resolution}} {c.resolution} must be a multiple of {adapter.resolution_multiple} for this model", settings=["resolution"]
        )
    return adapter, c


def _vram(c: TrainConfig, pipe: Any | None, device: Any, ranks: Ranks, given: set[str]) -> TrainConfig:
    """``vram``: the cheapest memory savers that fit the card by the estimate (:mod:`dti.training.memory`), the
    settings the caller gave kept; one note says what it chose, and a card nothing fits is a refusal."""
    defaults = TrainConfig()
    given = given | {f.name for f in dataclasses.fields(c) if getattr(c, f.name) != getattr(defaults, f.name)}
    cls = type(adapter_for(pipe)) if pipe is not None else load_tokenizers(c.model)[0]
    size = torch.empty((), dtype=resolve_dtype(c.precision, device)).element_size()
    c, choice = memory.preset(c, given, cls, pipe, size)
    if ranks.main:
        note(choice.line())
    return c


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
