"""Reading pickled ``.pt`` / ``.bin`` embeddings without running them.

Files are loaded only with ``torch.load(weights_only=True)``: a pickle that would build arbitrary
objects is refused, never run. When torch refuses a file, the refusal says why in one line: a
damaged or truncated file, or a pickle that calls something that is not a tensor (named, found by
reading the pickle's opcodes with :mod:`pickletools`, which only parses).
"""

from __future__ import annotations

import io
import pickletools
import re
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from dti.core.errors import DTIError

#: Modules whose globals a plain tensor file names (torch's rebuild functions, OrderedDict); any other is refused by name.
_TENSOR_MODULES = {"torch", "collections"}


def _resolves(name: str) -> bool:
    """Whether ``module.attr`` names an existing object in an already imported module (nothing is imported)."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        obj = sys.modules.get(".".join(parts[:i]))
        if obj is None:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return False
        return True
    return False


def _pickle_globals(data: bytes) -> tuple[list[str], bool]:
    """The globals the pickles at the start of ``data`` name, read without running them
    (:mod:`pickletools` only parses), and whether the bytes parsed as whole pickles."""
    stream = io.BytesIO(data)
    names: list[str] = []
    memo: dict[int, Any] = {}
    pushed: list[Any] = []  # recent pushes, strings kept: what STACK_GLOBAL pops
    try:
        for _ in range(5):  # torch's legacy layout: five pickles, then raw storage bytes
            if stream.tell() >= len(data):
                break
            for op, arg, _pos in pickletools.genops(stream):
                if op.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL":
                    if len(pushed) >= 2 and all(isinstance(x, str) for x in pushed[-2:]):
                        names.append(f"{pushed[-2]}.{pushed[-1]}")
                    else:
                        names.append("an unnamed global")
                elif op.name == "MEMOIZE":
                    memo[len(memo)] = pushed[-1] if pushed else None
                elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[int(arg)] = pushed[-1] if pushed else None
                elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                    pushed.append(memo.get(int(arg)))
                elif "UNICODE" in op.name or "STRING" in op.name:
                    pushed.append(arg if isinstance(arg, str) else None)
                else:
                    pushed.append(None)
                del pushed[:-8]
    except Exception:  # ValueError and friends: not a whole pickle
        return names, False
    return names, True


def _shown(name: str) -> str:
    module, _, attr = name.rpartition(".")
    return f"{name} (os.{attr})" if module in ("posix", "nt") else name


def _pt_error(path: Path, exc: BaseException) -> DTIError:
    """Tell a damaged file from a pickle that torch's safe loader refused (naming what it calls)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        return DTIError(f"could not read {path}: {err.strerror or err}; check the file's permissions")
    if not data:
        return DTIError(f"{path} is not a readable .pt file (it is empty); download or export it again")
    text = str(exc)
    damaged = f"{path} is not a readable .pt file (damaged or truncated: {{}}); download or export it again"
    if data[:2] == b"PK":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError):
            return DTIError(damaged.format("a broken zip archive"))
        if bad is not None:
            return DTIError(damaged.format(f"a broken entry {bad} in its zip archive"))
        names = re.findall(r"GLOBAL ([\w.]+)", text)
        whole = True
    else:
        found, whole = _pickle_globals(data)
        names = [*re.findall(r"GLOBAL ([\w.]+)", text), *found]
    foreign = [n for n in names if n.split(".")[0] not in _TENSOR_MODULES]
    if foreign:
        return DTIError(
            f"refused to load {path}: its pickle calls {_shown(foreign[0])}, which is not a tensor; pickles are never "
            "unpickled freely, so convert it to .safetensors in an environment you trust"
        )
    if not whole:
        return DTIError(damaged.format("neither a zip archive nor a whole pickle"))
    if any(not _resolves(n) for n in names) or not names:
        return DTIError(damaged.format(type(exc).__name__ if not names else "it names torch objects that do not exist"))
    return DTIError(
        f"refused to load {path}: its pickle builds {names[0]}, which torch's safe loader does not allow; "
        "convert it to .safetensors in an environment you trust"
    )


def torch_load(path: Path) -> Any:
    """A ``.pt`` file's object, loaded with ``weights_only=True``; a refusal is one line naming why."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr; the file is judged below
            warnings.simplefilter("ignore")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (zip), EOFError: damaged, or refused
        raise _pt_error(path, exc) from None
