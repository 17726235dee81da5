"""K subjects of a manifest trained in one process, sharing the loaded model (`dti train --manifest`).

Each subject is an ordinary :class:`~dti.training.loop.Trainer` (its own rows, optimizer state, data,
run folder, checkpoints and log) over one shared adapter; all K concepts are attached at once
through the one attach path. A step of the :class:`MultiTrainer` takes one optimizer step of
every concept that still has steps to go:

- ``mix="batch"``: one denoiser pass over the K concepts' micro-batches stacked into one batch.
  The adapter returns one loss per sample (``Adapter.loss(..., reduction="none")``); the
  objective is the sum of each concept's own mean loss, so each concept's gradient is exactly
  the gradient of its single run (a concept's rows reach only its own prompts) and one backward
  pass serves all of them. Per-sample arithmetic inside a bigger batch may differ from a single
  run's in the last bits (about 1e-7 relative per step on CPU).
- ``mix="group"``: one loss call and backward per concept: bit-identical to K single runs, and
  still one loaded model, one process, one host sync per step for all K.
- ``mix="auto"`` (default): ``batch`` when the adapter can return per-sample losses, else ``group``.

Every random draw is a function of (seed, sample index) (:mod:`dti.core.draws`), so concept k draws in
the mixed batch exactly what its single run draws. A non-finite loss or gradient skips that
concept's step only; a concept that reaches ``max_bad_steps`` stops (its checkpoint and last good
concept saved) while the others train on. Ctrl-C / SIGTERM stop after the step and save every
unfinished concept's checkpoint; ``train_manifest(..., resume=True)`` (`dti train --manifest M
--resume DIR`) continues them all, and each folder also resumes alone with `dti train --resume`.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from dti.concepts.concept import Concept
from dti.core.draws import SampleDraws
from dti.core.errors import DTIError, warn
from dti.models import Adapter, load_tokenizers
from dti.training import checkpoints
from dti.training.checks import check_family_settings, check_family_words, check_words
from dti.training.config import TrainConfig, check
from dti.training.data import check_photos, list_images, load_photos
from dti.training.distributed import Ranks, launched
from dti.training.lock import RunLock
from dti.training.loop import Trainer
from dti.training.manifest import Manifest, Subject, load_manifest
from dti.training.run_folder import RunFolder
from dti.training.session import check_resume_settings, checked_settings, inputs, prepare, remove_if_empty, take_lock
from dti.training.stopping import RunStopped, StopRequests

#: Settings that change the shared model pass: one value for every subject of a manifest run.
SHARED_SETTINGS = (
    "model",
    "precision",
    "device",
    "resolution",
    "family_options",
    "gradient_checkpointing",
    "compile",
    "quantize",
    "offload",
    "pooling",
    "grad_accum",
)
MIXES = ("auto", "batch", "group")


def per_sample_losses(adapter: Adapter) -> bool:
    """Whether the adapter's loss can return one loss per sample (``reduction="none"``)."""
    return "reduction" in inspect.signature(adapter.loss).parameters


def refuse_lora(configs: Sequence[TrainConfig]) -> None:
    """Several subjects in one process share the pipeline, which holds one LoRA at a time: refused for now."""
    if any(c.lora for c in configs):
        raise DTIError(
            "{lora} is not supported with several subjects in one process (--manifest) yet; train each subject with its own "
            "`dti train ... --lora`",
            settings=["lora"],
        )


