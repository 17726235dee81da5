"""`dti sweep`: train every subject of a manifest with every method of the paper's table, resumably.

Runs land in ``OUT/<method>/<subject>/`` (ordinary `dti train` run folders) and ``OUT/sweep.json``
indexes them; `dti evaluate` reads it with :func:`read_sweep`. A sweep of 30 subjects x 9 methods
is many GPU hours, so it must survive being killed: the index is rewritten atomically after every
run, a finished run is never trained again, an unfinished one continues from its checkpoint, and a
rerun of the same command picks up where the last one stopped. Everything that can be refused
(methods, the manifest, settings, a folder trained with other settings) is refused before the
first run starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from dti.concepts.concept import CONCEPT_FILENAME
from dti.core.errors import DTIError, warn
from dti.methods import VARIANTS, Variant
from dti.training.config import TrainConfig, check, check_settings, field_keys
from dti.training.manifest import Manifest, Subject, load_manifest
from dti.training.run_folder import CHECKPOINTS_DIR, CONFIG_FILENAME, STAGING_DIR

SWEEP_FILENAME = "sweep.json"
INDEX_LOCK = ".sweep-index.lock"  # held while one worker rewrites sweep.json
FORMAT = "dti-sweep"
VERSION = 1
STATUSES = ("done", "failed", "pending")
#: The fix for a damaged index: a sweep finds what it needs in its run folders.
REBUILD = "rerun the `dti sweep` that wrote it (it rebuilds the index from the run folders)"


class DamagedIndex(DTIError):
    """A ``sweep.json`` that cannot be read back (a sweep rebuilds it; evaluation cannot use it)."""


#: The columns a sweep can train: every method and the paper's ablations (:mod:`dti.methods`).
METHODS: dict[str, Variant] = VARIANTS


# Settings a sweep decides itself: per subject (photos, token, init), per run (output, method) or
# by its own arguments (progress), and never overwriting a finished run.
SWEEP_FIELDS = ("photos", "token", "init", "output", "method", "model", "overwrite", "progress")
# Settings a manifest may hold for `dti train --manifest` but a sweep decides itself, and why.
MANIFEST_REFUSED = {
    "method": "--methods choose each run's method, so remove it",
    "model": "--model names the one model every run trains on, so remove it",
    "precision": "the model is loaded once for every run, so pass --precision instead",
    "device": "the model is loaded once for every run, so pass --device instead",
    "overwrite": "a sweep never replaces a finished run (delete its folder to train it again), so remove it",
    "progress": "pass --quiet instead",
}
# Settings that may differ between a run and a rerun of its sweep: they do not change the concept.
FREE_FIELDS = ("progress", "device", "checkpoint_every", "keep_checkpoints", "max_bad_steps", "log_every")


@dataclasses.dataclass(frozen=True)
class RunEntry:
    """One subject x method of a sweep: what it is, where its concept is, and how it went.

    For a derived method (``derived_from``) ``run`` and ``concept`` are the source method's; load
    the concept with ``dti.use.loading.load(pipe, entry.concept, rescale=entry.rescale)``."""

    subject: str
    method: str
    derived_from: str | None
    rescale: str | None
    kind: str  # the subject's kind: live | object (which DreamBooth prompt list applies)
    class_word: str
    token: str
    init: str
    photos: Path  # absolute
    run: Path  # absolute; OUT/<method or the one it derives from>/<subject>, written relative to OUT
    concept: Path  # absolute; the run's concept.safetensors
    status: str  # done | failed | pending
    seconds: float | None = None  # training time of the run (None: not trained by a sweep)
    error: str | None = None  # why it failed
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the run's `dti train` settings

    @property
    def done(self) -> bool:
        return self.status == "done"

    def to_json(self, folder: Path | None = None) -> dict[str, Any]:
        """The entry as the index holds it: the run and its concept relative to the sweep's ``folder``
        (so a copied or moved sweep still finds its own runs), the photos absolute."""
        data = dataclasses.asdict(self)
        for key in ("photos", "run", "concept"):
            data[key] = str(data[key])
        if folder is not None:
            data["run"] = run_folder(self.subject, self.method, self.derived_from).as_posix()
            data["concept"] = (run_folder(self.subject, self.method, self.derived_from) / CONCEPT_FILENAME).as_posix()
        data["settings"] = _plain(dict(self.settings))
        return data

    @classmethod
    def from_json(cls, data: Any, where: str, folder: Path | None = None) -> RunEntry:
        """An index entry; with ``folder`` (the sweep's), its run is found where the sweep's layout puts
        it under ``folder``, wherever the sweep was when the index was written."""
        fields = {f.name for f in dataclasses.fields(cls)}
        required = fields - {"seconds", "error", "settings"}
        if not isinstance(data, dict) or not required <= set(data):
            missing = sorted(required - set(data)) if isinstance(data, dict) else ["everything"]
            raise DamagedIndex(f"{where} is damaged (a run lacks {', '.join(missing)}); {REBUILD}")
        values = {k: v for k, v in data.items() if k in fields}
        if values["status"] not in STATUSES:
            raise DamagedIndex(f"{where} is damaged (a run has status {values['status']!r}); {REBUILD}")
        for key in ("photos", "run", "concept"):
            values[key] = Path(values[key])
        if folder is not None:
            values["run"] = folder / run_folder(values["subject"], values["method"], values["derived_from"])
            values["concept"] = values["run"] / CONCEPT_FILENAME
        values["settings"] = dict(values.get("settings") or {})
        return cls(**values)


def run_folder(subject: str, method: str, derived_from: str | None = None) -> Path:
    """Where a run lives inside a sweep's folder: ``<method>/<subject>`` (a derived method: its source's)."""
    return Path(derived_from or method) / subject


@dataclasses.dataclass(frozen=True)
class SweepIndex:
    """What :func:`read_sweep` returns: the sweep's inputs and its runs, subject-major in file order."""

    folder: Path
    manifest: Path
    model: str
    methods: tuple[str, ...]
    runs: tuple[RunEntry, ...]
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the sweep's own (its flags)

    def subjects(self) -> list[str]:
        return list(dict.fromkeys(r.subject for r in self.runs))

    def of_method(self, method: str) -> list[RunEntry]:
        return [r for r in self.runs if r.method == method]

    def get(self, subject: str, method: str) -> RunEntry:
        for r in self.runs:
            if r.subject == subject and r.method == method:
                return r
        raise KeyError((subject, method))

    def done(self) -> list[RunEntry]:
        return [r for r in self.runs if r.done]


