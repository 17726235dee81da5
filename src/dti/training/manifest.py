"""A manifest: many subjects in one TOML file, for `dti sweep`, `dti train --manifest` and `dti evaluate`.

    root = "../data/dreambooth"        # optional; photo folders are relative to it (default: this file's folder)

    [defaults]                         # optional; `dti train` settings for every subject
    steps = 400

    [subjects.dog]
    photos = "dog"                     # a folder of 3-6 photos (relative to root)
    class = "dog"                      # the class word: initializer default, and what evaluation prompts say
    kind = "live"                      # "live" or "object": which DreamBooth prompt list applies
    init = "dog"                       # optional; defaults to the class word
    token = "<dog>"                    # optional; defaults to <name>
    settings = { steps = 300 }         # optional; overrides [defaults] for this subject

Every problem (unknown key, missing folder, a kind other than live/object, a class of more than
one word without an init, a subject or token given twice) is one :class:`DTIError` line naming
the subject and the fix, raised before anything trains.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dti.core.errors import DTIError
from dti.text.words import check_token_text
from dti.training.config import _toml, check_settings, field_keys

KINDS = ("live", "object")
TOP_KEYS = ("root", "defaults", "subjects")
SUBJECT_KEYS = ("photos", "class", "kind", "init", "token", "settings")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Settings a manifest cannot give: each subject has its own photos, token, init and output.
PER_SUBJECT_FIELDS = ("photos", "token", "init", "output")


@dataclasses.dataclass(frozen=True)
class Subject:
    """One subject of a manifest: where its photos are and what it is."""

    name: str
    photos: Path
    class_word: str
    kind: str
    init: str
    token: str
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Manifest:
    """The subjects of a manifest file, in file order, with the settings shared by all of them."""

    path: Path
    subjects: tuple[Subject, ...]
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __getitem__(self, name: str) -> Subject:
        for s in self.subjects:
            if s.name == name:
                return s
        raise KeyError(name)

    def names(self) -> list[str]:
        return [s.name for s in self.subjects]

    def settings_for(self, subject: Subject) -> dict[str, Any]:
        """The `dti train` settings of one subject: the defaults, then its own."""
        return {**self.defaults, **subject.settings}


def load_manifest(path: str | os.PathLike, root: str | os.PathLike | None = None, check_photos: bool = True) -> Manifest:
    """Read and check a manifest; ``root`` overrides the file's ``root`` (e.g. where the user keeps
    the DreamBooth dataset). With ``check_photos`` every photo folder must exist."""
    path = Path(path)
    data = _read(path)
    where = f"manifest {path}"
    _unknown(data, TOP_KEYS, where, "the top level holds root, [defaults] and [subjects.NAME] tables")
    base = Path(root) if root is not None else _root(data.get("root"), path)
    defaults = _settings(data.get("defaults", {}), f"{where} [defaults]")
    subjects = data.get("subjects")
    if not isinstance(subjects, dict) or not subjects:
        raise DTIError(f"{where} lists no subjects; add one [subjects.NAME] table per subject with photos, class and kind")
    out: list[Subject] = []
    tokens: dict[str, str] = {}
    for name, entry in subjects.items():
        subject = _subject(name, entry, base, where, check_photos)
        if subject.token in tokens:
            first = tokens[subject.token]
            raise DTIError(f"{where}: subjects {first!r} and {name!r} both use the token {subject.token}; rename one token")
        tokens[subject.token] = name
        out.append(subject)
    return Manifest(path, tuple(out), defaults)


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DTIError(f"manifest {path} does not exist; pass a .toml file listing the subjects (see `dti sweep --help`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DTIError(f"cannot read manifest {path} ({reason}); pass a readable .toml file") from None
    twice = _repeated_subject(text)
    if twice:
        raise DTIError(f"manifest {path} lists subject {twice!r} twice; give each subject one [subjects.{twice}] table")
    try:
        data = _toml().loads(text)
    except ValueError as exc:
        raise DTIError(f"manifest {path} is not valid TOML ({' '.join(str(exc).split())}); fix the file") from None
    return data


def _repeated_subject(text: str) -> str | None:
    """A subject whose [subjects.NAME] header appears twice (TOML itself only says 'cannot overwrite')."""
    seen: set[str] = set()
    for m in re.finditer(r'^\s*\[\s*subjects\s*\.\s*("?)([^\]"]+)\1\s*\]', text, flags=re.M):
        name = m.group(2).strip()
        if name in seen:
            return name
        seen.add(name)
    return None


def _root(value: Any, path: Path) -> Path:
    if value is None:
        return path.parent
    if not isinstance(value, str) or not value:
        raise DTIError(f"manifest {path}: root must be a folder path (a string), got {value!r}")
    root = Path(os.path.expanduser(value))
    return root if root.is_absolute() else path.parent / root


def _unknown(entry: Mapping[str, Any], allowed: tuple[str, ...], where: str, hint: str) -> None:
    for key in entry:
        if key not in allowed:
            raise DTIError(f"{where}: unknown key {key!r}; {hint}")


def _settings(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DTIError(f"{where} must be a table of `dti train` settings (name = value), got {value!r}")
    values = field_keys(value, where)
    for key in PER_SUBJECT_FIELDS:
        if key in values:
            raise DTIError(f"{where}: {key!r} is set per subject, not as a setting; remove it")
    return check_settings(values, where)


def _text(entry: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = entry.get(key, default)
    if value is None:
        raise DTIError(f'{where} has no {key}; add {key} = "..."')
    if not isinstance(value, str) or not value.strip():
        raise DTIError(f"{where}: {key} must be a non-empty string, got {value!r}")
    return value.strip()


def _subject(name: str, entry: Any, base: Path, where: str, check_photos: bool) -> Subject:
    here = f"{where} [subjects.{name}]"
    if not NAME.fullmatch(name):
        raise DTIError(f"{here}: a subject name is letters, digits, '_', '-' or '.', starting with a letter or digit; rename it")
    if not isinstance(entry, dict):
        raise DTIError(f"{here} must be a table with photos, class and kind, got {entry!r}")
    _unknown(entry, SUBJECT_KEYS, here, f"a subject has {', '.join(SUBJECT_KEYS)}")
    photos = Path(os.path.expanduser(_text(entry, "photos", here)))
    photos = photos if photos.is_absolute() else base / photos
    if check_photos and not photos.is_dir():
        what = "is not a folder" if photos.exists() else "does not exist"
        raise DTIError(f"{here}: photo folder {photos} {what}; fix photos (or the manifest's root, or pass --data-root)")
    class_word = _text(entry, "class", here)
    kind = _text(entry, "kind", here)
    if kind not in KINDS:
        raise DTIError(f'{here}: kind {kind!r} is unknown; use "live" (animals, people) or "object"')
    init = _text(entry, "init", here, default=class_word)
    if len(init.split()) != 1:
        raise DTIError(f'{here}: the initializer {init!r} is not one word; add init = "<one word>" (e.g. {init.split()[-1]!r})')
    token = _text(entry, "token", here, default=f"<{name}>")
    check_token_text(token, f"{here} token")
    settings = _settings(entry.get("settings", {}), f"{here} settings")
    return Subject(name, photos, class_word, kind, init, token, settings)