class MultiTrainer:
    """K trainers over one adapter, stepped together (see the module doc)."""

    def __init__(self, trainers: Sequence[Trainer], names: Sequence[str], mix: str = "auto") -> None:
        if mix not in MIXES:
            raise DTIError(f"mix={mix!r} is not valid; use one of {', '.join(MIXES)}")
        refuse_lora([t.config for t in trainers])
        if len({id(t.adapter) for t in trainers}) != 1:
            raise ValueError("the trainers of a MultiTrainer share one adapter")
        self.trainers = list(trainers)
        self.names = list(names)
        self.adapter = self.trainers[0].adapter
        batched = per_sample_losses(self.adapter)
        if mix == "batch" and not batched:
            raise DTIError(f"mix='batch' needs per-sample losses, which {type(self.adapter).__name__}.loss cannot give; use mix='group'")
        self.mix = "batch" if batched and mix != "group" else "group"
        self.stopped: dict[str, str] = {}  # name -> why (numerics), for concepts that stopped early
        self.resume_hint = "train_manifest(..., resume=True)"  # what continues a stopped run (the CLI command, from train_manifest)
        self.concepts: dict[str, Concept] = {}

    def active(self) -> list[tuple[str, Trainer]]:
        """Concepts with steps to go, in manifest order."""
        return [(n, t) for n, t in zip(self.names, self.trainers) if n not in self.stopped and t.step_count < t.config.steps]

    # ------------------------------------------------------------------ one step of every active concept
    def step(self) -> dict[str, float | None]:
        """Each active concept's next optimizer step, read on the host at once (one sync for all);
        returns their losses (None: skipped). :meth:`fit` reads the device only now and then."""
        return {name: t.settle(s, row.tolist()) for name, t, s, row in self.launch()}

    def launch(self) -> list[tuple[str, Trainer, int, torch.Tensor]]:
        """Each active concept's next optimizer step (its own step number: resumed concepts may stand
        at different steps), decided on the device: (name, trainer, step, its update row)."""
        pairs = self.active()
        active = [t for _, t in pairs]
        steps = [t.step_count + 1 for t in active]
        for t in active:
            t.optimizer.zero_grad(set_to_none=True)
        totals = [torch.zeros((), device=self.adapter.device) for _ in active]
        accum = active[0].config.grad_accum
        for micro in range(accum):
            batches = [t.micro_batch(s, micro) for t, s in zip(active, steps)]
            if self.mix == "batch":
                latents = torch.cat([b.latents for b in batches])
                prompts = [p for b in batches for p in b.prompts]
                crops = [c for b in batches for c in b.crops]
                draws = SampleDraws.joined([b.draws for b in batches])
                losses = self.adapter.loss(latents, prompts, crops, draws, reduction="none")  # type: ignore[call-arg]
                parts = losses.split([len(b.prompts) for b in batches])
                objective = None
                for k, (t, part) in enumerate(zip(active, parts)):
                    scaled, logged = t.objective(part.mean())
                    objective = scaled if objective is None else objective + scaled
                    totals[k] = totals[k] + logged
                assert objective is not None
                objective.backward()
            else:
                for k, (t, b) in enumerate(zip(active, batches)):
                    scaled, logged = t.objective(self.adapter.loss(b.latents, b.prompts, b.crops, b.draws))
                    scaled.backward()
                    totals[k] = totals[k] + logged
        return [(n, t, s, t.update(s, total)) for (n, t), s, total in zip(pairs, steps, totals)]

    # ------------------------------------------------------------------ the loop
    def fit(self, stop: StopRequests | None = None) -> dict[str, Concept]:
        """Train every concept to its last step; a finished concept's results are written at once.
        As in :meth:`Trainer.fit`, the host reads the device only when some concept's step is due."""
        for name, t in zip(self.names, self.trainers):
            if t.step_count >= t.config.steps and name not in self.concepts:
                self._complete(name, t)
        left = sum(t.config.steps - t.step_count for _, t in self.active())
        progress = any(t.config.progress for t in self.trainers)
        bar = tqdm(total=left, desc=f"dti x{len(self.trainers)}", unit="concept-step", disable=not progress, dynamic_ncols=True)
        pending: list[tuple[str, Trainer, int, torch.Tensor]] = []
        try:
            while self.active():
                started = self.launch()
                pending += started
                bar.update(len(started))
                asked = stop is not None and stop.requested is not None
                if any(t.sync_due(s, asked) for _, t, s, _ in started):
                    self.flush(pending, bar)
                    pending.clear()
                    if asked and self.active():
                        assert stop is not None
                        self._stop_signal(stop)
        finally:
            bar.close()
        if self.stopped:
            names = ", ".join(self.stopped)
            first = next(iter(self.stopped.values()))
            finished = [n for n in self.names if n in self.concepts]
            done = f"; the others finished ({', '.join(finished)})" if finished else ""
            raise RunStopped(f"{len(self.stopped)} concept(s) stopped ({names}){done}; {names.split(', ')[0]}: {first}", 1)
        return {n: self.concepts[n] for n in self.names}

    def flush(self, pending: list[tuple[str, Trainer, int, torch.Tensor]], bar: Any = None) -> None:
        """Read the launched steps' rows (one host sync) and do each concept's host work in order; a
        concept whose numerics stop it is set aside, the others train on."""
        if not pending:
            return
        rows = torch.stack([row for *_, row in pending]).tolist()
        shown = {}
        for (name, t, s, _), row in zip(pending, rows):
            if name in self.stopped:  # its later steps were held back on the device
                continue
            loss = t.settle(s, row)
            try:
                t.after_step(s, loss, None, row[3:])
            except RunStopped as failed:  # this concept's numerics; the others train on
                self.stopped[name] = str(failed)
                warn(f"{name}: {failed}")
                continue
            shown[name] = "skipped" if loss is None else f"{loss:.4f}"
            if s >= t.config.steps:
                self._complete(name, t)
        if bar is not None:
            bar.set_postfix_str(" ".join(f"{n}={v}" for n, v in shown.items())[:80])

    def _complete(self, name: str, t: Trainer) -> None:
        try:
            t.check_learned()
        except RunStopped as failed:  # this concept learned nothing; the others go on
            self.stopped[name] = str(failed)
            warn(f"{name}: {failed}")
            return
        concept = t.concept(t.config.steps)
        t.complete(concept)
        self.concepts[name] = concept

    def _stop_signal(self, stop: StopRequests) -> None:
        saved = []
        for name, t in self.active():
            t._save_stopped(t.step_count)
            saved.append(f"{name} at step {t.step_count} of {t.config.steps}")
        raise RunStopped(f"{stop.requested}: checkpoints saved for {', '.join(saved)}; continue with `{self.resume_hint}`", stop.exit_code)

    def detach(self) -> None:
        for t in self.trainers:
            t.detach()


