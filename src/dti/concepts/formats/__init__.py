"""Concept files of every tool, in and out: one module per format, registered here.

- ``dti`` (:mod:`.dti`): our self-describing ``concept.safetensors``.
- ``diffusers`` (:mod:`.diffusers`): one ``{token: [n, d]}`` file per encoder.
- ``a1111`` / ``comfyui`` / ``kohya`` (:mod:`.single`): one file keyed by encoder kind, every key each
  tool looks up (``{clip_l, clip_g}`` for SDXL, ``t5xxl`` and ``t5`` for T5, ...); ``{emb_params}``
  for one CLIP encoder (SD 1.x/2.x).
- A1111's ``.pt`` (:mod:`.a1111_pt`), read only through torch's safe loader (:mod:`.pickles`): a
  pickle that would build arbitrary objects is refused, never run.

Reading asks each format in :data:`READERS` order whether a file is its layout; every reader checks
what it reads (:func:`dti.concepts.concept.checked_vectors`) and, given a ``problems`` list, records
the problems there and goes on (``dti inspect``). Writing plans every path first (:func:`planned_paths`),
refuses existing files unless told to overwrite, and replaces old files only once every new one is
written. A new format is one module here plus its entry in :data:`READERS` / :data:`WRITERS`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dti.concepts.concept import CONCEPT_FILENAME, Concept
from dti.concepts.formats import diffusers
from dti.concepts.formats.a1111_pt import A1111Pickle
from dti.concepts.formats.base import Format, read_raw
from dti.concepts.formats.diffusers import DiffusersFile
from dti.concepts.formats.dti import DTIFormat
from dti.concepts.formats.single import KeyedFile, KohyaFile
from dti.concepts.kinds import infer_kinds
from dti.core.errors import DTIError
from dti.core.files import atomic_write_all

#: The layouts a file is read as, asked in this order (the first whose ``sniff`` says yes reads it).
READERS: tuple[Format, ...] = (DTIFormat(), A1111Pickle(), KeyedFile(), KohyaFile(), DiffusersFile())
#: Write name -> format; A1111's ``.pt`` is the ``a1111`` write of a file named ``.pt``.
WRITERS: dict[str, Format] = {name: fmt for fmt in READERS for name in fmt.writes}
FORMATS = tuple(WRITERS)
PICKLE = READERS[1]


def read_file(path: str | Path, token: str | None = None, problems: list[str] | None = None) -> Concept:
    """Any supported concept file -> Concept. ``token`` overrides the name stored in the file.
    With ``problems``, unusable values are recorded there instead of refused (``dti inspect``)."""
    path = Path(path)
    if not path.is_file():
        raise DTIError(f"concept file not found: {path}; check the path")
    raw = read_raw(path, problems)
    for fmt in READERS:
        if fmt.sniff(raw):
            return fmt.read(raw, token, problems)
    keys = sorted(map(str, raw.data))[:6]
    raise DTIError(f"{path} is not a textual-inversion embedding dti knows (keys {keys}); see `dti convert --help`")


def read_folder(path: Path, token: str | None = None, problems: list[str] | None = None) -> Concept:
    """A dti run folder (``concept.safetensors``) or a folder of diffusers per-encoder files."""
    if (path / CONCEPT_FILENAME).is_file():
        concept = Concept.load(path / CONCEPT_FILENAME, problems)
        return concept.renamed(token) if token else concept
    return diffusers.read_folder(path, read_file, token, problems)


def read(path: str | os.PathLike, token: str | None = None, problems: list[str] | None = None) -> Concept:
    """A concept from a file or folder in any supported format.

    Unusable vectors (NaN, infinite, all-zero or no rows, integer values, not ``[n, width]``) and
    damaged metadata are a one-line :class:`DTIError`; with ``problems`` (a list), the problems that
    leave something to show are recorded there and the concept is returned as well as it reads.
    """
    path = Path(path)
    concept = read_folder(path, token, problems) if path.is_dir() else read_file(path, token, problems)
    return _restore_magnitudes(concept)


def _restore_magnitudes(concept: Concept) -> Concept:
    """Fixed norms and kinds a dti-written foreign file carried in its metadata (checked as read)."""
    for name, m in (concept.meta.pop("magnitudes", None) or {}).items():
        if name in concept.encoders and m is not None:
            concept.encoders[name].magnitude = float(m)
    for name, kind in (concept.meta.pop("encoder_kinds", None) or {}).items():
        if name in concept.encoders and kind:
            concept.encoders[name].kind = str(kind)
    return infer_kinds(concept)


# ------------------------------------------------------------------ writing
def _writer(concept: Concept, fmt: str, out: Path) -> Format:
    if fmt not in WRITERS:
        raise DTIError(f"{{to}} {fmt!r} is not a known format; use one of {', '.join(FORMATS)}", settings=["to"])
    return PICKLE if fmt == "a1111" and out.suffix.lower() == ".pt" else WRITERS[fmt]


def planned_paths(concept: Concept, fmt: str, out: str | os.PathLike) -> list[Path]:
    """Every file :func:`write` would write for ``concept`` in ``fmt`` at ``out``, before anything
    is written (so a caller can refuse existing outputs or check the trigger word first). Refuses
    in one line a layout the concept cannot take."""
    out = Path(out)
    if fmt in ("comfyui", "kohya") and out.suffix.lower() == ".pt":
        raise DTIError("only --to a1111 for a single-encoder (SD 1.x/2.x) concept can be written as .pt; use .safetensors")
    return _writer(concept, fmt, out).paths(concept, fmt, out)


def stale_paths(fmt: str, paths: list[Path]) -> list[Path]:
    """Files beside the planned ones that would change what the output reads as (see :func:`.diffusers.stale`)."""
    return diffusers.stale(paths) if fmt == "diffusers" else []


def check_destination(paths: list[Path], overwrite: bool, stale: list[Path] = ()) -> None:
    """Refuse, in one line, outputs that exist (unless ``overwrite``), are folders, or lie under a file."""
    for path in paths:
        if path.is_dir():
            raise DTIError(f"{path} is a folder, not a file; choose another {{out}}", settings=["out"])
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise DTIError(f"{parent} is a file, so {path} cannot be written; choose another {{out}}", settings=["out"])
                break
    existing = [p for p in [*paths, *stale] if p.exists()]
    if existing and not overwrite:
        raise DTIError(
            f"{existing[0]} already exists; pass {{overwrite}} to replace it or choose another {{out}}", settings=["overwrite", "out"]
        )


def write(concept: Concept, fmt: str, out: str | os.PathLike, overwrite: bool = True) -> list[Path]:
    """Write ``concept`` in format ``fmt`` to ``out`` (a file, or a folder for diffusers).

    Every path is known before anything is written (:func:`planned_paths`); without ``overwrite``
    an existing one is refused. New files are written beside their targets first and moved into
    place only once all of them are written, so a failure leaves the old output as it was.
    """
    out = Path(out)
    paths = planned_paths(concept, fmt, out)
    stale = stale_paths(fmt, paths)
    check_destination(paths, overwrite, stale)
    jobs = _writer(concept, fmt, out).jobs(concept, fmt, paths)
    atomic_write_all(jobs)  # all or none; a failure names the output, never a temp file
    for path in stale:
        try:
            path.unlink()
        except OSError as exc:
            raise DTIError(f"wrote {out}, but could not remove the stale {path}: {exc.strerror or exc}; remove it by hand") from None
    return paths


def write_diffusers(concept: Concept, folder: str | os.PathLike, overwrite: bool = True) -> dict[str, Path]:
    """One ``{token: [n_vectors, width]}`` file per encoder, for
    ``pipe.load_textual_inversion(path, text_encoder=..., tokenizer=...)``."""
    paths = write(concept, "diffusers", folder, overwrite=overwrite)
    return dict(zip(concept.encoders, paths))


def trigger_tokenizers(concept: Concept, model: str | os.PathLike | None = None) -> dict[str, Any]:
    """The tokenizers to check a trigger word against, loaded cheaply (no weights): ``model``'s when
    given, else those of the concept's base model when it is a local pipeline folder; ``{}`` when
    neither is at hand (the check is then skipped rather than downloading anything)."""
    from dti.models import load_tokenizers

    if model:
        return load_tokenizers(model)[1]
    base = concept.meta.get("base_model")
    if isinstance(base, str) and base and (Path(base) / "model_index.json").is_file():
        try:
            return load_tokenizers(base)[1]
        except (DTIError, OSError, ValueError):
            return {}
    return {}


diffusers_filename = diffusers.filename