def read_sweep(folder: str | os.PathLike) -> SweepIndex:
    """The index a sweep wrote into ``folder`` (or the ``sweep.json`` itself)."""
    path = Path(folder)
    if path.is_dir() or path.suffix != ".json":
        path = path / SWEEP_FILENAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DTIError(f"{path} does not exist; pass the --out folder of a `dti sweep` (run one first)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split())
        raise DamagedIndex(f"cannot read {path} ({reason}); {REBUILD}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("runs"), list):
        raise DTIError(f"{path} is not a dti sweep index; pass the --out folder of a `dti sweep`")
    if data.get("version") != VERSION:
        raise DTIError(f"{path} is sweep index version {data.get('version')!r}, this dti reads version {VERSION}; update dti")
    runs = tuple(RunEntry.from_json(r, str(path), path.parent) for r in data["runs"])
    methods = tuple(data.get("methods", []))
    return SweepIndex(path.parent, Path(data.get("manifest", "")), str(data.get("model", "")), methods, runs, data.get("settings", {}))


# ---------------------------------------------------------------------- planning (no model needed)
def parse_methods(methods: str | Sequence[str]) -> list[str]:
    """Method names in the order given, each once; a derived method brings its source along (before it)."""
    names = [n.strip() for n in methods.split(",")] if isinstance(methods, str) else [str(n).strip() for n in methods]
    names = [n for n in names if n]
    if not names:
        raise DTIError(f"--methods is empty; name one or more of {', '.join(METHODS)}")
    out: list[str] = []
    for name in names:
        if name not in METHODS:
            raise DTIError(f"--methods: unknown method {name!r}; the sweep knows {', '.join(METHODS)}")
        source = METHODS[name].derived_from
        if source is not None and source not in out:
            out.append(source)
        if name not in out:
            out.append(name)
    return out


def resolve_manifest(manifest: str | os.PathLike | Manifest, data_root: str | os.PathLike | None = None) -> Manifest:
    """A manifest file, or the name of a packaged one (``dreambooth``: its photos are under ``data_root``)."""
    if isinstance(manifest, Manifest):
        return manifest
    from dti.training.manifests import PACKAGED

    path = Path(manifest)
    if str(manifest) in PACKAGED and not path.exists():
        if data_root is None:
            raise DTIError(
                f"the {manifest} manifest needs --data-root, the folder holding the {manifest} subject folders (e.g. dog, cat, backpack)"
            )
        path = PACKAGED[str(manifest)]
    root = Path(os.path.expanduser(str(data_root))) if data_root is not None else None
    if root is not None and not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DTIError(f"--data-root {root} {what}; pass the folder that holds the subjects' photo folders")
    return load_manifest(path, root=root)


def own_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """The sweep's own settings (its flags, or ``sweep(settings=...)``), checked like `dti train`'s."""
    if not settings:
        return {}
    values = field_keys(dict(settings), "dti sweep")
    for key in SWEEP_FIELDS:
        if key in values:
            raise DTIError(f"{key!r} cannot be a sweep setting: the sweep sets it per run (--methods, the manifest, --out); remove it")
    return check_settings(values, "dti sweep")


def plan(
    manifest: Manifest, methods: Sequence[str], model: str, out: Path, settings: Mapping[str, Any] | None = None, precision: str = "auto"
) -> list[RunEntry]:
    """Every subject x method as a pending :class:`RunEntry`, subject-major, with its settings:
    the manifest's defaults, then the subject's, then the sweep's own, then the method's (which
    define the method and so always win). Each trained run's settings are checked here."""
    own = own_settings(settings)
    names = parse_methods(methods)
    out = Path(out).resolve()
    entries: list[RunEntry] = []
    for subject in manifest.subjects:
        base = manifest.settings_for(subject)
        for key in MANIFEST_REFUSED:
            if key in base:
                where = f"manifest {manifest.path} [subjects.{subject.name}]"
                raise DTIError(f"{where}: a sweep cannot take {key} from a manifest; {MANIFEST_REFUSED[key]}")
        for name in names:
            method = METHODS[name]
            source = method.derived_from or name
            run = out / source / subject.name
            values = {} if method.derived_from else {**base, **own, **method.settings, "precision": own.get("precision", precision)}
            if not method.derived_from:
                _check_run(subject, name, model, run, values)
            entries.append(_entry(subject, method, run, values))
    return entries


def _entry(subject: Subject, method: Variant, run: Path, settings: dict[str, Any]) -> RunEntry:
    return RunEntry(
        subject=subject.name,
        method=method.name,
        derived_from=method.derived_from,
        rescale=method.rescale,
        kind=subject.kind,
        class_word=subject.class_word,
        token=subject.token,
        init=subject.init,
        photos=subject.photos.resolve(),
        run=run,
        concept=run / CONCEPT_FILENAME,
        status="pending",
        settings=settings,
    )


def _check_run(subject: Subject, method: str, model: str, run: Path, settings: dict[str, Any]) -> None:
    config = TrainConfig(photos=str(subject.photos), token=subject.token, init=subject.init, model=model, output=str(run))
    try:
        check(dataclasses.replace(config, **settings))
    except DTIError as exc:
        raise exc.within(f"subject {subject.name}, method {method}: ") from None


def _plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples as lists), so settings compare with a run's config.json."""
    return json.loads(json.dumps(value))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    return _plain(a) == _plain(b)


def run_state(run: Path) -> str:
    """``done`` (its concept is written: the trainer writes it last), ``partial`` (a run was started
    there: continue it) or ``new``."""
    if (run / CONCEPT_FILENAME).is_file() and (run / CONFIG_FILENAME).is_file() and not (run / STAGING_DIR).exists():
        return "done"
    if (run / CONFIG_FILENAME).is_file() or (run / STAGING_DIR / CONFIG_FILENAME).is_file():
        return "partial"
    return "new"


def _model_name(model: Any) -> str:
    if isinstance(model, (str, os.PathLike)):
        from dti.models import model_path

        path = Path(model_path(model))  # dti-mini: the packaged folder, as a run records the model it trained on
        return str(path.resolve()) if path.exists() else str(model)
    name = getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
    return _model_name(name) if isinstance(name, str) else type(model).__name__


def _recorded(run: Path) -> dict[str, Any]:
    folder = run / STAGING_DIR if (run / STAGING_DIR / CONFIG_FILENAME).is_file() else run
    try:
        data = json.loads((folder / CONFIG_FILENAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split())
        raise DTIError(f"cannot read {folder / CONFIG_FILENAME} ({reason}); delete the run folder {run} to train it again") from None
    if not isinstance(data, dict):
        raise DTIError(f"{folder / CONFIG_FILENAME} is not a run's settings; delete the run folder {run} to train it again")
    return data


def check_existing(entry: RunEntry, model: str) -> None:
    """A run folder a sweep finds already trained (or started) must be this run: same photos, token,
    initializer, model and settings; otherwise one line, before anything trains."""
    recorded = _recorded(entry.run)
    wanted: dict[str, Any] = {"photos": str(entry.photos), "token": entry.token, "init": entry.init, "model": model}
    wanted.update({k: v for k, v in entry.settings.items() if k not in FREE_FIELDS and v is not None})  # None: the default
    for key, value in wanted.items():
        if key not in recorded or not _same(recorded[key], value):
            raise DTIError(
                f"{entry.run} was trained with {key} = {_plain(recorded.get(key))!r}, this sweep asks {_plain(value)!r}; "
                "pass the settings it was started with, or another --out (or delete that run folder to train it again)"
            )


# ---------------------------------------------------------------------- the sweep
def sweep(
    manifest: str | os.PathLike | Manifest,
    methods: str | Sequence[str],
    model: str | os.PathLike | Any,
    out: str | os.PathLike,
    settings: Mapping[str, Any] | None = None,
    data_root: str | os.PathLike | None = None,
    progress: bool = True,
    quiet: bool = False,
    device: str = "auto",
    precision: str = "auto",
    batched: str | None = None,
) -> list[RunEntry]:
    """Train every subject x method of ``manifest`` into ``OUT/<method>/<subject>/``; returns the runs.

    ``batched`` (``auto``, ``batch`` or ``group``, as ``dti train --manifest --mix``): train each
    method's subjects at once in one :class:`~dti.training.multi.MultiTrainer` instead of one after the
    other (the runs' folders are the same; settings of the shared model pass must agree).

    ``model`` is a hub id, a local folder or a loaded pipeline (loaded once, shared by every run,
    left as found). ``settings`` are `dti train` settings for every run (over the manifest's).
    Finished runs are skipped, started ones continued; a run refused with a :class:`DTIError` is
    recorded as failed and the sweep goes on. ``progress``: tqdm bars in training; ``quiet``: no
    lines either. A SIGTERM / Ctrl-C stops after the current step (the run saves its checkpoint)
    and raises :class:`~dti.training.stopping.RunStopped`; rerunning the sweep continues it.
    """
    from dti.training import distributed
    from dti.training.data import list_images

    found = resolve_manifest(manifest, data_root)
    name = _model_name(model)
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise DTIError(f"--out {out} is a file; choose a folder for the sweep")
    own = own_settings(settings)
    precision, device = own.get("precision", precision), own.get("device", device)
    if batched is not None:
        from dti.training.multi import MIXES

        if batched not in MIXES:
            raise DTIError(f"--batched {batched!r} is not a mix; use one of {', '.join(MIXES)}")
    entries = plan(found, methods, name, out, own, precision)
    for subject in found.subjects:
        list_images(subject.photos)  # an empty photo folder is refused now, not hours in
    created = not out.exists()
    workers = distributed.launched()  # accelerate launch: each process a worker taking its own runs, on its own device
    if workers and device == "auto":
        device = distributed.local_device()
    index = _Index(out, found.path, name, parse_methods(methods), own)
    try:
        with distributed.independent() if workers else contextlib.nullcontext():
            with index.locked():
                entries = index.check(entries)
            todo = [e for e in entries if e.derived_from is None and not e.done]
            pipe = _load(model, device, precision, entries, quiet) if todo else None
            index.write(entries)  # only now: a sweep refused above leaves nothing behind
            sweeper = _Sweeper(index, entries, pipe, progress and not quiet, quiet)
            sweeper.batched = batched
            sweeper.settings = {**own, "precision": precision}
            sweeper.manifest = found
            return sweeper.run()
    finally:
        if created:
            try:
                out.rmdir()  # a sweep refused before its first run leaves no empty folder
            except OSError:
                pass


def _load(model: Any, device: str, precision: str, entries: list[RunEntry], quiet: bool) -> Any:
    """The pipeline every run shares, and the tokens and initializers checked against its tokenizers."""
    from dti.training.checks import check_family_words, check_words

    if isinstance(model, (str, os.PathLike)):
        from dti.core.devices import resolve_device, resolve_dtype
        from dti.models import load_adapter

        if not quiet:
            print(f"loading {model}", flush=True)
        dev = resolve_device(device)
        adapter = load_adapter(_model_name(model), resolve_dtype(precision, dev), dev, quiet=True)
    else:
        from dti.models import adapter_for

        adapter = adapter_for(model)
    tokenizers = {slot.name: slot.tokenizer for slot in adapter.encoders}
    for entry in {(e.subject, e.token, e.init): e for e in entries}.values():
        try:
            check_family_words(type(adapter), entry.token)
            check_words(tokenizers, entry.token, entry.init)
        except DTIError as exc:
            raise exc.within(f"subject {entry.subject}: ") from None
    return adapter.pipe


class _Index:
    """``OUT/sweep.json``, rewritten atomically whenever a run's status changes.

    Several workers may share a sweep (``accelerate launch -m dti sweep``, or the same `dti sweep` started
    twice): each rewrite holds ``OUT/.sweep-index.lock`` for the moment it takes, reads the index as it
    is, and keeps what the other workers recorded about the runs this worker has not itself trained
    (the run folders having the last word on which are done), so no worker's record is lost."""

    def __init__(self, out: Path, manifest: Path, model: str, methods: list[str], settings: dict[str, Any]) -> None:
        self.out, self.manifest, self.model, self.methods, self.settings = out, Path(manifest).resolve(), model, methods, settings
        self.path = out / SWEEP_FILENAME
        self.kept: list[RunEntry] = []  # runs an earlier sweep into OUT indexed that this one does not plan
        self.mine: set[tuple[str, str]] = set()  # runs this worker trained, failed or derived: its record wins

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The index to this worker alone for the body (others wait: it is held for moments)."""
        from dti.training.lock import Locked, RunLock

        lock = RunLock(self.out, INDEX_LOCK)
        try:
            lock.wait()
        except Locked as exc:
            raise DTIError(str(exc).replace("--output", "--out")) from None
        try:
            yield
        finally:
            lock.release()

    def _on_disk(self) -> dict[tuple[str, str], RunEntry]:
        if not self.path.is_file():
            return {}
        try:
            index = read_sweep(self.out)
        except DTIError:  # damaged: the run folders say what is done
            return {}
        self.methods = list(dict.fromkeys([*self.methods, *index.methods]))  # another worker's columns
        return {(r.subject, r.method): r for r in index.runs}

    def merged(self, entries: list[RunEntry]) -> list[RunEntry]:
        """``entries`` with the other workers' records of the runs this one has not trained, and every run
        whose folder holds its concept done."""
        disk = self._on_disk()
        out = []
        for e in entries:
            key = (e.subject, e.method)
            other = disk.get(key)
            if key not in self.mine and other is not None and other.status != "pending":
                e = other
            if e.derived_from is None and e.status != "done" and run_state(e.run) == "done":
                e = dataclasses.replace(e, status="done", error=None)
            out.append(e)
        known = {(e.subject, e.method) for e in [*out, *self.kept]}
        self.kept += [r for k, r in disk.items() if k not in known]  # another worker's plan (other methods)
        return out

    def check(self, entries: list[RunEntry]) -> list[RunEntry]:
        """The planned runs with what their folders already hold (checked to be these very runs).
        An earlier sweep's other runs (``--methods dti`` now, ``--methods ti`` before) stay indexed."""
        earlier: dict[tuple[str, str], RunEntry] = {}
        previous = None
        if self.path.is_file():
            try:
                previous = read_sweep(self.out)
            except DamagedIndex as exc:  # what it said is in the run folders themselves
                warn(f"{str(exc).split('; rerun')[0]}; rebuilding it from the run folders")
        if previous is not None:
            if previous.model != self.model:
                raise DTIError(
                    f"{self.path} is a sweep of {previous.model}, not {self.model}; pass --model {previous.model} or another --out"
                )
            earlier = {(r.subject, r.method): r for r in previous.runs}
            planned = {(e.subject, e.method) for e in entries}
            self.kept = [_refreshed(r) for r in previous.runs if (r.subject, r.method) not in planned]
            self.methods = list(dict.fromkeys([*previous.methods, *self.methods]))
        out: list[RunEntry] = []
        for entry in entries:
            state = run_state(entry.run) if entry.derived_from is None else "new"
            if state != "new":
                check_existing(entry, self.model)
            seen = earlier.get((entry.subject, entry.method))
            seconds = seen.seconds if seen is not None and state == "done" else None
            out.append(dataclasses.replace(entry, status="done" if state == "done" else "pending", seconds=seconds))
        done = {(e.subject, e.method) for e in [*out, *self.kept] if e.done and e.derived_from is None}
        return [_derived_status(e, done) for e in out]

    def write(self, entries: list[RunEntry]) -> list[RunEntry]:
        """Rewrite the index (merged with the other workers'); returns ``entries`` as merged."""
        with self.locked():
            return self._write(self.merged(entries))

    def _write(self, entries: list[RunEntry]) -> list[RunEntry]:
        from dti.core.files import write_json

        done = {(e.subject, e.method) for e in [*entries, *self.kept] if e.done and e.derived_from is None}
        entries = [_derived_status(e, done) for e in entries]
        self.kept = [_derived_status(e, done) for e in self.kept]  # a kept ti-rescaled follows the ti run trained now
        write_json(
            self.path,
            {
                "format": FORMAT,
                "version": VERSION,
                "manifest": str(self.manifest),
                "model": self.model,
                "methods": list(self.methods),
                "settings": _plain(self.settings),
                "runs": [e.to_json(self.out) for e in [*entries, *self.kept]],
            },
        )
        return entries


def _refreshed(entry: RunEntry) -> RunEntry:
    """An earlier sweep's trained run as its folder stands now (a deleted run is pending again)."""
    if entry.derived_from is not None:
        return entry
    if run_state(entry.run) == "done":
        return dataclasses.replace(entry, status="done", error=None)
    return entry if entry.status == "failed" else dataclasses.replace(entry, status="pending", seconds=None)


def _derived_status(entry: RunEntry, done: set[tuple[str, str]]) -> RunEntry:
    """A derived run is done exactly when the run it derives from is."""
    if entry.derived_from is None:
        return entry
    if (entry.subject, entry.derived_from) in done:
        return dataclasses.replace(entry, status="done", seconds=0.0, error=None)
    return dataclasses.replace(entry, status="pending", seconds=None) if entry.status == "done" else entry


class _Sweeper:
    """The loop over the planned runs: train, continue, skip or derive each, then write the index."""

    def __init__(self, index: _Index, entries: list[RunEntry], pipe: Any, progress: bool, quiet: bool) -> None:
        self.index, self.entries, self.pipe, self.progress, self.quiet = index, list(entries), pipe, progress, quiet
        self.batched: str | None = None  # a mix: each method's subjects trained at once (train_batch)
        self.settings: dict[str, Any] = {}  # the sweep's own settings (what train_manifest adds over the manifest)
        self.manifest: Manifest | None = None

    def say(self, i: int, entry: RunEntry, text: str) -> None:
        if not self.quiet:
            print(f"[{i + 1}/{len(self.entries)}] {entry.method} {entry.subject}: {text}", flush=True)

    def run(self) -> list[RunEntry]:
        from dti.training.lock import Locked, RunLock
        from dti.training.stopping import RunStopped

        try:
            batched = self.train_batches() if self.batched is not None else set()
            for i, entry in enumerate(self.entries):
                key = (entry.subject, entry.method)
                if entry.derived_from is not None:
                    self.entries[i] = self.derive(i, entry)
                elif i in batched:
                    continue
                elif entry.done:
                    self.say(i, entry, f"done already, skipped ({entry.run})")
                elif run_state(entry.run) == "done":  # another worker trained it meanwhile
                    self.say(i, entry, f"done by another worker, skipped ({entry.run})")
                    self.entries[i] = dataclasses.replace(entry, status="done", error=None)
                elif RunLock(entry.run).taken():
                    self.say(i, entry, f"another worker is training it, skipped ({entry.run})")
                else:
                    try:
                        self.entries[i] = self.train(i, entry)
                        self.index.mine.add(key)
                    except Locked:  # another worker holds its folder: that run is theirs
                        self.say(i, entry, f"another worker is training it, skipped ({entry.run})")
                    except RunStopped as stopped:
                        if stopped.exit_code in (130, 143):  # the user stopped the sweep: stop it, resumably
                            message = f"{stopped}; or rerun the same `dti sweep` to continue the whole sweep"
                            raise RunStopped(message, stopped.exit_code) from None
                        self.entries[i] = self.fail(i, entry, str(stopped))
                        self.index.mine.add(key)
                    except DTIError as exc:
                        if run_state(entry.run) == "done":  # finished by another worker between the check and the lock
                            self.say(i, entry, f"done by another worker, skipped ({entry.run})")
                            self.entries[i] = dataclasses.replace(entry, status="done", error=None)
                        else:
                            self.entries[i] = self.fail(i, entry, str(exc))
                            self.index.mine.add(key)
                self.entries = self.index.write(self.entries)
        finally:
            self.entries = self.index.write(self.entries)
        return list(self.entries)

    def train(self, i: int, entry: RunEntry) -> RunEntry:
        """Train (or continue) one run; its folder's lock is the claim (:class:`~dti.training.lock.Locked` when another
        live worker holds it; a dead worker's is taken over)."""
        from dti.training import session as trainer

        state = run_state(entry.run)
        start = time.perf_counter()
        if state == "partial":
            steps = _checkpoint_steps(entry.run)
            where = f"from its checkpoint at step {steps[-1]}" if steps else "from the start (it kept no checkpoint)"
            self.say(i, entry, f"continuing {where} -> {entry.run}")
            try:
                trainer.resume_run(entry.run, self.pipe, progress=self.progress)
            except trainer.RunFinished:
                pass
        else:
            self.say(i, entry, f"training -> {entry.run}")
            settings = dict(entry.settings)
            trainer.train(entry.photos, entry.token, entry.init, self.pipe, entry.run, progress=self.progress, **settings)
        return dataclasses.replace(entry, status="done", seconds=round(time.perf_counter() - start, 3), error=None)

    def train_batches(self) -> set[int]:
        """Each method's unfinished runs trained at once: the new ones in one manifest run, the
        interrupted ones continued in another; each run's ``seconds`` is its share of the batch's
        time. Returns the entries it trained (done or failed)."""
        from dti.training.multi import train_manifest
        from dti.training.stopping import RunStopped

        assert self.manifest is not None and self.batched is not None
        methods = list(dict.fromkeys(e.method for e in self.entries if e.derived_from is None))
        handled: set[int] = set()
        for name in methods:
            for resume in (True, False):
                batch = [
                    (i, e)
                    for i, e in enumerate(self.entries)
                    if e.method == name and e.derived_from is None and not e.done and (run_state(e.run) == "partial") == resume
                ]
                if not batch:
                    continue
                subjects = tuple(self.manifest[e.subject] for _, e in batch)
                for i, e in batch:
                    self.say(i, e, f"{'continuing' if resume else 'training'} with {len(batch) - 1} other(s) at once -> {e.run}")
                settings = {} if resume else {**self.settings, **METHODS[name].settings}
                start = time.perf_counter()
                error = None
                try:
                    train_manifest(
                        dataclasses.replace(self.manifest, subjects=subjects),
                        self.pipe,
                        batch[0][1].run.parent,
                        resume=resume,
                        mix=self.batched,
                        progress=self.progress,
                        **settings,
                    )
                except RunStopped as stopped:
                    if stopped.exit_code in (130, 143):
                        saved = str(stopped).split("; continue with")[0]  # its `dti train --manifest` hint would drop the method
                        message = f"{saved}; rerun the same `dti sweep` to continue the whole sweep"
                        raise RunStopped(message, stopped.exit_code) from None
                    error = str(stopped)
                except DTIError as exc:
                    error = str(exc)
                share = round((time.perf_counter() - start) / len(batch), 3)
                for i, e in batch:
                    handled.add(i)
                    if run_state(e.run) == "done":
                        self.entries[i] = dataclasses.replace(e, status="done", seconds=share, error=None)
                    else:
                        self.entries[i] = self.fail(i, e, error or "not finished")
                self.index.write(self.entries)
        return handled

    def fail(self, i: int, entry: RunEntry, message: str) -> RunEntry:
        self.say(i, entry, f"failed: {message}")
        return dataclasses.replace(entry, status="failed", error=message)

    def derive(self, i: int, entry: RunEntry) -> RunEntry:
        source = next(e for e in self.entries if e.subject == entry.subject and e.method == entry.derived_from)
        if source.status == "pending":  # another worker is training it: done when that run is (the index follows)
            return entry
        if source.done:
            self.say(i, entry, f"{entry.derived_from}'s concept, rescaled to the vocabulary's {entry.rescale} norm when loaded")
            return dataclasses.replace(entry, status="done", seconds=0.0, error=None)
        self.say(i, entry, f"failed: its {entry.derived_from} run failed")
        return dataclasses.replace(entry, status="failed", error=f"its {entry.derived_from} run failed: {source.error}")


def _checkpoint_steps(run: Path) -> list[int]:
    from dti.training import checkpoints

    folder = run / STAGING_DIR if (run / STAGING_DIR / CONFIG_FILENAME).is_file() else run
    return checkpoints.steps(folder / CHECKPOINTS_DIR)