# ------------------------------------------------------------------ the public API
def train_manifest(
    manifest: str | os.PathLike | Manifest,
    model: str | os.PathLike | Any | None,
    output: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    mix: str = "auto",
    **settings: Any,
) -> dict[str, Concept]:
    """Train every subject of ``manifest`` in one process into ``output/<subject>/`` (each folder what
    a single ``dti train`` run writes); returns subject name -> Concept.

    Settings: the manifest's ``[defaults]``, then the subject's own ``settings``, then ``settings``
    given here (as `dti train` flags override a ``--config`` file). Settings that change the model
    pass (:data:`SHARED_SETTINGS`) must agree for all subjects; steps, batch size, method, lr,
    kappa, seed, templates and the output settings may differ. ``model`` may be a loaded pipeline
    (left as it was found) or None (the manifest's ``model`` setting). ``resume=True`` continues
    the unfinished runs in ``output`` (and starts subjects that have no folder yet); it may change
    only ``steps``, ``progress``, ``device`` and the checkpoint settings.
    """
    if mix not in MIXES:
        raise DTIError(f"mix={mix!r} is not valid; use one of {', '.join(MIXES)}")
    if launched():
        raise DTIError("dti train --manifest runs in one process; start it without accelerate / torchrun")
    if isinstance(manifest, Manifest):
        m = load_manifest(manifest.path, root=data_root) if data_root is not None else manifest
    elif isinstance(manifest, (str, os.PathLike)):
        m = load_manifest(manifest, root=data_root)
    else:
        raise DTIError(f"manifest= takes a manifest file or a dti.training.manifest.Manifest, not a {type(manifest).__name__}")
    if not isinstance(output, (str, os.PathLike)) or not str(output):
        raise DTIError("--output is missing; name the folder that gets one run folder per subject, e.g. --output runs/")
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise DTIError(f"--output {out} is a file; choose a folder path")
    settings = checked_settings(settings, "dti.train_manifest()")
    given = sorted(set(settings) & {"photos", "token", "init", "output"})
    if given:
        raise DTIError(f"{given[0]!r} is set per subject in the manifest with --manifest; remove it")
    pipe = model if model is not None and not isinstance(model, (str, os.PathLike)) else None
    model_name = _model_name(model)
    if resume:
        check_resume_settings(settings, "a manifest run")

    plans = [_plan(m, s, out, model_name, settings, resume, loaded=pipe is not None) for s in m.subjects]
    refuse_lora([p.config for p in plans])
    _check_shared([(p.subject.name, p.config) for p in plans], resolved=False)
    if pipe is None:
        _check_words_early(plans)
    taken: list[RunLock] = []
    created = not out.exists()
    try:
        for p in plans:
            folder = Path(p.config.output)
            c = p.config
            checker = (lambda: None) if p.resuming else (lambda folder=folder, c=c: RunFolder.for_new_run(folder, c.overwrite, inputs(c)))
            taken.append(take_lock(folder, checker))
        return _train(plans, pipe, mix, m.path, out)
    finally:
        for lock in taken:
            lock.release()
            remove_if_empty(lock.folder)
        if created:
            remove_if_empty(out)


@dataclasses.dataclass
class _Plan:
    """One subject's run before the model loads: its config, folder, and (resuming) its checkpoint."""

    subject: Subject
    config: TrainConfig
    resuming: bool = False
    finished: bool = False
    saved: dict[str, Any] | None = None


def _model_name(model: Any) -> str | None:
    if model is None:
        return None
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    return getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__


def _plan(m: Manifest, subject: Subject, out: Path, model: str | None, settings: dict[str, Any], resume: bool, loaded: bool) -> _Plan:
    """``loaded``: ``model`` names a pipeline handed in (a resumed run keeps its recorded model name)."""
    folder = out / subject.name
    if resume and folder.is_dir() and (RunFolder(folder).config.is_file() or (folder / ".dti-overwrite" / "config.json").is_file()):
        run = RunFolder.for_resume(folder)
        c = TrainConfig.from_file(run.config)
        c = dataclasses.replace(c, output=str(folder), overwrite=False, **settings)
        if model is not None and not loaded and not _same_model(model, c.model):
            raise DTIError(f"{subject.name}: --model cannot change when a run is resumed (it trained on {c.model}); leave --model out")
        check(c)
        found = checkpoints.load_latest(run.checkpoints)
        finished = run.concept.is_file() and (found is None or max(found[0], _concept_step(run.concept)) >= c.steps)
        if found is not None and found[0] > c.steps:
            raise DTIError(f"{subject.name}: --steps {c.steps} is below the step {found[0]} this run already reached; pass more steps")
        return _Plan(subject, c, resuming=True, finished=finished, saved=found[1] if found else None)
    values = {**m.settings_for(subject), **settings}
    if model is not None:
        values["model"] = model
    c = TrainConfig(**values)
    c = dataclasses.replace(c, photos=str(subject.photos), token=subject.token, init=subject.init, output=str(folder))
    if not c.model:
        raise DTIError("--model is missing; pass --model, or set model in the manifest's [defaults]")
    check(c)
    return _Plan(subject, c)


def _same_model(given: str, recorded: str) -> bool:
    if given == recorded:
        return True
    return Path(given).exists() and Path(recorded).exists() and Path(given).resolve() == Path(recorded).resolve()


def _concept_step(path: Path) -> int:
    """The step a saved concept was taken at (0 when it does not say)."""
    step = Concept.load(path).meta.get("step")
    return int(step) if isinstance(step, int) else 0


def _check_shared(configs: Sequence[tuple[str, TrainConfig]], resolved: bool) -> None:
    """Settings of the shared model pass must agree; before resolving, only values given explicitly
    are compared (None = the family's default, compared once resolved)."""
    for key in SHARED_SETTINGS:
        seen: dict[str, Any] = {}
        for name, c in configs:
            value = getattr(c, key)
            if value is None and not resolved:
                continue
            value = value or None if key == "family_options" else value
            if seen and value != next(iter(seen.values())):
                first, was = next(iter(seen.items()))
                flag = "--" + key.replace("_", "-")
                raise DTIError(
                    f"subjects {first!r} and {name!r} differ in {flag} ({was!r} vs {value!r}); one --manifest run shares one model pass, "
                    f"so {', '.join(SHARED_SETTINGS)} must be the same for every subject: set it once in [defaults]"
                )
            seen.setdefault(name, value)


def _check_words_early(plans: Sequence[_Plan]) -> None:
    """Tokens, initializers and family settings of every subject, from the tokenizers alone (before weights load)."""
    todo = [p for p in plans if not p.finished]
    if not todo:
        return
    cls, tokenizers = load_tokenizers(todo[0].config.model)
    for p in todo:
        try:
            check_family_words(cls, p.config.token)
            check_family_settings(cls, list(tokenizers), p.config)
            check_words(tokenizers, p.config.token, p.config.init)
        except DTIError as exc:
            raise exc.within(f"{p.subject.name}: ") from None


def _train(plans: Sequence[_Plan], pipe: Any | None, mix: str, manifest: Path, out: Path) -> dict[str, Concept]:
    ranks = Ranks()
    done = {p.subject.name: Concept.load(RunFolder.for_resume(p.config.output).path) for p in plans if p.finished}
    todo = [p for p in plans if not p.finished]
    for name in done:
        warn(f"{name}: {Path(plans[0].config.output).parent / name} already finished; left as it is")
    if not todo:
        return done
    photos = {p.subject.name: (list_images(p.config.photos), load_photos(p.config.photos)) for p in todo}
    adapter = None
    configs = []
    for p in todo:
        try:
            loaded, c = prepare(p.config, pipe if adapter is None else adapter.pipe, ranks)
        except DTIError as exc:
            raise exc.within(f"{p.subject.name}: ") from None
        adapter = adapter or loaded
        configs.append(c)
    assert adapter is not None
    _check_shared([(p.subject.name, c) for p, c in zip(todo, configs)], resolved=True)
    trainers = []
    for p, c in zip(todo, configs):
        paths, images = photos[p.subject.name]
        if not p.resuming:
            for line in check_photos(images, c.resolution):
                warn(f"{p.subject.name}: {line}")
        run = RunFolder.for_resume(c.output) if p.resuming else RunFolder.for_new_run(c.output, c.overwrite, inputs(c))
        t = Trainer(c, adapter, images, run, ranks)
        t.extra_state["photos"] = checkpoints.photos_fingerprint(paths)
        if p.saved is not None:
            checkpoints.check_same_photos(p.saved.get("extra", {}).get("photos"), t.extra_state["photos"], c.photos)
        trainers.append(t)
    for p, t in zip(todo, trainers):
        if not p.resuming:
            assert t.run is not None
            t.run.create()
    multi = MultiTrainer(trainers, [p.subject.name for p in todo], mix)
    multi.resume_hint = f"dti train --manifest {manifest} --resume {out}"
    try:
        with StopRequests() as stop:
            for p, t in zip(todo, trainers):
                t.start(p.saved)
            try:
                concepts = multi.fit(stop)
            except KeyboardInterrupt:  # a second Ctrl-C: the last periodic checkpoints remain
                raise RunStopped(f"Ctrl-C; continue from the last checkpoints with `{multi.resume_hint}`", 130) from None
    finally:
        multi.detach()
    return {p.subject.name: {**done, **concepts}[p.subject.name] for p in plans}
