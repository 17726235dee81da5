"""Hostile-user acceptance cases: about 1200 careless, demanding or malicious uses of every dti command
and of the Python API, each classified against the project standard. A library module: the cases,
the fixtures they need, how one case is run and judged, and the report; ``test_hostile.py`` runs each
case as one test and ``conftest.py`` picks the fast subset (``DTI_ACCEPTANCE=all`` runs them all).

The standard: bad input exits 2 with ONE ``error: ...`` line naming the problem and the fix, never
a traceback; no half-written, corrupt or overwritten output (existing outputs are replaced only with
--overwrite, once the new result is complete); a stopped run (SIGTERM 143, Ctrl-C 130, repeated
non-finite loss 1) prints the resume command; files dti did not write are never deleted.

Each case is classified as:

- ``good``: exit 2 with exactly one ``error:`` line, or success where success is right;
- ``poor``: exit 2 with several lines / an unclear or wrong message, success where a refusal was
  due, a missing warning, noise on stderr, a refusal that leaves files or folders behind;
- ``traceback``: a ``Traceback`` on stderr, or an exception from the API other than
  ``dti.DTIError`` / ``dti.RunStopped`` / a ``TypeError`` for a wrong call signature;
- ``data-loss``: a pre-existing file changed or removed without --overwrite, a user file deleted,
  a temp / truncated / corrupt output left behind, an old result lost because a new run failed.

Before each case the relevant folders are snapshotted (names, sizes, sha256) and compared after.
Everything runs offline on the tiny pipelines of ``dti.testing.build_tiny``, built by :func:`setup`
into one work folder per session; most cases run in-process through ``dti.commands.main`` (2 shared
CPU cores), only signals, concurrency and memory-hungry values use subprocesses. Faults (a full disk,
a failing rename, a half-written file, a NaN loss) come from :mod:`dti.testing.faults`.

Notes: run as root, chmod-based permission cases cannot bite (they are then expected to succeed, and
marked as such); read-only and full-disk cases use small tmpfs mounts where ``mount`` is allowed
(elsewhere they are reported as unavailable), and monkeypatched ``OSError(ENOSPC)`` faults in any case.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import importlib
import io
import json
import logging
import os
import pickle
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dti.testing.faults import (
    can_mount,
    enospc,
    fail_os_replace,
    fail_savefig,
    fail_torch_save,
    fill_disk,
    half_write_png,
    half_write_safetensors,
    mount_tmpfs,
    mounts_under,
    nan_loss,
    open_denied,
    patched,
    raising,
    remount_readonly,
    unmount,
)

REPO = Path(__file__).resolve().parents[2]
DOG = Path(os.environ.get("DTI_DREAMBOOTH", REPO.parent / "shared" / "data" / "dreambooth")) / "dog"
FAMILIES = ("sd", "sdxl", "sd3", "flux", "pixart", "sana")
CLASSES = ("good", "poor", "traceback", "data-loss")
RANK = {"good": 0, "poor": 1, "data-loss": 2, "traceback": 3}
#: The warning filters of a fresh ``python`` / ``dti`` process (no -W options): each case starts from them,
#: whatever the test runner set, so that a warning shows exactly as a user would see it.
STARTUP_WARNING_FILTERS = [
    ("default", None, DeprecationWarning, "__main__", 0),
    ("ignore", None, DeprecationWarning, None, 0),
    ("ignore", None, PendingDeprecationWarning, None, 0),
    ("ignore", None, ImportWarning, None, 0),
    ("ignore", None, ResourceWarning, None, 0),
]

# Set by setup(): the session's work folder, the tiny pipelines and photos (CACHE), the trained
# fixtures, and where a malicious pickle would leave its mark if it ever ran.
WORK = Path(tempfile.gettempdir()) / "dti-hostile"
CACHE = WORK / "cache"
PWNED = WORK / "PWNED"
PWNED_EVAL = WORK / "PWNED-eval"


class Unavailable(Exception):
    """A case this machine cannot run (no tmpfs mounts): reported as skipped, not judged."""


# ====================================================================== capture & run
class Capture:
    """stdout/stderr captured at the Python level (``sys.stdout``/``sys.stderr``, which dti's ``warn``
    and tqdm look up at call time), at the file-descriptor level (C libraries), and from the logging
    handlers that print to the console (transformers', diffusers', torch's: they hold the stream they
    were made with, which under pytest is not the process's stderr)."""

    def __enter__(self) -> Capture:
        sys.stdout.flush()
        sys.stderr.flush()
        self._files = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]
        self._saved = [os.dup(1), os.dup(2)]
        os.dup2(self._files[0].fileno(), 1)
        os.dup2(self._files[1].fileno(), 2)
        self._py = [io.StringIO(), io.StringIO()]
        self._old = [sys.stdout, sys.stderr]
        sys.stdout, sys.stderr = self._py
        self._handlers = [(h, h.setStream(self._py[1])) for h in _console_handlers()]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handler, stream in self._handlers:
            handler.setStream(stream)
        sys.stdout, sys.stderr = self._old
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        for fd in self._saved:
            os.close(fd)
        texts = []
        for f in self._files:
            f.seek(0)
            texts.append(f.read().decode("utf-8", "replace"))
            f.close()
        self.stdout = self._py[0].getvalue() + texts[0]
        self.stderr = self._py[1].getvalue() + texts[1]


def _console_handlers() -> list[logging.StreamHandler]:
    """Every plain ``logging.StreamHandler`` of every logger (the console handlers libraries add; file
    handlers and pytest's own are other classes)."""
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger))]
    return [h for lg in loggers for h in lg.handlers if type(h) is logging.StreamHandler]


def _show_warning(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: str | None = None) -> None:
    """What a fresh process does with a warning: its text on (the current) stderr."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@dataclass
class Result:
    code: int | None = None
    stdout: str = ""
    stderr: str = ""
    exc: str | None = None  # last line of an uncaught exception's traceback
    exc_type: str | None = None
    value: Any = None
    issues: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


SIGNATURE_WORDS = ("positional argument", "keyword argument", "required positional", "takes ", "got multiple values")


class CaseTimeout(BaseException):
    """Raised by SIGALRM in the main thread: the case ran past its time limit (dti accepted and kept going)."""


def _alarm(signum: int, frame: Any) -> None:
    raise CaseTimeout()


class Reached(BaseException):
    """Raised by the demo guard: the demo got past its checks and started training (accepted)."""


@contextlib.contextmanager
def demo_guard():
    """The demo stops where it would start training (the harness judges its checks, not the demo)."""
    import dti.training.session

    def fake(*a: Any, **k: Any) -> Any:
        raise Reached()

    with patched(dti.training.session, "train", fake):
        yield


def run_cli(argv: list[str]) -> Result:
    """``dti.commands.main(argv)`` in-process, output captured; an exception escaping main() is a traceback
    (the demo guard's Reached means 'accepted')."""
    from dti.commands import main

    res = Result()
    with Capture() as cap, warnings.catch_warnings():
        _fresh_warnings()
        try:
            res.code = main(argv)
        except Reached:
            res.code = 0
            res.issues.append(("good", "the demo passed its checks and reached training (stopped there by the harness)"))
        except CaseTimeout:
            res.code = -1
            res.issues.append(("poor", "still running at the harness's time limit: the value was accepted and the command kept going"))
        except SystemExit as exc:
            res.code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException as exc:
            traceback.print_exc()
            res.exc = (f"{type(exc).__name__}: {exc}".splitlines() or [type(exc).__name__])[0]
            res.exc_type = type(exc).__name__
            res.code = 1
    res.stdout, res.stderr = cap.stdout, cap.stderr
    return res


def run_api(fn: Callable[[], Any]) -> Result:
    import dti

    res = Result()
    with Capture() as cap, warnings.catch_warnings():
        _fresh_warnings()
        try:
            res.value = fn()
            res.code = 0
        except dti.DTIError as exc:
            res.code = 2
            print(f"error: {exc}", file=sys.stderr)
        except dti.RunStopped as exc:
            res.code = exc.exit_code
            print(f"stopped: {exc}", file=sys.stderr)
        except CaseTimeout:
            res.code = -1
            res.issues.append(("poor", "still running at the harness's time limit: the value was accepted and the call kept going"))
        except KeyboardInterrupt:
            res.code = 0
            res.issues.append(("good", "KeyboardInterrupt propagated to the caller (normal for Python)"))
        except TypeError as exc:
            if any(w in str(exc) for w in SIGNATURE_WORDS):
                res.code = 2
                print(f"error: (TypeError, call signature) {exc}", file=sys.stderr)
            else:
                traceback.print_exc()
                res.exc, res.exc_type, res.code = f"TypeError: {exc}".splitlines()[0], "TypeError", 1
        except BaseException as exc:
            traceback.print_exc()
            res.exc = (f"{type(exc).__name__}: {exc}".splitlines() or [type(exc).__name__])[0]
            res.exc_type = type(exc).__name__
            res.code = 1
    res.stdout, res.stderr = cap.stdout, cap.stderr
    return res


def _fresh_warnings() -> None:
    """The warning filters, once-per-location registries and display (on stderr, not into a test
    runner's record) of a fresh process. Call inside ``warnings.catch_warnings()``, which restores them."""
    warnings.filters[:] = STARTUP_WARNING_FILTERS
    warnings._filters_mutated()  # type: ignore[attr-defined]
    warnings.showwarning = _show_warning
    for mod in list(sys.modules.values()):
        try:  # the module's own dict: getattr() would run a lazy module's __getattr__ (transformers, diffusers)
            reg = vars(mod).get("__warningregistry__")
        except TypeError:
            continue
        if isinstance(reg, dict):
            reg.clear()


def run_sub(argv: list[str], cwd: Path, timeout: float = 300) -> Result:
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "dti", *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=sub_env())
    return Result(code=proc.returncode, stdout=proc.stdout, stderr=proc.stderr, seconds=time.time() - t0)


def run_sub_limited(argv: list[str], cwd: Path, timeout: float = 150, mem_gb: float = 6) -> Result:
    """A subprocess with an address-space limit, for cases that might exhaust the machine's memory."""
    import resource

    def limit() -> None:
        cap = int(mem_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    t0 = time.time()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "dti", *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=sub_env(), preexec_fn=limit
        )
        res = Result(code=proc.returncode, stdout=proc.stdout, stderr=proc.stderr, seconds=time.time() - t0)
        if proc.returncode < 0:
            tail = (stderr_lines(proc.stderr) or [""])[-1][:120]
            res.issues.append(
                ("traceback", f"crash: the process died with signal {-proc.returncode} ({tail}) under a {mem_gb:g} GB memory limit")
            )
        elif "MemoryError" in proc.stderr or "std::bad_alloc" in proc.stderr:
            res.issues.append(("poor", f"ran out of its {mem_gb:g} GB memory limit"))
    except subprocess.TimeoutExpired as exc:
        res = Result(code=-1, stdout=str(exc.stdout or ""), stderr=str(exc.stderr or ""), seconds=time.time() - t0)
        res.issues.append(("poor", f"still running after {timeout:g} s: the value was accepted and the command kept going"))
    return res


def sub_env() -> dict[str, str]:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


# ====================================================================== snapshots
TEMP_PATTERNS = (re.compile(r"^\..*\.tmp$"), re.compile(r"\.dti-new$"), re.compile(r"^\.dti-write-test"))


def snapshot(root: Path, hashed: bool = True) -> dict[str, tuple]:
    """relpath -> (kind, size, digest) for everything under ``root`` (symlinks not followed); without
    ``hashed`` a file's digest is its modification time (cheap enough to run twice per case)."""
    out: dict[str, tuple] = {}
    top = os.fspath(root)
    if not os.path.lexists(top):
        return out
    cut = len(top.rstrip(os.sep)) + 1
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = path[cut:]
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", 0, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", 0, "")
            elif stat.S_ISREG(st.st_mode):
                if hashed:
                    try:
                        with open(path, "rb") as f:
                            digest = hashlib.file_digest(f, "sha256").hexdigest()
                    except OSError:
                        digest = "?"
                else:
                    digest = f"{st.st_mtime_ns}"
                out[rel] = ("f", st.st_size, digest)
            else:
                out[rel] = ("o", 0, "")
    return out


def check_file(path: Path) -> str | None:
    """Why ``path`` (a file dti wrote) is corrupt, or None."""
    suffix = path.suffix.lower()
    try:
        if path.stat().st_size == 0 and suffix in (".safetensors", ".png", ".json", ".pt", ".jpg", ".webp"):
            return "empty file"
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            load_file(str(path))
        elif suffix in (".png", ".jpg", ".jpeg", ".webp"):
            from PIL import Image

            with Image.open(path) as im:
                im.load()
        elif suffix == ".json":
            json.loads(path.read_text())
        elif suffix == ".jsonl":
            for line in path.read_text().splitlines():
                if line.strip():
                    json.loads(line)
        elif suffix == ".pt":
            import torch

            torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc)[:120]}"
    return None


def compare(
    before: dict, after: dict, root: Path, expect_refusal: bool, may_change: tuple[str, ...], skip_check: tuple[str, ...] = ()
) -> list[tuple[str, str]]:
    issues: list[tuple[str, str]] = []

    def allowed(rel: str) -> bool:
        return any(fnmatch.fnmatch(rel, pat) for pat in may_change)

    for rel, info in before.items():
        now = after.get(rel)
        if now is None:
            if not allowed(rel):
                issues.append(("data-loss", f"removed {rel}"))
        elif now != info and info[0] == "f" and not allowed(rel):
            issues.append(("data-loss", f"changed {rel} without --overwrite"))
    new = [rel for rel in after if rel not in before]
    for rel in sorted(new):
        name = Path(rel).name
        if any(p.search(name) for p in TEMP_PATTERNS):
            issues.append(("data-loss", f"temp/half-written file left: {rel}"))
        elif name == ".dti.lock":
            issues.append(("poor", f"lock file left behind: {rel}"))
    # every new or changed file must be whole
    for rel, info in after.items():
        if info[0] != "f" or before.get(rel) == info or any(fnmatch.fnmatch(rel, pat) for pat in skip_check):
            continue
        name = Path(rel).name
        if name.startswith(".") or any(p.search(name) for p in TEMP_PATTERNS):
            continue
        why = check_file(root / rel)
        if why:
            issues.append(("data-loss", f"corrupt output {rel}: {why}"))
    if expect_refusal:
        left = [
            rel
            for rel in new
            if not any(p.search(Path(rel).name) for p in TEMP_PATTERNS) and Path(rel).name != ".dti.lock" and not allowed(rel)
        ]
        files = [r for r in left if after[r][0] == "f"]
        dirs = [r for r in left if after[r][0] == "d" and not any(f.startswith(r + os.sep) for f in new)]
        if files:
            issues.append(("poor", f"refusal left files behind: {', '.join(sorted(files)[:4])}"))
        elif dirs:
            issues.append(("poor", f"refusal left an empty folder behind: {', '.join(sorted(dirs)[:3])}"))
    return issues


# ====================================================================== classification
def last_line(text: str, width: int = 120) -> str:
    return (stderr_lines(text) or [""])[-1][:width]


def stderr_lines(text: str) -> list[str]:
    lines = []
    for raw in text.replace("\r", "\n").splitlines():
        line = raw.strip()
        if line:
            lines.append(line)
    return lines


def traceback_last(text: str) -> str:
    lines = stderr_lines(text)
    idx = max((i for i, ln in enumerate(lines) if ln.startswith("Traceback")), default=None)
    if idx is None:
        return lines[-1] if lines else ""
    tail = lines[idx:]
    for line in reversed(tail):
        if re.match(r"^[\w.]+(Error|Exception|Interrupt|Warning|Exit)\b|^\w+:", line) and not line.startswith("File "):
            return line
    return tail[-1]


def classify(case: Case, res: Result) -> tuple[str, list[str], str]:
    """(class, notes, first line)."""
    issues = list(res.issues)
    lines = stderr_lines(res.stderr)
    first = lines[0] if lines else ""
    if res.exc or "Traceback (most recent call last)" in res.stderr:
        last = res.exc or traceback_last(res.stderr)
        issues.append(("traceback", f"uncaught: {last}"))
        first = last
    exp = case.expect
    errs = [ln for ln in lines if ln.startswith("error:")]
    warns = [ln for ln in lines if ln.startswith("warning:")]
    other = [ln for ln in lines if not ln.startswith(("error:", "warning:", "stopped:", "note:"))]
    words = [w.lower() for w in case.mention]

    def mentions(line: str) -> bool:
        return not words or any(w in line.lower() for w in words)

    clean_refusal = res.code == 2 and len(lines) == 1 and lines[0].startswith("error:")
    if exp in ("refuse", "refuse-or-warn", "any"):
        if res.code == 2:
            if not clean_refusal:
                issues.append(("poor", f"exit 2 with {len(lines)} stderr line(s), {len(errs)} 'error:' line(s)"))
            if errs and not mentions(errs[0]):
                issues.append(("poor", f"message does not name {'/'.join(case.mention)}"))
            if errs:
                first = errs[0]
        elif res.code == 0:
            if exp == "refuse":
                issues.append(("poor", "accepted (exit 0) where a refusal was due"))
            elif exp == "refuse-or-warn" and not warns:
                issues.append(("poor", "accepted silently (no warning) a value that should be refused or warned about"))
            elif other and not res.exc:
                issues.append(("poor", f"noise on stderr: {other[0][:100]}"))
        elif not res.exc:
            issues.append(("poor", f"exit {res.code} (expected 2 for a refusal)"))
    elif exp in ("ok", "warn"):
        if res.code == 0:
            if exp == "warn":
                hit = [w for w in warns if mentions(w)]
                if not hit:
                    foreign = [ln for ln in lines if "Warning" in ln]
                    if foreign:
                        issues.append(("poor", f"warning not in dti's one-line 'warning:' format: {foreign[0][:120]}"))
                    else:
                        issues.append(("poor", f"warning missing (about {'/'.join(case.mention)})"))
                else:
                    first = hit[0]
            if other and not res.exc:
                issues.append(("poor", f"noise on stderr: {other[0][:120]}"))
        elif res.code == 2:
            issues.append(("poor", f"refused valid input: {errs[0] if errs else first}"))
        elif not res.exc:
            issues.append(("poor", f"exit {res.code} where success was due"))
    elif exp.startswith("stop:"):
        want = int(exp.split(":")[1])
        resume_lines = [ln for ln in lines if "--resume" in ln]
        if res.code != want:
            issues.append(("poor", f"exit {res.code}, expected {want}"))
        if not resume_lines:
            issues.append(("poor", "no line with the resume command"))
        else:
            first = resume_lines[0]
    else:
        raise AssertionError(exp)
    if exp in ("refuse", "any", "refuse-or-warn") and res.code == 2 and errs and ("object at 0x" in errs[0] or "Traceback" in errs[0]):
        issues.append(("poor", "unclear message (Python internals in it)"))
    if errs and re.search(r"\.dti-new|/\.[^/ ]+\.tmp|\.dti-write-test", errs[0]):
        issues.append(("poor", "the message names an internal temp file instead of the user's output"))
    cls = max((c for c, _ in issues), key=lambda c: RANK[c], default="good")
    return cls, [n for _, n in issues], first


# ====================================================================== cases
@dataclass
class Case:
    id: str
    area: str
    expect: str  # refuse | ok | warn | any | refuse-or-warn | stop:N
    desc: str = ""
    argv: list[str] | None = None
    api: Callable[..., Any] | None = None  # api(ws, extra) -> value (exceptions classified)
    custom: Callable[..., Result] | None = None  # custom(ws, extra) -> Result (subprocess cases)
    prep: Callable[..., Any] | None = None  # prep(ws) -> dict of extra @vars, may give "argv"
    mention: tuple[str, ...] = ()
    post: Callable[..., Any] | None = None  # post(ws, res) -> list[(class, note)]
    may_change: tuple[str, ...] = ()
    patch: Callable[..., Any] | None = None  # patch(ws) -> context manager
    skip_check: tuple[str, ...] = ()
    note: str = ""
    timeout: int | None = None  # seconds; default 90 in-process, 420 for subprocess cases
    isolate: bool = False  # run the argv in a subprocess with a memory limit (cases that may exhaust memory)
    needs_mount: bool = False  # prep mounts a tmpfs: unavailable where mounting is not allowed


CASES: list[Case] = []
_IDS: set[str] = set()


def add(id: str, area: str, expect: str, **kw: Any) -> Case:
    base, n = id, 2
    while id in _IDS:  # generated ids may collide after truncation
        id, n = f"{base}-{n}", n + 1
    _IDS.add(id)
    case = Case(id, area, expect, **kw)
    CASES.append(case)
    return case


#: The records of the cases run so far in this process (the report is written from them).
RECORDS: list[dict] = []
P: dict[str, str] = {}  # @name substitutions: fixtures and the case workspace (filled by setup())


def subst(text: str, extra: dict[str, str]) -> str:
    return re.sub(r"@(\w+)", lambda m: extra.get(m.group(1), P.get(m.group(1), m.group(0))), text)


def T(
    *extra: str,
    photos: str | None = "@photos",
    model: str | None = "@sd",
    out: str | None = "@ws/run",
    token: str | None = "<my-hd>",
    init: str | None = "dog",
    steps: str | None = "1",
    res: str | None = "32",
    batch: str | None = "1",
    validate: bool = False,
) -> list[str]:
    """``dti train`` argv, tiny by default; ``extra`` flags come last (argparse: the last one wins)."""
    argv = ["train"] + ([photos] if photos is not None else [])
    for flag, value in (
        ("--token", token),
        ("--init", init),
        ("--model", model),
        ("--output", out),
        ("--steps", steps),
        ("--resolution", res),
        ("--batch-size", batch),
    ):
        if value is not None:
            argv += [flag, value]
    argv += ["--sample-steps", "1", "--validation-seeds", "0"] if validate else ["--no-validation"]
    argv += ["--quiet", *extra]
    return argv


# ====================================================================== fixtures
def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def raw_png(
    width: int, height: int, bit_depth: int = 8, color_type: int = 2, pixels: bytes | None = None, idat: bytes | None = None
) -> bytes:
    """A PNG written by hand (any bit depth, or a header that lies about its size)."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    head = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))
    if idat is None:
        row = width * channels * bit_depth // 8
        if pixels is None:
            import random

            rng = random.Random(width * 7 + height)
            pixels = b"".join(b"\x00" + bytes(rng.randrange(256) for _ in range(row)) for _ in range(height))
        idat = zlib.compress(pixels)
    return head + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def image_bytes(mode: str = "RGB", size: tuple[int, int] = (96, 96), fmt: str = "PNG", **save: Any) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(size[0] * 31 + size[1])
    if mode == "RGB":
        im = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    elif mode == "RGBA":
        a = rng.integers(0, 255, (size[1], size[0], 4), dtype=np.uint8)
        a[..., 3] = 0
        a[: size[1] // 2, :, 3] = 255
        im = Image.fromarray(a, "RGBA")
    elif mode == "RGBA-opaque":
        a = rng.integers(0, 255, (size[1], size[0], 4), dtype=np.uint8)
        a[..., 3] = 255
        im = Image.fromarray(a, "RGBA")
    elif mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65535, (size[1], size[0]), dtype=np.uint16))
    elif mode == "F":
        im = Image.fromarray(rng.random((size[1], size[0]), dtype=np.float32), "F")
    else:
        im = Image.new("RGB", size, (120, 80, 40)).convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save)
    return buf.getvalue()


def real_png() -> bytes:
    """One of the fixture photos (a real PNG)."""
    return (Path(P["photos"]) / "00.png").read_bytes()


def real_jpg() -> bytes:
    return image_bytes(fmt="JPEG", size=(128, 128))


def setup(work: Path) -> None:
    """Build everything the cases read into ``work``: the tiny pipelines and photos (``work/cache``),
    finished runs trained by the current code and the bad concept files (``work/fixtures``). Fills
    :data:`P`. Cases then run in ``work/cases/<id>``."""
    global WORK, CACHE, PWNED, PWNED_EVAL
    WORK, CACHE = Path(work), Path(work) / "cache"
    PWNED, PWNED_EVAL = WORK / "PWNED", WORK / "PWNED-eval"
    WORK.mkdir(parents=True, exist_ok=True)
    _PIPES.clear()
    setup_cache()
    setup_fixtures()


def teardown() -> None:
    """Unmount whatever a case left mounted under the work folder."""
    for mnt in MOUNTS:
        unmount(mnt)
    MOUNTS.clear()
    for mnt in reversed(mounts_under(WORK)):
        unmount(mnt)
    _PIPES.clear()


def setup_cache() -> None:
    from dti.testing import build_tiny

    CACHE.mkdir(parents=True, exist_ok=True)
    for fam in FAMILIES:
        folder = CACHE / fam
        if not (folder / "model_index.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            with Capture():
                build_tiny(fam, folder)
        P[fam] = str(folder)
    photos = CACHE / "photos"
    if not photos.is_dir():
        from PIL import Image

        photos.mkdir(parents=True)
        sources = sorted(DOG.glob("*.jpg")) if DOG.is_dir() else []
        for i in range(5):
            if i < len(sources):
                im = Image.open(sources[i]).convert("RGB")
                im.thumbnail((96, 96))
                im.save(photos / f"{i:02d}.png")
            else:
                (photos / f"{i:02d}.png").write_bytes(image_bytes(size=(96, 96 + i)))
    P["photos"] = str(photos)


def train_fixture(name: str, argv: list[str]) -> Path:
    out = WORK / "fixtures" / name
    res = run_cli([subst(a, {"out": str(out)}) for a in argv])
    if res.code != 0:
        raise RuntimeError(f"fixture {name} failed ({res.code}): {res.stderr[-2000:]}")
    return out


def setup_fixtures() -> None:
    """Finished runs (fresh each session, so they reflect the current code) and concept files."""
    shutil.rmtree(WORK / "fixtures", ignore_errors=True)
    (WORK / "fixtures").mkdir(parents=True)
    P["run"] = str(train_fixture("run", T("--checkpoint-every", "1", "--snapshot-every", "1", out="@out", steps="2")))
    P["run2"] = str(train_fixture("run2", T("--seed", "3", token="<my-hc>", init="cat", out="@out")))
    P["tirun"] = str(train_fixture("tirun", T("--method", "ti", token="<my-ht>", init="cat", out="@out")))
    P["run2v"] = str(train_fixture("run2v", T(token="<my-hv>", init="stuffed animal", out="@out")))
    P["xlrun"] = str(train_fixture("xlrun", T(model="@sdxl", token="<my-hx>", out="@out")))
    P["fluxrun"] = str(train_fixture("fluxrun", T(model="@flux", token="<my-hf>", out="@out")))
    P["concept"] = str(Path(P["run"]) / "concept.safetensors")
    P["webui"] = str(next((Path(P["run"]) / "webui").glob("*.safetensors")))
    P["diffusers"] = str(Path(P["run"]) / "learned_embeds.safetensors")
    make_bad_concepts(WORK / "fixtures" / "bad")


def _raw(path: str) -> tuple[dict, dict]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, framework="pt") as f:
        meta = dict(f.metadata() or {})
    return dict(load_file(path)), meta


class Evil:
    """A pickle that would run a shell command if unpickled freely."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class EvalEvil:
    """A pickle that would eval Python (touching ``path``) if unpickled freely."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (eval, (f"__import__('os').system('touch {self.path}')",))


#: The bad concept files (:func:`make_bad_concepts`), name -> what is wrong with them: "values" (damaged
#: numbers), "format" (not a concept dti can read), "evil" (a malicious pickle), "token" (a token dti
#: refuses), "mismatch" (fine, for another width), "any" (readable either way) or "ok".
BAD_KINDS: dict[str, str] = {
    **dict.fromkeys(("dti-nan", "dti-inf", "dti-zero", "dti-int", "dti-bool", "dti-norows", "dti-1d", "dti-3d", "dti-huge"), "values"),
    "dti-fp16": "ok",
    "dti-f64": "ok",
    **dict.fromkeys(
        ("dti-badjson", "dti-metalist", "dti-encoders-empty", "dti-missing-vectors", "dti-notoken"),
        "format",
    ),
    "dti-spacetoken": "token",
    "dti-version99": "format",
    "dti-extra-tensor": "format",
    "dti-width-lie": "format",
    "dti-neg-magnitude": "values",
    "dti-copy-differs": "values",
    "dti-init-nan": "values",
    "dti-kind-int": "format",
    "dti-unknown-encoder": "format",
    "kohya-nan": "values",
    "kohya-zero": "values",
    "kohya-int": "values",
    "kohya-3d": "values",
    "kohya-ok": "ok",
    "kohya-width7": "mismatch",
    "diffusers-two-tokens": "format",
    "no-tensors": "format",
    "sdxl-counts-differ": "format",
    "dti-meta-garbage": "format",
    **dict.fromkeys(("st-empty", "st-random", "st-text", "st-huge-header", "st-header-garbage"), "format"),
    "a1111-ok": "ok",
    "a1111-legacy": "ok",
    "a1111-nan": "values",
    "a1111-twoterms": "format",
    "a1111-strparam": "format",
    "a1111-listparam": "format",
    "pt-list": "format",
    "pt-bare-tensor": "any",
    "diffusers-bin": "ok",
    **dict.fromkeys(("pt-empty", "pt-random", "pt-truncated"), "format"),
    **dict.fromkeys(("evil-raw", "evil-zip", "evil-eval"), "evil"),
    "wrong-ext-txt": "format",
    "pt-as-safetensors": "format",
    "safetensors-as-pt": "any",
    "empty-dir": "format",
    "symlink-loop": "format",
    "missing": "format",
    "diffusers-mixed-tokens": "format",
    "concept-is-a-folder": "format",
}
BAD: dict[str, str] = {}  # name -> path, filled by make_bad_concepts()


def bad_ref(name: str) -> str:
    """The @variable naming the bad concept file ``name``."""
    return f"@bad_{name.replace('-', '_')}"


def make_bad_concepts(folder: Path) -> None:
    """Concept files a careless or malicious user would hand dti."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors, meta = _raw(P["concept"])
    vec = tensors["text_encoder.vectors"]

    def put(name: str, path: Path) -> None:
        BAD[name] = str(path)

    def dti_variant(
        name: str,
        vectors: Any = None,
        meta_over: dict | None = None,
        drop: tuple = (),
        extra: dict | None = None,
        copy_same: bool = True,
    ) -> None:
        t = dict(tensors)
        if vectors is not None:
            t["text_encoder.vectors"] = vectors
            if copy_same:
                t["emb_params"] = vectors.clone() if isinstance(vectors, torch.Tensor) else vectors
            if not (isinstance(vectors, torch.Tensor) and vectors.is_floating_point() and vectors.shape == vec.shape):
                t.pop("text_encoder.init", None)
        for k in drop:
            t.pop(k, None)
        t.update(extra or {})
        m = dict(meta)
        m.update(meta_over or {})
        path = folder / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in t.items()}, str(path), metadata=m)
        put(name, path)

    nan = vec.clone()
    nan[0, 3] = float("nan")
    inf = vec.clone()
    inf[0, 0] = float("inf")
    dti_variant("dti-nan", nan)
    dti_variant("dti-inf", inf)
    dti_variant("dti-zero", torch.zeros_like(vec))
    dti_variant("dti-int", (vec * 100).to(torch.int32))
    dti_variant("dti-bool", vec > 0)
    dti_variant(
        "dti-norows",
        torch.zeros(0, vec.shape[1]),
        meta_over={"encoders": json.dumps({"text_encoder": {"magnitude": None, "width": vec.shape[1], "n_vectors": 0, "kind": "clip_l"}})},
    )
    dti_variant("dti-1d", vec[0].clone())
    dti_variant("dti-3d", vec.reshape(1, 1, -1).clone())
    dti_variant("dti-huge", vec * 1e30)
    dti_variant("dti-fp16", vec.to(torch.float16), copy_same=True)
    dti_variant("dti-f64", vec.to(torch.float64))
    dti_variant("dti-badjson", meta_over={"encoders": "{not json"})
    dti_variant("dti-metalist", meta_over={"meta": "[1, 2]"})
    dti_variant("dti-encoders-empty", meta_over={"encoders": "{}"})
    dti_variant("dti-missing-vectors", drop=("text_encoder.vectors",))
    dti_variant("dti-notoken", meta_over={"token": ""})
    dti_variant("dti-spacetoken", meta_over={"token": "my dog"})
    dti_variant("dti-version99", meta_over={"format_version": "99"})
    dti_variant("dti-extra-tensor", extra={"evil.payload": torch.zeros(3)})
    dti_variant(
        "dti-width-lie",
        meta_over={"encoders": json.dumps({"text_encoder": {"magnitude": 0.1, "width": 999, "n_vectors": 1, "kind": "clip_l"}})},
    )
    dti_variant(
        "dti-neg-magnitude",
        meta_over={"encoders": json.dumps({"text_encoder": {"magnitude": -1, "width": vec.shape[1], "n_vectors": 1, "kind": "clip_l"}})},
    )
    dti_variant("dti-copy-differs", extra={"emb_params": vec * 2})
    dti_variant("dti-init-nan", extra={"text_encoder.init": torch.full_like(vec, float("nan"))})
    dti_variant(
        "dti-kind-int",
        meta_over={"encoders": json.dumps({"text_encoder": {"magnitude": 0.1, "width": vec.shape[1], "n_vectors": 1, "kind": 7}})},
    )
    dti_variant("dti-unknown-encoder", meta_over={"encoders": json.dumps({"text_encoder_7": {"magnitude": 0.1}})})

    def st(name: str, t: dict, m: dict | None = None) -> None:
        path = folder / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in t.items()}, str(path), metadata=m)
        put(name, path)

    st("kohya-nan", {"emb_params": nan})
    st("kohya-zero", {"emb_params": torch.zeros_like(vec)})
    st("kohya-int", {"emb_params": (vec * 100).to(torch.int64)})
    st("kohya-3d", {"emb_params": vec.reshape(1, 1, -1).clone()})
    st("kohya-ok", {"emb_params": vec.clone()})
    st("kohya-width7", {"emb_params": torch.randn(1, 7)})
    st("diffusers-two-tokens", {"<a>": vec.clone(), "<b>": vec.clone()})
    st("no-tensors", {})
    st("sdxl-counts-differ", {"clip_l": torch.randn(1, 32), "clip_g": torch.randn(2, 32)})
    st("dti-meta-garbage", {"emb_params": vec.clone()}, {"dti_meta": "{oops", "written_by": "dti"})
    # not safetensors at all
    for name, data in (
        ("st-empty", b""),
        ("st-random", os.urandom(512)),
        ("st-text", b"hello, this is not a tensor file\n"),
        ("st-huge-header", struct.pack("<Q", 10**15) + b"{}"),
        ("st-header-garbage", struct.pack("<Q", 20) + b"{not json at all!!!}"),
    ):
        (folder / f"{name}.safetensors").write_bytes(data)
        put(name, folder / f"{name}.safetensors")
    # .pt files
    ok_pt = {"string_to_token": {"*": 265}, "string_to_param": {"*": vec.clone()}, "name": "hpt", "step": 3}
    torch.save(ok_pt, folder / "a1111-ok.pt")
    put("a1111-ok", folder / "a1111-ok.pt")
    torch.save(ok_pt, folder / "a1111-legacy.pt", _use_new_zipfile_serialization=False)
    put("a1111-legacy", folder / "a1111-legacy.pt")
    torch.save({"string_to_param": {"*": nan}, "name": "hnan"}, folder / "a1111-nan.pt")
    put("a1111-nan", folder / "a1111-nan.pt")
    torch.save({"string_to_param": {"*": vec, "#": vec}, "name": "h2"}, folder / "a1111-twoterms.pt")
    put("a1111-twoterms", folder / "a1111-twoterms.pt")
    torch.save({"string_to_param": {"*": "not a tensor"}, "name": "hs"}, folder / "a1111-strparam.pt")
    put("a1111-strparam", folder / "a1111-strparam.pt")
    torch.save({"string_to_param": ["x"], "name": "hl"}, folder / "a1111-listparam.pt")
    put("a1111-listparam", folder / "a1111-listparam.pt")
    torch.save([vec], folder / "pt-list.pt")
    put("pt-list", folder / "pt-list.pt")
    torch.save(vec.clone(), folder / "pt-bare-tensor.pt")
    put("pt-bare-tensor", folder / "pt-bare-tensor.pt")
    torch.save({"<hb>": vec.clone()}, folder / "learned_embeds.bin")
    put("diffusers-bin", folder / "learned_embeds.bin")
    for name, data in (("pt-empty", b""), ("pt-random", os.urandom(700)), ("pt-truncated", (folder / "a1111-ok.pt").read_bytes()[:300])):
        (folder / f"{name}.pt").write_bytes(data)
        put(name, folder / f"{name}.pt")
    # malicious pickles: raw protocol-2 pickle and torch's zip container
    (folder / "evil-raw.pt").write_bytes(pickle.dumps(Evil(f"touch {PWNED}"), protocol=2))
    put("evil-raw", folder / "evil-raw.pt")
    torch.save({"string_to_param": {"*": Evil(f"touch {PWNED}")}}, folder / "evil-zip.pt")
    put("evil-zip", folder / "evil-zip.pt")
    (folder / "evil-eval.bin").write_bytes(pickle.dumps(EvalEvil(PWNED_EVAL), protocol=4))
    put("evil-eval", folder / "evil-eval.bin")
    # wrong extensions / not files
    shutil.copy(P["concept"], folder / "concept.txt")
    put("wrong-ext-txt", folder / "concept.txt")
    shutil.copy(folder / "a1111-ok.pt", folder / "renamed-pt.safetensors")
    put("pt-as-safetensors", folder / "renamed-pt.safetensors")
    shutil.copy(P["concept"], folder / "st-as.pt")
    put("safetensors-as-pt", folder / "st-as.pt")
    (folder / "empty-dir").mkdir(exist_ok=True)
    put("empty-dir", folder / "empty-dir")
    loop = folder / "loop.safetensors"
    if not loop.is_symlink():
        os.symlink(folder / "loop2.safetensors", loop)
        os.symlink(loop, folder / "loop2.safetensors")
    put("symlink-loop", loop)
    put("missing", folder / "no-such-file.safetensors")
    mixed = folder / "mixed-diffusers"
    mixed.mkdir(exist_ok=True)
    save_file({"<a>": vec.clone()}, str(mixed / "learned_embeds.safetensors"))
    save_file({"<b>": torch.randn(1, 32)}, str(mixed / "learned_embeds_2.safetensors"))
    put("diffusers-mixed-tokens", mixed)
    concept_dir = folder / "concept-is-dir"
    (concept_dir / "concept.safetensors").mkdir(parents=True, exist_ok=True)
    put("concept-is-a-folder", concept_dir)
    if set(BAD) != set(BAD_KINDS):
        raise RuntimeError(f"BAD_KINDS and make_bad_concepts disagree: {sorted(set(BAD) ^ set(BAD_KINDS))}")
    for name, path in BAD.items():
        P[bad_ref(name)[1:]] = path


# ====================================================================== helpers for cases
MOUNTS: list[Path] = []
_CAN_MOUNT: list[bool] = []


def mountable() -> bool:
    if not _CAN_MOUNT:
        _CAN_MOUNT.append(can_mount(WORK / "mount-probe"))
    return _CAN_MOUNT[0]


def copy_run(src: str, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def copy_model(fam: str, dst: Path) -> Path:
    shutil.copytree(P[fam], dst)
    return dst


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def good_photos(folder: Path, n: int = 5) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for p in sorted(Path(P["photos"]).glob("*.png"))[:n]:
        shutil.copy(p, folder / p.name)
    return folder


def unfinished_run(dst: Path) -> Path:
    """A copy of the fixture run as a SIGKILL at step 1 would leave it: no concept, checkpoint 1 only."""
    copy_run(P["run"], dst)
    for name in ("concept.safetensors", "learned_embeds.safetensors", "norms.png"):
        (dst / name).unlink(missing_ok=True)
    shutil.rmtree(dst / "webui", ignore_errors=True)
    for ck in (dst / "checkpoints").glob("step-*.pt"):
        if ck.name != "step-000001.pt":
            ck.unlink()
    lines = (dst / "train_log.jsonl").read_text().splitlines()
    (dst / "train_log.jsonl").write_text("\n".join(lines[:2]) + "\n")
    return dst


def user_files(run: Path) -> dict[str, str]:
    """Files a user drops into a run folder; returns relpath -> sha256."""
    files = {
        "notes.txt": "my notes about this dog\n",
        "samples/my-favourite.png": image_bytes(size=(32, 32)),
        "snapshots/keep-me.safetensors": b"user bytes, not a safetensors file",
        "webui/my-other-embedding.safetensors": b"someone else's embedding",
        "checkpoints/README": "mine\n",
    }
    out = {}
    for rel, data in files.items():
        p = write(run / rel, data)
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def check_user_files(run: Path, saved: dict[str, str]) -> list[tuple[str, str]]:
    issues = []
    for rel, digest in saved.items():
        p = run / rel
        if not p.is_file():
            issues.append(("data-loss", f"user file deleted: {rel}"))
        elif hashlib.sha256(p.read_bytes()).hexdigest() != digest:
            issues.append(("data-loss", f"user file changed: {rel}"))
    return issues


def concept_digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


_PIPES: dict[str, Any] = {}


def pipe_for(fam: str = "sd") -> Any:
    if fam not in _PIPES:
        import torch

        from dti.models import load_adapter

        with Capture():
            _PIPES[fam] = load_adapter(P[fam], torch.float32, "cpu", quiet=True).pipe
    return _PIPES[fam]


def pipe_state(pipe: Any) -> tuple:
    from dti.models import adapter_for

    state: list[tuple] = []
    for slot in adapter_for(pipe).encoders:
        emb = slot.text_encoder.get_input_embeddings()
        state.append(
            (slot.name, len(slot.tokenizer), tuple(emb.weight.shape), float(emb.weight.detach().double().sum()), type(emb).__name__)
        )
    with contextlib.suppress(Exception):
        from dti.use.loading import loaded_tokens

        state.append(("loaded", tuple(loaded_tokens(pipe))))
    return tuple(state)


def pipe_unchanged(fam: str = "sd") -> Callable[..., list]:
    """A post-check: the shared pipeline is as it was before the case (nothing left attached)."""
    base = {}

    def before() -> None:
        base["state"] = pipe_state(pipe_for(fam))

    def post(ws: Path, res: Result) -> list:
        from dti.use.loading import loaded_tokens, unload

        now = pipe_state(pipe_for(fam))
        issues = []
        if now != base["state"]:
            issues.append(("poor", f"the pipeline was left modified: {base['state']} -> {now}"))
        for tok in list(loaded_tokens(pipe_for(fam))):  # restore for the next case
            with contextlib.suppress(Exception):
                unload(pipe_for(fam), tok)
        return issues

    post.before = before  # type: ignore[attr-defined]
    return post


def module(name: str) -> Any:
    """A dti module by dotted name (for a patch target)."""
    return importlib.import_module(name)


def define_cli() -> None:
    A = "cli"
    add("cli-noargs", A, "refuse", argv=[])
    add("cli-unknown-command", A, "refuse", argv=["fly"], mention=("fly",))
    add("cli-version", A, "ok", argv=["--version"])
    add("cli-help", A, "ok", argv=["--help"])
    for cmd in ("train", "generate", "interpolate", "inspect", "convert", "rescale", "demo", "sweep", "evaluate"):
        add(f"cli-help-{cmd}", A, "ok", argv=[cmd, "--help"])
    add("cli-train-noargs", A, "refuse", argv=["train"])
    add("cli-train-typo-flag", A, "refuse", argv=T("--stpes", "3"), mention=("stpes",))
    add("cli-train-flag-without-value", A, "refuse", argv=T("--steps"), mention=("--steps",))
    add(
        "cli-train-token-eats-flag",
        A,
        "refuse",
        argv=["train", "@photos", "--token", "--init", "dog", "--model", "@sd", "--output", "@ws/run"],
    )
    add("cli-train-two-photo-folders", A, "refuse", argv=[*T(), "@photos"])
    add("cli-generate-noargs", A, "refuse", argv=["generate"])
    add("cli-inspect-noargs", A, "refuse", argv=["inspect"])
    add("cli-convert-noargs", A, "refuse", argv=["convert"])
    add("cli-interpolate-one", A, "refuse", argv=["interpolate", "@run", "--out", "@ws/b"])
    add("cli-interpolate-no-out", A, "refuse", argv=["interpolate", "@run", "@run2"], mention=("--out",))
    add("cli-train-missing-photos", A, "refuse", argv=T(photos=None), mention=("photos",))
    add("cli-train-missing-token", A, "refuse", argv=T(token=None), mention=("token",))
    add("cli-train-missing-init", A, "refuse", argv=T(init=None), mention=("init",))
    add("cli-train-missing-model", A, "refuse", argv=T(model=None), mention=("model",))
    add("cli-train-missing-output", A, "refuse", argv=T(out=None), mention=("output",))
    add("cli-subprocess-noargs", A, "refuse", custom=lambda ws, x: run_sub([], ws), desc="python -m dti (a real process)")
    add(
        "cli-subprocess-bad-photos",
        A,
        "refuse",
        custom=lambda ws, x: run_sub([subst(a, {"ws": str(ws)}) for a in T(photos="/nonexistent/photos")], ws),
        desc="python -m dti train /nonexistent ... (a real process)",
        mention=("/nonexistent",),
    )


def define_photos() -> None:
    A = "photos"

    def pc(
        id: str,
        expect: str,
        files: dict[str, Any] | Callable[[Path], Any],
        base: bool = True,
        mention: tuple = (),
        note: str = "",
        patch: Callable | None = None,
        extra: tuple = (),
    ) -> None:
        def prep(ws: Path) -> None:
            folder = ws / "photos"
            if base:
                good_photos(folder)
            folder.mkdir(parents=True, exist_ok=True)
            if callable(files):
                files(folder)
            else:
                for name, data in files.items():
                    write(folder / name, data() if callable(data) else data)

        add(f"photos-{id}", A, expect, argv=T(*extra, photos="@ws/photos"), prep=prep, mention=mention, note=note, patch=patch)

    pc("empty-folder", "refuse", {}, base=False, mention=("empty", "no image"))
    add("photos-missing-folder", A, "refuse", argv=T(photos="@ws/nope"), mention=("does not exist", "nope"))
    add(
        "photos-folder-is-a-file",
        A,
        "refuse",
        argv=T(photos="@ws/one.jpg"),
        prep=lambda ws: write(ws / "one.jpg", real_jpg()),
        mention=("not a folder",),
    )
    pc("only-text-files", "refuse", {"a.txt": "hi", "b.md": "x"}, base=False, mention=("a.txt", "no image"))
    pc("only-subfolders", "refuse", lambda f: good_photos(f / "inner"), base=False, mention=("inner", "folder"))
    pc("text-as-jpg", "refuse", {"fake.jpg": "this is text, not a JPEG\n"}, mention=("fake.jpg",))
    pc("random-bytes-png", "refuse", {"noise.png": os.urandom(3000)}, mention=("noise.png",))
    pc("zero-byte-jpg", "refuse", {"empty.jpg": b""}, mention=("empty.jpg",))
    pc("truncated-png", "refuse", {"cut.png": lambda: real_png()[:200]}, mention=("cut.png",))
    pc("truncated-png-half", "refuse", {"cut.png": lambda: real_png()[: len(real_png()) // 2]}, mention=("cut.png",))
    pc("truncated-jpeg", "refuse", {"cut.jpg": lambda: real_jpg()[: len(real_jpg()) // 2]}, mention=("cut.jpg",))
    pc(
        "png-bad-crc",
        "refuse",
        {"crc.png": lambda: real_png()[:30] + bytes([real_png()[30] ^ 0xFF]) + real_png()[31:]},
        mention=("crc.png",),
    )
    pc("svg-as-png", "refuse", {"vector.png": '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'}, mention=("vector.png",))
    pc("16bit-gray-png", "ok", {"deep.png": image_bytes("I;16")})
    pc("16bit-rgb-png", "ok", {"deep-rgb.png": raw_png(96, 96, 16, 2)})
    pc("16bit-rgba-png", "warn", {"deep-rgba.png": raw_png(96, 96, 16, 6)}, mention=("transparent",))
    pc("rgba-transparent", "warn", {"alpha.png": image_bytes("RGBA")}, mention=("transparent",))
    pc("rgba-opaque", "ok", {"opaque.png": image_bytes("RGBA-opaque")})
    pc("la-png", "warn", {"la.png": raw_png(96, 96, 8, 4)}, mention=("transparent",))
    pc("palette-png", "ok", {"pal.png": image_bytes("P")})
    pc("1bit-png", "ok", {"bw.png": image_bytes("1")})
    pc("cmyk-jpeg", "ok", {"cmyk.jpg": image_bytes("CMYK", fmt="JPEG")})
    pc("float-tiff", "ok", {"float.tif": image_bytes("F", fmt="TIFF")})
    pc("webp-bmp-tiff", "ok", {"a.webp": image_bytes(fmt="WEBP"), "b.bmp": image_bytes(fmt="BMP"), "c.tiff": image_bytes(fmt="TIFF")})
    pc(
        "bomb-30000",
        "refuse",
        {"bomb.png": raw_png(30000, 30000, 8, 2, idat=zlib.compress(b"\0" * 1000))},
        mention=("bomb.png",),
        note="PNG header claims 30000x30000 (900 MP); never decoded",
    )
    pc("bomb-9000", "refuse", {"big.png": raw_png(9000, 9000, 8, 2, idat=zlib.compress(b"\0" * 1000))}, mention=("big.png",))
    pc(
        "bomb-only",
        "refuse",
        {"bomb.png": raw_png(30000, 30000, 8, 2, idat=zlib.compress(b"\0" * 1000))},
        base=False,
        mention=("bomb.png",),
    )
    pc("strip-1000x2", "refuse", {"strip.png": image_bytes(size=(1000, 2))}, mention=("strip.png",))
    pc("strip-2x1000", "refuse", {"strip.png": image_bytes(size=(2, 1000))}, mention=("strip.png",))
    pc("pixel-1x1", "refuse", {"dot.png": image_bytes(size=(1, 1))}, mention=("dot.png",))
    pc("tiny-7x7", "refuse", {"t.png": image_bytes(size=(7, 7))}, mention=("t.png",))
    pc("small-8x8", "warn", {"s.png": image_bytes(size=(8, 8))}, mention=("smaller", "upscaled"))
    pc("aspect-5to1", "refuse", {"wide.png": image_bytes(size=(500, 100))}, mention=("wide.png",))
    pc("aspect-4to1", "ok", {"wide.png": image_bytes(size=(400, 100))})
    pc("gif-only", "ok", {f"g{i}.gif": image_bytes("P", fmt="GIF", size=(96, 96)) for i in range(3)}, base=False)

    def animated(folder: Path) -> None:
        from PIL import Image

        frames = [Image.new("RGB", (96, 96), (i * 40, 0, 0)) for i in range(4)]
        frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])

    pc("animated-gif", "ok", animated)

    def loop(folder: Path) -> None:
        os.symlink(folder / "b.jpg", folder / "a.jpg")
        os.symlink(folder / "a.jpg", folder / "b.jpg")

    pc("symlink-loop-files", "any", loop)
    pc("symlink-loop-only", "refuse", loop, base=False)
    add(
        "photos-folder-symlink-loop",
        A,
        "refuse",
        argv=T(photos="@ws/loopdir"),
        prep=lambda ws: (os.symlink(ws / "loopdir2", ws / "loopdir"), os.symlink(ws / "loopdir", ws / "loopdir2")),
        mention=("loopdir",),
    )
    add("photos-folder-symlink", A, "ok", argv=T(photos="@ws/link"), prep=lambda ws: os.symlink(P["photos"], ws / "link"))
    pc("broken-symlink", "any", lambda f: os.symlink(f / "gone.jpg", f / "dangling.jpg"))
    root = os.geteuid() == 0
    pc(
        "chmod-000-photo",
        "ok" if root else "refuse",
        lambda f: (write(f / "locked.png", real_png()), os.chmod(f / "locked.png", 0)),
        mention=() if root else ("locked.png",),
        note="as root chmod 000 cannot stop reading, so success is right; any other user must be refused, naming the photo",
    )
    pc(
        "unreadable-photo-simulated",
        "refuse",
        {"locked.png": real_png},
        patch=lambda ws: open_denied("locked.png"),
        mention=("locked.png",),
        note="PIL.Image.open raises PermissionError for one photo (what a non-root user gets)",
    )
    pc("heic-only", "refuse", {"a.heic": b"\0\0\0\x18ftypheic", "b.HEIC": b"x"}, base=False, mention=("heic",))
    pc("heic-beside-jpgs", "warn", {"a.heic": b"\0\0\0\x18ftypheic"}, mention=("heic", "a.heic"))
    pc("raw-only", "refuse", {"a.cr2": b"raw", "b.dng": b"raw"}, base=False, mention=("raw",))
    pc("uppercase-ext", "ok", {"BIG.JPG": real_jpg, "X.PNG": real_png})
    pc("hidden-only", "refuse", {".a.png": real_png, ".b.jpg": real_jpg}, base=False)
    pc("dir-named-jpg", "ok", lambda f: (f / "folder.jpg").mkdir())

    def fifo(folder: Path) -> None:
        os.mkfifo(folder / "pipe.png")

    pc("fifo-named-png", "any", fifo, note="a FIFO with an image name: must be skipped, not opened (it would block)")
    add("photos-one-photo", A, "warn", argv=T(photos="@ws/photos"), prep=lambda ws: good_photos(ws / "photos", 1), mention=("1 photo",))

    def bad_exif(folder: Path) -> None:
        from PIL import Image

        im = Image.new("RGB", (96, 96), (10, 200, 30))
        exif = im.getexif()
        exif[0x0112] = 99  # orientation 99 does not exist
        im.save(folder / "exif.jpg", exif=exif)

    pc("bad-exif-orientation", "any", bad_exif)
    pc(
        "newline-in-bad-name",
        "refuse",
        {"bad\nname.jpg": "not an image"},
        mention=("name.jpg",),
        note="a broken photo whose file name holds a newline: the error must still be one line",
    )
    pc("png-named-jpg", "ok", {"really-png.jpg": real_png})
    pc("small-16x16", "warn", {"s16.png": image_bytes(size=(16, 16))}, mention=("smaller", "upscaled"))
    pc(
        "multipage-tiff",
        "ok",
        lambda f: (
            module("PIL.Image")
            .new("RGB", (96, 96))
            .save(f / "multi.tif", save_all=True, append_images=[module("PIL.Image").new("RGB", (96, 96), (255, 0, 0))])
        ),
    )
    add("photos-are-the-model-folder", A, "refuse", argv=T(photos="@sd"), mention=("image", "photo"))
    add("photos-are-a-run-folder", A, "any", argv=T(photos="@run"), note="a run folder holds norms.png: it would train on a plot")


def define_flags() -> None:
    A = "flags"
    R, OK, RW, ANY = "refuse", "ok", "refuse-or-warn", "any"
    ints = {  # flag: {value: expectation}
        "--steps": {"0": R, "-1": R, "10000000": R, "1.5": R},
        "--batch-size": {"0": R, "-1": R, "5000": R},
        "--grad-accum": {"0": R, "-1": R, "5000": R, "2": OK},
        "--resolution": {"0": R, "-1": R, "63": R, "99999": R, "8": ANY, "72": OK},
        "--seed": {"0": OK, "-1": R, str(2**63): R, str(2**63 - 1): OK},
        "--log-every": {"0": ANY, "-1": R, "1000": OK},
        "--snapshot-every": {"0": OK, "-1": R, "1": OK},
        "--checkpoint-every": {"0": OK, "-1": R},
        "--keep-checkpoints": {"-1": R},
        "--max-bad-steps": {"0": R, "-1": R},
        "--validation-every": {"0": OK, "-1": R},
        "--validation-seed": {"-1": R, str(2**64): R},
        "--sample-steps": {"0": R, "-1": R, "5000": R},
    }
    floats = {
        "--lr": {"0": R, "-1": R, "nan": R, "inf": R, "1e30": R},
        "--kappa": {"0": OK, "-1": R, "nan": R, "inf": R, "1e30": RW},
        "--beta": {"0": OK, "-1": R, "nan": R, "inf": R, "1e30": R, "1": R, "0.999": OK},
        "--eps": {"0": R, "-1": R, "nan": R, "inf": R, "1e30": RW},
        "--weight-decay": {"0": OK, "-1": R, "nan": R, "inf": R, "1e30": RW},
        "--crossinit-lambda": {"0": OK, "-1": R, "nan": R, "inf": R, "1e30": RW},
        "--validation-guidance": {"0": OK, "-1": R, "nan": R, "inf": R, "1e30": RW},
    }
    for values in ints.values():
        for junk in ("nan", "inf", "1e30", "abc", ""):
            values.setdefault(junk, R)
    for values in floats.values():
        values.setdefault("abc", R)
        values.setdefault("", R)
    for table in (ints, floats):
        for flag, values in table.items():
            for value, expect in values.items():
                name = value.replace("-", "neg").replace(".", "p") or "empty"
                validate = flag.startswith("--validation") and flag != "--validation-every"
                extra = ("--checkpoint-every", "1") if flag == "--keep-checkpoints" else ()
                add(
                    f"flag{flag}-{name}",
                    A,
                    expect,
                    argv=T(*extra, flag, value, validate=validate and expect != R),
                    mention=(flag.lstrip("-").split("-")[0],) if expect in (R, RW) else (),
                )
    for value, expect in {
        "0": R,
        "-1": R,
        "nan": R,
        "inf": R,
        "1e30": R,
        "abc": R,
        "": R,
        "1e4": R,  # past MAX_MAGNITUDE (1e3): 10x under the norm a concept file may hold, so a trained word always reads back
        "1e3": OK,
        "0.2": OK,
        "MEAN": ANY,
        "max": OK,
    }.items():
        name = value.replace("-", "neg").replace(".", "p") or "empty"
        add(f"flag--magnitude-{name}", A, expect, argv=T("--magnitude", value), mention=("magnitude",) if expect == R else ())

    def keep0_post(ws: Path, res: Result) -> list:
        kept = sorted(p.name for p in (ws / "run" / "checkpoints").glob("step-*.pt"))
        if res.code == 0 and len(kept) > 1:
            return [("poor", f"--keep-checkpoints 0 accepted but kept every checkpoint ({', '.join(kept)})")]
        return []

    add(
        "flag--keep-checkpoints-0",
        A,
        "refuse-or-warn",
        argv=T("--checkpoint-every", "1", "--keep-checkpoints", "0"),
        post=keep0_post,
        mention=("keep",),
    )
    add("flag--keep-checkpoints-1", A, "ok", argv=T("--checkpoint-every", "1", "--keep-checkpoints", "1"))
    # choices and strings
    for flag, value, expect, mention in (
        ("--method", "foo", R, ("method",)),
        ("--method", "TI", R, ("method",)),
        ("--method", "ti", OK, ()),
        ("--method", "crossinit", OK, ()),
        ("--optimizer", "sgd", R, ("optimizer",)),
        ("--precision", "fp64", R, ("precision",)),
        ("--pooling", "mean", R, ("pooling",)),
        ("--templates", "anime", R, ("templates",)),
        ("--templates", "style", OK, ()),
        ("--templates", "bare", OK, ()),
        ("--device", "tpu", R, ("device", "tpu")),
        ("--device", "cuda", R, ("cuda",)),
        ("--device", "cuda:7", R, ("cuda",)),
        ("--device", "", R, ("device",)),
        ("--device", "meta", R, ("meta", "device")),
        ("--device", "cpu", OK, ()),
        ("--device", "mps", R, ("mps",)),
        ("--device", "cpu:0", ANY, ()),
        ("--precision", "fp16", ANY, ()),
        ("--precision", "bf16", ANY, ()),
        ("--precision", "fp32", OK, ()),
        ("--encoders", "", R, ("encoders",)),
        ("--encoders", ",", R, ("encoders",)),
        ("--encoders", "text_encoder_9", R, ("text_encoder_9",)),
        ("--encoders", "text_encoder,text_encoder", ANY, ()),
        ("--encoders", "TEXT_ENCODER", R, ("text_encoder",)),
        ("--option", "foo", R, ("option", "foo")),
        ("--option", "=1", R, ("option",)),
        ("--option", "bogus=1", R, ("bogus",)),
        ("--option", "instruction=true", R, ("instruction",)),
        ("--validation-prompt", "no braces here", R, ("{}",)),
        ("--validation-prompt", "", R, ("prompt", "{}")),
        ("--validation-prompt", "a {} in {style}", R, ("{style}", "prompt")),
        ("--validation-prompt", "a {0} dog", R, ("{0}", "prompt")),
        ("--validation-prompt", "{} and {}", ANY, ()),
        ("--validation-prompt", "a {} on the beach", OK, ()),
    ):
        name = re.sub(r"[^\w]+", "_", value) or "empty"
        validate = flag == "--validation-prompt"
        add(f"flag{flag}-{name}", A, expect, argv=T(flag, value, validate=validate), mention=mention)
    add("flag-rsgd-with-ti", A, R, argv=T("--method", "ti", "--optimizer", "rsgd"), mention=("rsgd",))
    add("flag-adamw-with-dti", A, OK, argv=T("--optimizer", "adamw"))
    add("flag-magnitude-with-ti", A, R, argv=T("--method", "ti", "--magnitude", "min"), mention=("magnitude",))
    add(
        "flag-kappa-with-ti",
        A,
        RW,
        argv=T("--method", "ti", "--kappa", "0.5"),
        mention=("kappa",),
        note="kappa is a dti prior; a ti run ignores it (the way --magnitude with ti is refused)",
    )
    add("flag-weight-decay-with-rsgd", A, RW, argv=T("--weight-decay", "0.5"), mention=("weight",), note="RSGD has no weight decay")
    add("flag-crossinit-lambda-with-dti", A, RW, argv=T("--crossinit-lambda", "0.5"), mention=("crossinit",))
    add("flag-beta-with-adamw", A, RW, argv=T("--method", "ti", "--beta", "0.5"), mention=("beta",))
    add(
        "flag-validation-flags-with-no-validation",
        A,
        RW,
        argv=T("--sample-steps", "7", "--validation-prompt", "a {}"),
        mention=("validation",),
        note="--validation-* given with --no-validation have no effect",
    )
    add("flag-no-scale-lr", A, OK, argv=T("--no-scale-lr"))
    add("flag-gradient-checkpointing", A, OK, argv=T("--gradient-checkpointing"))
    add("flag-repeated-steps", A, OK, argv=T("--steps", "5", "--steps", "2"))
    add("flag-batch-larger-than-photos", A, ANY, argv=T(batch="16"))
    add("flag-with-validation", A, OK, argv=T(validate=True))
    add("flag-validation-every-1", A, OK, argv=T("--validation-every", "1", validate=True))


def define_tokens() -> None:
    A = "token"
    R, OK, ANY = "refuse", "ok", "any"
    for i, (tok, expect, mention) in enumerate(
        (
            ("", R, ("token",)),
            (" ", R, ("token",)),
            ("my dog", R, ("space", "token")),
            ("<my dog>", R, ("space", "token")),
            ("dog", R, ("dog",)),
            ("Dog", "warn", ("ordinary word",)),  # a capitalised word: accepted, with the A1111 trigger renamed
            ("a", R, ("'a'", "token")),
            ("<|endoftext|>", R, ("endoftext",)),
            ("<|startoftext|>", R, ("startoftext",)),
            ("<my-hd>\n", R, ("token",)),
            ("\t<my-hd>", R, ("token",)),
            ("<my-hd>\x00", R, ("token",)),
            ("<HD>", ANY, ()),
            ("<my-hd>", OK, ()),
            ("x" * 1000, ANY, ()),
            ("<🐶>", ANY, ()),
            ("<хаски>", ANY, ()),
            ("<my-hd>,<x>", ANY, ()),
            ("{}", ANY, ()),
            ("</w>", ANY, ()),
            ("<my-hd></w>", ANY, ()),
            ("photo", R, ("photo",)),
            ("<dog>", ANY, ()),
        )
    ):
        name = re.sub(r"[^\w]+", "_", tok.encode("unicode_escape").decode())[:24] or "empty"
        add(f"token-{i:02d}-{name}", A, expect, argv=T(token=tok), mention=mention, desc=f"--token {tok!r}")
    for i, (init, expect, mention) in enumerate(
        (
            ("", R, ("init",)),
            (" ", R, ("init",)),
            ("<my-hd>", R, ("init", "<my-hd>")),
            ("<|endoftext|>", R, ("init", "endoftext")),
            ("qwzxvkj", ANY, ()),
            ("stuffed animal", OK, ()),
            ("dog " * 80, ANY, ()),
            ("🐶", ANY, ()),
            ("DOG", OK, ()),
            ("dog\n", ANY, ()),
            ("<unknown-init>", ANY, ()),
        )
    ):
        name = re.sub(r"[^\w]+", "_", init.encode("unicode_escape").decode())[:20] or "empty"
        add(f"init-{i:02d}-{name}", A, expect, argv=T(init=init), mention=mention, desc=f"--init {init!r}")
    # other families
    add("token-sana-capitals", A, R, argv=T(model="@sana", token="<MyDog>"), mention=("capital", "lower"))
    add("token-pixart-capitals", A, R, argv=T(model="@pixart", token="<MyDog>"), mention=("capital", "lower"))
    add("token-sana-ok", A, OK, argv=T(model="@sana", token="<mydog>"))
    add("token-pixart-ok", A, OK, argv=T(model="@pixart", token="<mydog>"))
    add("token-sdxl-existing-word", A, R, argv=T(model="@sdxl", token="dog"), mention=("dog",))
    add("token-sdxl-ok", A, OK, argv=T(model="@sdxl"))
    add("token-sd3-ok", A, OK, argv=T(model="@sd3"))
    add("token-flux-ok", A, OK, argv=T(model="@flux"))
    add(
        "token-flux-res-72",
        A,
        OK,
        argv=T(model="@flux", res="72"),
        note="the tiny FLUX VAE downsamples by 2, so its multiple is 4 (real FLUX: 16)",
    )
    add("token-sana-res-48", A, R, argv=T(model="@sana", res="48", token="<mydog>"), mention=("32",))
    add("token-flux-encoders-clip", A, OK, argv=T("--encoders", "text_encoder", model="@flux"))
    add("token-flux-guidance", A, OK, argv=T("--option", "guidance=3.5", model="@flux"))
    add("token-flux-guidance-nan", A, R, argv=T("--option", "guidance=nan", model="@flux"), mention=("guidance",))
    add("token-flux-guidance-string", A, R, argv=T("--option", "guidance=lots", model="@flux"), mention=("guidance",))
    add(
        "token-sana-instruction-maybe",
        A,
        R,
        argv=T("--option", "instruction=maybe", model="@sana", token="<mydog>"),
        mention=("instruction",),
    )
    add(
        "token-pixart-maxlen-neg",
        A,
        R,
        argv=T("--option", "max_sequence_length=-5", model="@pixart", token="<mydog>"),
        mention=("max_sequence_length",),
    )
    add(
        "token-pixart-maxlen-0",
        A,
        R,
        argv=T("--option", "max_sequence_length=0", model="@pixart", token="<mydog>"),
        mention=("max_sequence_length",),
    )
    add(
        "token-pixart-maxlen-huge",
        A,
        R,
        argv=T("--option", "max_sequence_length=1000000000", model="@pixart", token="<mydog>"),
        mention=("max_sequence_length",),
        isolate=True,
        note="run in a subprocess limited to 6 GB: it once took the harness down (OOM)",
    )
    add("token-sd3-encoders-unknown", A, R, argv=T("--encoders", "text_encoder_4", model="@sd3"), mention=("text_encoder_4",))


def define_models() -> None:
    A = "model"
    R = "refuse"

    def mc(id: str, mutate: Callable[[Path], Any], mention: tuple = (), fam: str = "sd", commands: tuple = ("train",)) -> None:
        def prep(ws: Path) -> None:
            m = copy_model(fam, ws / "model")
            mutate(m)

        for cmd in commands:
            if cmd == "train":
                argv = T(model="@ws/model")
            elif cmd == "generate":
                argv = [
                    "generate",
                    "a <my-hd> dog",
                    "--concept",
                    "@run",
                    "--model",
                    "@ws/model",
                    "-n",
                    "1",
                    "--sample-steps",
                    "1",
                    "--resolution",
                    "32",
                    "--out",
                    "@ws/gen",
                ]
            elif cmd == "inspect":
                argv = ["inspect", "@run", "--model", "@ws/model"]
            elif cmd == "convert":
                argv = ["convert", "@run", "--rescale", "mean", "--model", "@ws/model", "--out", "@ws/c.safetensors"]
            else:
                argv = [
                    "interpolate",
                    "@run",
                    "@run2",
                    "--blends",
                    "2",
                    "--model",
                    "@ws/model",
                    "--seeds",
                    "0",
                    "--sample-steps",
                    "1",
                    "--resolution",
                    "32",
                    "--out",
                    "@ws/blend",
                ]
            add(f"model-{id}" + ("" if cmd == "train" else f"-{cmd}"), A, R, argv=argv, prep=prep, mention=mention)

    add("model-missing", A, R, argv=T(model="@ws/nope"), mention=("nope",))
    add("model-hub-id-offline", A, R, argv=T(model="someone/some-model"), mention=("someone/some-model",))
    add("model-bad-hub-id", A, R, argv=T(model="not a/valid//id"), mention=("not a/valid//id",))
    add(
        "model-is-a-file",
        A,
        R,
        argv=T(model="@ws/m.safetensors"),
        prep=lambda ws: write(ws / "m.safetensors", b"x" * 100),
        mention=("m.safetensors",),
    )
    add("model-empty-folder", A, R, argv=T(model="@ws/m"), prep=lambda ws: (ws / "m").mkdir(), mention=("model_index",))
    add(
        "model-symlink-loop",
        A,
        R,
        argv=T(model="@ws/ml"),
        prep=lambda ws: (os.symlink(ws / "ml2", ws / "ml"), os.symlink(ws / "ml", ws / "ml2")),
    )
    add("model-is-a-run-folder", A, R, argv=T(model="@run"), mention=("model_index",))
    add("model-dti-mini", A, "any", argv=T(model="dti-mini"))
    mi = lambda text: lambda m: write(m / "model_index.json", text)  # noqa: E731
    mc(
        "index-truncated",
        lambda m: write(m / "model_index.json", (m / "model_index.json").read_text()[:40]),
        ("model_index",),
        commands=("train", "generate", "inspect", "convert", "interpolate"),
    )
    mc("index-list", mi("[]"), ("model_index",), commands=("train", "generate"))
    mc("index-empty-object", mi("{}"), ("model_index", "_class_name"))
    mc("index-binary", lambda m: write(m / "model_index.json", os.urandom(64)), ("model_index",))
    mc("index-empty-file", mi(""), ("model_index",))
    mc("index-missing", lambda m: (m / "model_index.json").unlink(), ("model_index",), commands=("train", "inspect"))

    def cls_name(value: Any) -> Callable[[Path], None]:
        def f(m: Path) -> None:
            idx = json.loads((m / "model_index.json").read_text())
            if value is None:
                idx.pop("_class_name")
            else:
                idx["_class_name"] = value
            (m / "model_index.json").write_text(json.dumps(idx))

        return f

    mc("class-unknown", cls_name("FooPipeline"), ("FooPipeline",), commands=("train", "generate", "convert"))
    mc("class-unsupported-family", cls_name("KandinskyV22Pipeline"), ("KandinskyV22Pipeline",))
    mc("class-controlnet", cls_name("StableDiffusionControlNetPipeline"), ("ControlNet",))
    mc("class-int", cls_name(123), ("_class_name", "123"))
    mc("class-missing", cls_name(None), ("_class_name",))
    mc("class-sdxl-on-sd-folder", cls_name("StableDiffusionXLPipeline"), ("text_encoder_2", "tokenizer_2"))

    def comp(name: str, value: Any) -> Callable[[Path], None]:
        def f(m: Path) -> None:
            idx = json.loads((m / "model_index.json").read_text())
            idx[name] = value
            (m / "model_index.json").write_text(json.dumps(idx))

        return f

    mc("component-unknown-class", comp("unet", ["diffusers", "NopeModel"]), ("unet", "NopeModel"))
    mc("component-bad-library", comp("text_encoder", ["nolib", "CLIPTextModel"]), ("text_encoder", "nolib"))
    mc("component-string", comp("vae", "AutoencoderKL"), ("vae",))
    mc("no-unet-folder", lambda m: shutil.rmtree(m / "unet"), ("unet",), commands=("train", "generate"))
    mc("no-tokenizer-folder", lambda m: shutil.rmtree(m / "tokenizer"), ("tokenizer",), commands=("train", "inspect"))
    mc("tokenizer-empty", lambda m: [p.unlink() for p in (m / "tokenizer").iterdir()], ("tokenizer",))
    mc("tokenizer-json-garbage", lambda m: write(m / "tokenizer" / "tokenizer.json", "{garbage"), ("tokenizer",))
    mc("text-encoder-no-config", lambda m: (m / "text_encoder" / "config.json").unlink(), ("text_encoder", "config.json"))
    mc("text-encoder-config-garbage", lambda m: write(m / "text_encoder" / "config.json", "{not json"), ("text_encoder", "config"))
    mc("text-encoder-no-weights", lambda m: (m / "text_encoder" / "model.safetensors").unlink(), ("text_encoder", "weights"))
    mc(
        "unet-weights-truncated",
        lambda m: write(
            m / "unet" / "diffusion_pytorch_model.safetensors", (m / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()[:5000]
        ),
        ("unet", "safetensors"),
        commands=("train", "generate", "interpolate"),
    )
    mc("vae-weights-random", lambda m: write(m / "vae" / "diffusion_pytorch_model.safetensors", os.urandom(4096)), ("vae", "safetensors"))
    mc(
        "unet-config-wrong-shape",
        lambda m: write(
            m / "unet" / "config.json", json.dumps({**json.loads((m / "unet" / "config.json").read_text()), "cross_attention_dim": 77})
        ),
        ("unet", "size", "shape"),
    )
    mc("scheduler-missing", lambda m: shutil.rmtree(m / "scheduler"), ("scheduler",))
    mc("scheduler-config-garbage", lambda m: write(m / "scheduler" / "scheduler_config.json", "[1,2"), ("scheduler",))
    mc("dti-json-bad", lambda m: write(m / "dti.json", "{bad"), ("dti.json",))
    mc("dti-json-bad-templates", lambda m: write(m / "dti.json", json.dumps({"templates": "nonsense"})), ("templates",))
    mc("sana-no-tokenizer", lambda m: shutil.rmtree(m / "tokenizer"), ("tokenizer",), fam="sana")
    mc("sdxl-no-text-encoder-2", lambda m: shutil.rmtree(m / "text_encoder_2"), ("text_encoder_2",), fam="sdxl")
    mc(
        "flux-transformer-truncated",
        lambda m: [write(p, p.read_bytes()[:3000]) for p in (m / "transformer").glob("*.safetensors")],
        ("transformer", "safetensors"),
        fam="flux",
    )


def define_config() -> None:
    A = "config"
    R, OK, ANY = "refuse", "ok", "any"
    base_toml = (
        'photos = "@photos"\ntoken = "<my-hd>"\ninit = "dog"\nmodel = "@sd"\n'
        "steps = 1\nresolution = 32\nbatch-size = 1\nno-validation = true\nquiet = true\n"
    )

    def cc(
        id: str,
        expect: str,
        name: str,
        text: str | bytes | None,
        mention: tuple = (),
        extra: tuple = ("--output", "@ws/run"),
        note: str = "",
    ) -> None:
        def prep(ws: Path) -> None:
            if text is not None:
                data = subst(text, {"ws": str(ws)}) if isinstance(text, str) else text
                write(ws / name, data)

        add(f"config-{id}", A, expect, argv=["train", "--config", f"@ws/{name}", *extra], prep=prep, mention=mention, note=note)

    cc("toml-ok", OK, "run.toml", base_toml)
    cc(
        "json-ok",
        OK,
        "run.json",
        json.dumps(
            {
                "photos": "@photos",
                "token": "<my-hd>",
                "init": "dog",
                "model": "@sd",
                "steps": 1,
                "resolution": 32,
                "batch_size": 1,
                "validate": False,
                "progress": False,
            }
        ),
    )
    cc("toml-field-names", OK, "run.toml", base_toml.replace("batch-size", "batch_size"))
    cc("missing-file", R, "nope.toml", None, ("nope.toml",))
    add(
        "config-is-a-folder",
        A,
        R,
        argv=["train", "--config", "@ws/cfg.toml", "--output", "@ws/run"],
        prep=lambda ws: (ws / "cfg.toml").mkdir(),
        mention=("cfg.toml",),
    )
    cc("yaml-suffix", R, "run.yaml", "steps: 2\n", (".toml", "yaml"))
    cc("no-suffix", R, "runconfig", base_toml, (".toml",))
    cc("toml-syntax", R, "run.toml", "steps = = 2\n", ("toml",))
    cc("json-syntax", R, "run.json", '{"steps": 2,,}', ("json",))
    cc("json-array", R, "run.json", "[1, 2, 3]", ("object", "list"))
    cc("json-string", R, "run.json", '"steps"', ("object", "string"))
    cc("json-null", R, "run.json", "null", ("object", "null"))
    cc("empty-toml", R, "run.toml", "", ("photos", "missing"), note="an empty file: every required setting missing")
    cc("empty-json", R, "run.json", "", ("json",))
    cc(
        "json-bom",
        ANY,
        "run.json",
        "\ufeff"
        + json.dumps(
            {
                "photos": "@photos",
                "token": "<my-hd>",
                "init": "dog",
                "model": "@sd",
                "steps": 1,
                "resolution": 32,
                "batch_size": 1,
                "validate": False,
            }
        ),
    )
    cc("not-utf8", R, "run.toml", b'steps = 2\ntoken = "\xff\xfe"\n', ("utf", "read"))
    cc("unknown-key", R, "run.toml", base_toml + "stpes = 3\n", ("stpes",))
    cc("wrong-type-steps", R, "run.toml", base_toml.replace("steps = 1", 'steps = "two"'), ("steps",))
    cc("float-steps", R, "run.toml", base_toml.replace("steps = 1", "steps = 2.5"), ("steps",))
    cc("huge-steps", R, "run.toml", base_toml.replace("steps = 1", "steps = 1e30"), ("steps",))
    cc("bool-steps", R, "run.toml", base_toml.replace("steps = 1", "steps = true"), ("steps",))
    cc("nan-lr", R, "run.toml", base_toml + "lr = nan\n", ("lr",))
    cc("inf-kappa", R, "run.toml", base_toml + "kappa = inf\n", ("kappa",))
    cc("dup-key-styles", R, "run.toml", base_toml + "batch_size = 2\n", ("batch",))
    cc("no-validation-string", R, "run.toml", base_toml.replace("no-validation = true", 'no-validation = "yes"'), ("no-validation",))
    cc("validation-seed-mixed", R, "run.toml", base_toml + 'validation-seed = [0, "1"]\n', ("validation",))
    cc(
        "validation-seed-empty",
        R,
        "run.toml",
        base_toml.replace("no-validation = true", "no-validation = false") + "validation-seed = []\n",
        ("validation",),
    )
    cc("nested-table", R, "run.toml", base_toml + "[extra]\nfoo = 1\n", ("extra",))
    cc("family-options-on-sd", R, "run.toml", base_toml + "[option]\nbogus = 1\n", ("bogus",))
    cc("templates-list-bad", R, "run.toml", base_toml + 'templates = ["a photo"]\n', ("templates", "{}"))
    cc(
        "templates-format-field",
        R,
        "run.toml",
        base_toml + 'templates = ["a {} in {style}"]\n',
        ("templates", "{style}"),
        note="a template with a second format field: str.format would raise KeyError mid-training",
    )
    cc("templates-list-ok", OK, "run.toml", base_toml + 'templates = ["a photo of {}", "a {} dog"]\n')
    cc("adam-betas-bad", R, "run.toml", base_toml + "adam_betas = [0.9]\n", ("adam_betas",))
    cc("adam-betas-one", R, "run.toml", base_toml + "adam_betas = [1.0, 0.999]\n", ("adam_betas",))
    cc("magnitude-bool", R, "run.toml", base_toml + "magnitude = true\n", ("magnitude",))
    cc("resume-key", R, "run.toml", base_toml + 'resume = "@ws/x"\n', ("resume",))
    cc("output-in-file", OK, "run.toml", base_toml + 'output = "@ws/run"\n', extra=())
    cc("missing-output", R, "run.toml", base_toml, ("output",), extra=())
    cc("flags-override", OK, "run.toml", base_toml.replace("steps = 1", "steps = 999999"), extra=("--output", "@ws/run", "--steps", "2"))
    cc("photos-missing-in-file", R, "run.toml", base_toml.replace('photos = "@photos"\n', ""), ("photos",))
    cc(
        "relative-photos",
        ANY,
        "run.toml",
        base_toml.replace('"@photos"', '"photos"'),
        ("photos",),
        note="relative paths in a config are resolved against the cwd, not the file",
    )
    cc("overwrite-true-in-file", ANY, "run.toml", base_toml + "overwrite = true\n")
    # an earlier run's own config.json
    add("config-earlier-run-no-output", A, R, argv=["train", "--config", "@run/config.json"], mention=("--output",))
    add(
        "config-earlier-run-new-output",
        A,
        OK,
        argv=["train", "--config", "@run/config.json", "--output", "@ws/again", "--steps", "2", "--batch-size", "1"],
    )
    add(
        "config-earlier-run-same-output",
        A,
        R,
        argv=["train", "--config", "@ws/copy/config.json", "--output", "@ws/copy"],
        prep=lambda ws: copy_run(P["run"], ws / "copy"),
        mention=("--overwrite", "concept"),
    )
    add(
        "config-and-photos",
        A,
        OK,
        argv=["train", "@photos", "--config", "@ws/run.toml", "--output", "@ws/run"],
        prep=lambda ws: write(ws / "run.toml", subst(base_toml, {})),
    )
    add(
        "config-checkpoint-as-config",
        A,
        R,
        argv=["train", "--config", "@run/checkpoints/step-000002.pt", "--output", "@ws/run"],
        mention=(".toml",),
    )


def define_resume() -> None:
    A = "resume"
    R, OK, ANY = "refuse", "ok", "any"

    def unf(ws: Path) -> None:
        unfinished_run(ws / "run")

    def fin(ws: Path) -> None:
        copy_run(P["run"], ws / "run")

    def resumed_ok(ws: Path, res: Result) -> list:
        issues = []
        run = ws / "run"
        if res.code == 0:
            if not (run / "concept.safetensors").is_file():
                issues.append(("poor", "resume exited 0 but wrote no concept"))
            with contextlib.suppress(Exception):
                steps = [json.loads(ln)["step"] for ln in (run / "train_log.jsonl").read_text().splitlines() if ln.strip()]
                if steps != sorted(set(steps)) or steps[0] != 0:
                    issues.append(("poor", f"train_log steps not contiguous after resume: {steps}"))
        return issues

    add("resume-missing", A, R, argv=["train", "--resume", "@ws/nope"], mention=("nope",))
    add("resume-a-file", A, R, argv=["train", "--resume", "@ws/f.txt"], prep=lambda ws: write(ws / "f.txt", "x"), mention=("f.txt",))
    add(
        "resume-empty-folder",
        A,
        R,
        argv=["train", "--resume", "@ws/e"],
        prep=lambda ws: (ws / "e").mkdir(),
        mention=("config.json", "no dti run"),
    )
    add(
        "resume-user-folder",
        A,
        R,
        argv=["train", "--resume", "@ws/u"],
        prep=lambda ws: write(ws / "u" / "a.txt", "mine"),
        mention=("no dti run",),
    )
    add(
        "resume-finished",
        A,
        OK,
        argv=["train", "--resume", "@ws/run"],
        prep=fin,
        may_change=("run/config.json",),
        note="nothing to do: exit 0 with a note",
    )
    add(
        "resume-finished-more-steps",
        A,
        OK,
        argv=["train", "--resume", "@ws/run", "--steps", "4"],
        prep=fin,
        post=resumed_ok,
        may_change=("run/*", "run/*/*"),
    )
    add("resume-unfinished", A, OK, argv=["train", "--resume", "@ws/run"], prep=unf, post=resumed_ok, may_change=("run/*", "run/*/*"))
    add(
        "resume-unfinished-steps-1",
        A,
        ANY,
        argv=["train", "--resume", "@ws/run", "--steps", "1"],
        prep=unf,
        may_change=("run/*", "run/*/*"),
    )
    add("resume-finished-steps-below", A, ANY, argv=["train", "--resume", "@ws/run", "--steps", "1"], prep=fin, mention=("steps",))
    add("resume-with-photos", A, R, argv=["train", "@photos", "--resume", "@ws/run"], prep=unf, mention=("photo",))
    add(
        "resume-with-config",
        A,
        R,
        argv=["train", "--resume", "@ws/run", "--config", "@ws/run/config.json"],
        prep=unf,
        mention=("--config",),
    )
    for flag, value in (
        ("--lr", "0.1"),
        ("--token", "<x>"),
        ("--model", "@sdxl"),
        ("--output", "@ws/other"),
        ("--resolution", "128"),
        ("--method", "ti"),
        ("--seed", "5"),
    ):
        add(f"resume-with{flag}", A, R, argv=["train", "--resume", "@ws/run", flag, value], prep=unf, mention=(flag,))
    add("resume-with-overwrite", A, R, argv=["train", "--resume", "@ws/run", "--overwrite"], prep=unf, mention=("overwrite",))
    for value in ("0", "-1", "abc"):
        add(
            f"resume-steps-{value.replace('-', 'neg')}",
            A,
            R,
            argv=["train", "--resume", "@ws/run", "--steps", value],
            prep=unf,
            mention=("steps",),
        )
    add("resume-device-cuda", A, R, argv=["train", "--resume", "@ws/run", "--device", "cuda"], prep=unf, mention=("cuda",))
    add(
        "resume-quiet-checkpoint-every",
        A,
        OK,
        argv=["train", "--resume", "@ws/run", "--quiet", "--checkpoint-every", "1"],
        prep=unf,
        may_change=("run/*", "run/*/*"),
    )

    def photos_changed(ws: Path) -> None:
        good_photos(ws / "photos")
        unfinished_run(ws / "run")
        cfg = json.loads((ws / "run" / "config.json").read_text())
        cfg["photos"] = str(ws / "photos")
        (ws / "run" / "config.json").write_text(json.dumps(cfg))
        # the fingerprint is of the fixture photos: same bytes, so resuming works; now change one
        write(ws / "photos" / "05.png", image_bytes(size=(96, 96)))

    add("resume-photos-changed", A, R, argv=["train", "--resume", "@ws/run"], prep=photos_changed, mention=("changed",))

    def photos_gone(ws: Path) -> None:
        unfinished_run(ws / "run")
        cfg = json.loads((ws / "run" / "config.json").read_text())
        cfg["photos"] = str(ws / "deleted-photos")
        (ws / "run" / "config.json").write_text(json.dumps(cfg))

    add("resume-photos-gone", A, R, argv=["train", "--resume", "@ws/run"], prep=photos_gone, mention=("deleted-photos",))

    def model_gone(ws: Path) -> None:
        unfinished_run(ws / "run")
        cfg = json.loads((ws / "run" / "config.json").read_text())
        cfg["model"] = str(ws / "deleted-model")
        (ws / "run" / "config.json").write_text(json.dumps(cfg))

    add("resume-model-gone", A, R, argv=["train", "--resume", "@ws/run"], prep=model_gone, mention=("deleted-model",))
    add(
        "resume-config-garbage",
        A,
        R,
        argv=["train", "--resume", "@ws/run"],
        prep=lambda ws: (unf(ws), write(ws / "run" / "config.json", "{garbage")),
        mention=("config.json",),
    )
    add(
        "resume-config-list",
        A,
        R,
        argv=["train", "--resume", "@ws/run"],
        prep=lambda ws: (unf(ws), write(ws / "run" / "config.json", "[]")),
        mention=("config.json",),
    )
    add(
        "resume-config-bad-value",
        A,
        R,
        argv=["train", "--resume", "@ws/run"],
        prep=lambda ws: (
            unf(ws),
            write(ws / "run" / "config.json", (ws / "run" / "config.json").read_text().replace('"steps": 2', '"steps": -4')),
        ),
        mention=("steps",),
    )
    add(
        "resume-config-no-photos-key",
        A,
        R,
        argv=["train", "--resume", "@ws/run"],
        prep=lambda ws: (
            unf(ws),
            write(
                ws / "run" / "config.json",
                json.dumps({k: v for k, v in json.loads((ws / "run" / "config.json").read_text()).items() if k != "photos"}),
            ),
        ),
        mention=("photos",),
    )

    def ck_truncated(ws: Path) -> None:
        copy_run(P["run"], ws / "run")
        for name in ("concept.safetensors",):
            (ws / "run" / name).unlink()
        ck = ws / "run" / "checkpoints" / "step-000002.pt"
        ck.write_bytes(ck.read_bytes()[:100])

    add(
        "resume-newest-checkpoint-truncated",
        A,
        "warn",
        argv=["train", "--resume", "@ws/run"],
        prep=ck_truncated,
        post=resumed_ok,
        may_change=("run/*", "run/*/*"),
        mention=("unreadable", "step-000002"),
        skip_check=("run/checkpoints/*",),
    )

    def ck_all_bad(ws: Path) -> None:
        unfinished_run(ws / "run")
        for ck in (ws / "run" / "checkpoints").glob("*.pt"):
            ck.write_bytes(os.urandom(200))

    add(
        "resume-all-checkpoints-bad",
        A,
        "any",
        argv=["train", "--resume", "@ws/run"],
        prep=ck_all_bad,
        may_change=("run/*", "run/*/*"),
        skip_check=("run/checkpoints/*",),
        note="no readable checkpoint: refuse, or restart from step 0 with a warning",
    )

    def ck_evil(ws: Path) -> None:
        unfinished_run(ws / "run")
        import torch

        torch.save({"step": 1, "rows": Evil(f"touch {PWNED}")}, ws / "run" / "checkpoints" / "step-000001.pt")

    add(
        "resume-evil-checkpoint",
        A,
        "any",
        argv=["train", "--resume", "@ws/run"],
        prep=ck_evil,
        may_change=("run/*", "run/*/*"),
        skip_check=("run/checkpoints/*",),
        note="a checkpoint that is a pickle calling os.system must never run",
    )

    def ck_wrong_shape(ws: Path) -> None:
        unfinished_run(ws / "run")
        import torch

        ck = ws / "run" / "checkpoints" / "step-000001.pt"
        state = torch.load(ck, weights_only=True)
        state["rows"] = {k: torch.zeros(3, 7) for k in state["rows"]}
        torch.save(state, ck)

    add("resume-checkpoint-wrong-shape", A, R, argv=["train", "--resume", "@ws/run"], prep=ck_wrong_shape, mention=("checkpoint",))

    def ck_missing_keys(ws: Path) -> None:
        unfinished_run(ws / "run")
        import torch

        torch.save({"step": 1}, ws / "run" / "checkpoints" / "step-000001.pt")

    add(
        "resume-checkpoint-missing-keys",
        A,
        "any",
        argv=["train", "--resume", "@ws/run"],
        prep=ck_missing_keys,
        may_change=("run/*", "run/*/*"),
        skip_check=("run/checkpoints/*",),
    )

    def staged(ws: Path) -> None:
        copy_run(P["run"], ws / "run")
        unfinished_run(ws / "tmp")
        shutil.move(str(ws / "tmp"), str(ws / "run" / ".dti-overwrite"))

    add(
        "resume-staged-overwrite",
        A,
        OK,
        argv=["train", "--resume", "@ws/run"],
        prep=staged,
        may_change=("run/*", "run/*/*", "run/.dti-overwrite/*"),
        note="an --overwrite run that was killed: resume finishes it and only then replaces the old results",
    )
    add(
        "resume-stale-lock",
        A,
        OK,
        argv=["train", "--resume", "@ws/run"],
        post=resumed_ok,
        may_change=("run/*", "run/*/*"),
        prep=lambda ws: (unf(ws), write(ws / "run" / ".dti.lock", json.dumps({"pid": 999999, "host": os.uname().nodename}))),
        note="a SIGKILLed run's lock (dead pid) must not block",
    )
    add(
        "resume-garbage-lock",
        A,
        "any",
        argv=["train", "--resume", "@ws/run"],
        may_change=("run/*", "run/*/*"),
        prep=lambda ws: (unf(ws), write(ws / "run" / ".dti.lock", "garbage")),
    )
    add(
        "resume-lock-other-host",
        A,
        R,
        argv=["train", "--resume", "@ws/run"],
        prep=lambda ws: (unf(ws), write(ws / "run" / ".dti.lock", json.dumps({"pid": 1, "host": "other-machine"}))),
        mention=("other-machine", "lock"),
    )


def define_overwrite() -> None:
    A = "overwrite"
    R, OK = "refuse", "ok"
    saved: dict[str, dict] = {}

    def with_user(ws: Path) -> None:
        copy_run(P["run"], ws / "run")
        saved[str(ws)] = {"user": user_files(ws / "run"), "concept": concept_digest(ws / "run" / "concept.safetensors")}

    def old_kept(ws: Path, res: Result) -> list:
        info = saved.get(str(ws), {})
        issues = check_user_files(ws / "run", info.get("user", {}))
        if concept_digest(ws / "run" / "concept.safetensors") != info.get("concept"):
            issues.append(("data-loss", "the old concept.safetensors was lost or replaced by a run that did not finish"))
        return issues

    def replaced(ws: Path, res: Result) -> list:
        info = saved.get(str(ws), {})
        issues = check_user_files(ws / "run", info.get("user", {}))
        if res.code == 0:
            if concept_digest(ws / "run" / "concept.safetensors") == info.get("concept"):
                issues.append(("poor", "--overwrite finished but the old concept is still there"))
            if (ws / "run" / ".dti-overwrite").exists():
                issues.append(("poor", "the staging folder .dti-overwrite was left after a finished overwrite"))
        return issues

    add("overwrite-finished-no-flag", A, R, argv=T(), prep=with_user, mention=("--overwrite",))

    def unf(ws: Path) -> None:
        unfinished_run(ws / "run")

    add("overwrite-unfinished-no-flag", A, R, argv=T(), prep=unf, mention=("--resume",))
    add(
        "overwrite-user-folder-no-flag",
        A,
        R,
        argv=T(),
        prep=lambda ws: write(ws / "run" / "holiday.jpg", image_bytes(fmt="JPEG")),
        mention=("not empty", "--overwrite"),
    )
    add("overwrite-hidden-file-only", A, "any", argv=T(), prep=lambda ws: write(ws / "run" / ".DS_Store", "x"), may_change=())
    add(
        "overwrite-finished",
        A,
        OK,
        argv=T("--overwrite", "--seed", "7"),
        prep=with_user,
        post=replaced,
        may_change=(
            "run/concept.safetensors",
            "run/config.json",
            "run/train_log.jsonl",
            "run/norms.png",
            "run/learned_embeds.safetensors",
            "run/webui/*.safetensors",
            "run/checkpoints/step-*.pt",
            "run/snapshots/concept-step-*.safetensors",
            "run/snapshots",
            "run/samples/step-*.png",
        ),
    )
    add(
        "overwrite-finished-with-validation",
        A,
        OK,
        argv=T("--overwrite", "--seed", "7", validate=True),
        prep=with_user,
        post=replaced,
        may_change=(
            "run/*",
            "run/checkpoints/step-*.pt",
            "run/snapshots/concept-step-*.safetensors",
            "run/samples/step-*.png",
            "run/webui/*.safetensors",
        ),
    )
    add("overwrite-fails-bad-photos", A, R, argv=T("--overwrite", photos="@ws/nophotos"), prep=with_user, post=old_kept)
    add("overwrite-fails-bad-flag", A, R, argv=T("--overwrite", "--lr", "-1"), prep=with_user, post=old_kept)
    add(
        "overwrite-fails-midrun-plot",
        A,
        R,
        argv=T("--overwrite", "--seed", "7"),
        prep=with_user,
        post=old_kept,
        patch=lambda ws: fail_savefig(),
        may_change=("run/.dti-overwrite", "run/.dti-overwrite/*", "run/.dti-overwrite/*/*"),
        note="the disk fills while the new run writes its plot: the old results must stay",
    )
    add(
        "overwrite-fails-midrun-concept",
        A,
        R,
        argv=T("--overwrite", "--seed", "7"),
        prep=with_user,
        post=old_kept,
        patch=lambda ws: half_write_safetensors(after=1),
        may_change=("run/.dti-overwrite", "run/.dti-overwrite/*", "run/.dti-overwrite/*/*"),
        note="save_file writes half a file then ENOSPC, during the new run's outputs",
    )
    add(
        "overwrite-fails-nan",
        A,
        "stop:1",
        argv=T("--overwrite", "--steps", "4", "--max-bad-steps", "2"),
        prep=with_user,
        post=old_kept,
        patch=lambda ws: nan_loss(),
        may_change=("run/.dti-overwrite", "run/.dti-overwrite/*", "run/.dti-overwrite/*/*"),
    )
    add(
        "overwrite-fails-commit",
        A,
        R,
        argv=T("--overwrite", "--seed", "7"),
        prep=with_user,
        post=old_kept,
        patch=lambda ws: fail_os_replace(match="/run/concept.safetensors"),
        may_change=("run/*", "run/*/*", "run/.dti-overwrite/*/*"),
        note="os.replace fails (ENOSPC) while the finished overwrite is moved into place",
    )
    add(
        "overwrite-user-folder",
        A,
        OK,
        argv=T("--overwrite"),
        prep=lambda ws: (write(ws / "run" / "holiday.jpg", image_bytes(fmt="JPEG")), write(ws / "run" / "config.yaml", "mine")),
    )
    add(
        "overwrite-output-is-photos",
        A,
        R,
        argv=T("--overwrite", photos="@ws/photos", out="@ws/photos"),
        prep=lambda ws: good_photos(ws / "photos"),
        mention=("photo",),
        note="--output is the photo folder",
    )
    add(
        "overwrite-output-inside-photos",
        A,
        "any",
        argv=T(photos="@ws/photos", out="@ws/photos/run"),
        prep=lambda ws: good_photos(ws / "photos"),
    )
    add(
        "overwrite-output-is-model",
        A,
        R,
        argv=T("--overwrite", model="@ws/model", out="@ws/model"),
        prep=lambda ws: copy_model("sd", ws / "model"),
        mention=("model",),
        note="--output is the model folder",
    )
    add(
        "overwrite-output-is-model-noflag", A, R, argv=T(model="@ws/model", out="@ws/model"), prep=lambda ws: copy_model("sd", ws / "model")
    )
    add("overwrite-output-is-cwd", A, R, argv=T(out="."), prep=lambda ws: write(ws / "mine.txt", "x"), mention=("not empty",))
    add("overwrite-output-is-root", A, R, argv=T(out="/"), mention=("/",))
    add(
        "overwrite-output-is-home-overwrite",
        A,
        "any",
        argv=T("--overwrite", out="@ws"),
        prep=lambda ws: (write(ws / "todo.txt", "mine"), good_photos(ws / "vacation")),
        note="--output . --overwrite in a folder full of the user's files",
        mention=("not",),
    )

    def gen_old(ws: Path) -> None:
        write(ws / "gen" / "seed-0000.png", image_bytes(size=(20, 20)))
        write(ws / "gen" / "my-notes.txt", "keep")

    G = ["generate", "a <my-hd> dog", "--concept", "@run", "-n", "1", "--sample-steps", "1", "--resolution", "32", "--out", "@ws/gen"]
    add("overwrite-generate-existing", A, R, argv=G, prep=gen_old, mention=("--overwrite",))
    add(
        "overwrite-generate-existing-sheet",
        A,
        R,
        argv=G,
        prep=lambda ws: write(ws / "gen" / "contact_sheet.png", image_bytes(size=(20, 20))),
        mention=("--overwrite",),
    )
    add("overwrite-generate-flag", A, OK, argv=[*G, "--overwrite"], prep=gen_old, may_change=("gen/seed-0000.png",))
    add(
        "overwrite-generate-other-seeds",
        A,
        OK,
        argv=[*G, "--seed", "5"],
        prep=gen_old,
        note="other seeds in the same folder: the contact sheet is new, seed-0000 untouched",
    )


def define_output() -> None:
    A = "output"
    R = "refuse"
    G = lambda out: ["generate", "a <my-hd> dog", "--concept", "@run", "-n", "1", "--sample-steps", "1", "--resolution", "32", "--out", out]  # noqa: E731
    C = lambda out, to="dti": ["convert", "@concept", "--to", to, "--out", out]  # noqa: E731
    interp = lambda out: ["interpolate", "@run", "@run2", "--blends", "3", "--no-grid", "--out", out]  # noqa: E731
    D = lambda out: ["demo", "--out", out, "--steps", "1", "--sample-steps", "1", "--quiet"]  # noqa: E731
    afile = lambda ws: write(ws / "afile", "user data")  # noqa: E731
    for cmd, build in (
        ("train", lambda out: T(out=out)),
        ("generate", G),
        ("convert", C),
        ("interpolate", interp),
        ("demo", D),
        ("rescale", lambda out: ["rescale", "@tirun", "--out", out]),
    ):
        add(f"out-{cmd}-is-a-file", A, R, argv=build("@ws/afile"), prep=afile, mention=("afile",))
        add(f"out-{cmd}-under-a-file", A, R, argv=build("@ws/afile/sub/x"), prep=afile, mention=("afile",))
        add(f"out-{cmd}-empty-string", A, R, argv=build(""), mention=("out",))
        add(f"out-{cmd}-in-proc", A, R, argv=build("/proc/hostile-out"), mention=("/proc",))
        if cmd != "demo":
            add(
                f"out-{cmd}-chmod-555",
                A,
                "any",
                argv=build("@ws/ro/out"),
                prep=lambda ws: ((ws / "ro").mkdir(), os.chmod(ws / "ro", 0o555)),
                note="root bypasses chmod, so success is acceptable here",
            )
            add(f"out-{cmd}-newline-in-name", A, "any", argv=build("@ws/new\nline"))
    add(
        "out-convert-dir-for-safetensors",
        A,
        R,
        argv=C("@ws/d.safetensors"),
        prep=lambda ws: (ws / "d.safetensors").mkdir(),
        mention=("folder",),
    )
    add("out-convert-diffusers-to-file", A, R, argv=C("@ws/x.safetensors", "diffusers"), mention=("folder",))
    add("out-convert-sdxl-pt", A, R, argv=["convert", "@xlrun", "--to", "a1111", "--out", "@ws/x.pt"], mention=(".pt",))
    add("out-convert-kohya-pt", A, R, argv=["convert", "@concept", "--to", "kohya", "--out", "@ws/x.pt"], mention=(".pt",))
    add(
        "out-convert-existing",
        A,
        R,
        argv=C("@ws/x.safetensors"),
        prep=lambda ws: write(ws / "x.safetensors", b"old"),
        mention=("--overwrite",),
    )
    add(
        "out-convert-existing-folder-dti",
        A,
        R,
        argv=C("@ws/d"),
        prep=lambda ws: write(ws / "d" / "concept.safetensors", b"old"),
        mention=("--overwrite",),
    )
    add(
        "out-convert-existing-diffusers",
        A,
        R,
        argv=C("@ws/d", "diffusers"),
        prep=lambda ws: write(ws / "d" / "learned_embeds.safetensors", b"old"),
        mention=("--overwrite",),
    )
    add(
        "out-convert-stale-second-encoder",
        A,
        R,
        argv=C("@ws/d", "diffusers"),
        prep=lambda ws: write(ws / "d" / "learned_embeds_2.safetensors", b"an SDXL leftover"),
        mention=("learned_embeds_2", "--overwrite"),
    )
    add(
        "out-convert-existing-a1111-dir",
        A,
        R,
        argv=C("@ws/emb", "a1111"),
        prep=lambda ws: write(ws / "emb" / "my-hd.safetensors", b"old"),
        mention=("--overwrite",),
    )
    add(
        "out-convert-overwrite",
        A,
        "ok",
        argv=[*C("@ws/x.safetensors"), "--overwrite"],
        prep=lambda ws: write(ws / "x.safetensors", b"old"),
        may_change=("x.safetensors",),
    )
    add(
        "out-convert-onto-input",
        A,
        R,
        argv=["convert", "@ws/c.safetensors", "--out", "@ws/c.safetensors"],
        prep=lambda ws: shutil.copy(P["concept"], ws / "c.safetensors"),
        mention=("--overwrite",),
    )
    add(
        "out-convert-onto-input-overwrite",
        A,
        "ok",
        argv=["convert", "@ws/c.safetensors", "--out", "@ws/c.safetensors", "--overwrite"],
        prep=lambda ws: shutil.copy(P["concept"], ws / "c.safetensors"),
        may_change=("c.safetensors",),
    )
    add("out-convert-default-name", A, "ok", argv=["convert", "@concept"], note="no --out: <token>.dti.safetensors in the cwd")
    add(
        "out-convert-default-name-twice",
        A,
        R,
        argv=["convert", "@concept"],
        prep=lambda ws: write(ws / "my-hd.dti.safetensors", b"old"),
        mention=("--overwrite",),
    )
    add(
        "out-interpolate-existing",
        A,
        R,
        argv=interp("@ws/b"),
        prep=lambda ws: write(ws / "b" / "blend-00-w0.000.safetensors", b"old"),
        mention=("--overwrite",),
    )
    add(
        "out-interpolate-existing-json",
        A,
        R,
        argv=interp("@ws/b"),
        prep=lambda ws: write(ws / "b" / "interpolation.json", "{}"),
        mention=("--overwrite",),
    )
    add(
        "out-interpolate-overwrite",
        A,
        "ok",
        argv=[*interp("@ws/b"), "--overwrite"],
        prep=lambda ws: write(ws / "b" / "interpolation.json", "{}"),
        may_change=("b/interpolation.json",),
    )
    add(
        "out-rescale-existing",
        A,
        R,
        argv=["rescale", "@tirun", "--out", "@ws/r.safetensors"],
        prep=lambda ws: write(ws / "r.safetensors", b"old"),
        mention=("--overwrite",),
    )
    add(
        "out-demo-existing",
        A,
        R,
        argv=D("@ws/demo"),
        prep=lambda ws: write(ws / "demo" / "report.md", "old report"),
        mention=("--overwrite",),
    )
    add("out-demo-user-folder", A, R, argv=D("@ws/demo"), prep=lambda ws: write(ws / "demo" / "mine.txt", "mine"), mention=("not empty",))


def define_disk() -> None:
    A = "disk"
    R = "refuse"

    def tmpfs(size_k: int, then: Callable[[Path], Any] | None = None, full: bool = False, ro: bool = False) -> Callable[[Path], Any]:
        def prep(ws: Path) -> None:
            mnt = ws / "mnt"
            if not mountable():
                raise Unavailable("mounting a tmpfs is not allowed here")
            if not mount_tmpfs(mnt, size_k):
                raise RuntimeError("mount failed")
            MOUNTS.append(mnt)
            if then:
                then(mnt)
            if full:
                fill_disk(mnt)
            if ro and not remount_readonly(mnt):
                raise RuntimeError("remount ro failed")

        return prep

    G = lambda out: ["generate", "a <my-hd> dog", "--concept", "@run", "-n", "2", "--sample-steps", "1", "--resolution", "32", "--out", out]  # noqa: E731
    old = {}

    def old_run(mnt: Path) -> None:
        copy_run(P["run"], mnt / "run")
        old[str(mnt)] = concept_digest(mnt / "run" / "concept.safetensors")

    def old_kept(ws: Path, res: Result) -> list:
        mnt = ws / "mnt"
        if concept_digest(mnt / "run" / "concept.safetensors") != old.get(str(mnt)):
            return [("data-loss", "the old concept was lost when the new run hit a full disk")]
        return []

    def madd(id: str, area: str, expect: str, **kw: Any) -> Case:
        """A case on a small tmpfs: it needs the right to mount one."""
        return add(id, area, expect, needs_mount=True, **kw)

    madd(
        "disk-full-train",
        A,
        R,
        argv=T("--checkpoint-every", "1", out="@ws/mnt/run"),
        prep=tmpfs(24),
        mention=("space",),
        may_change=("mnt/*",),
        note="tmpfs of 24k: the run fills it while writing its outputs",
    )
    madd("disk-full-train-at-start", A, R, argv=T(out="@ws/mnt/run"), prep=tmpfs(16, full=True), mention=("space",))
    madd(
        "disk-full-train-overwrite",
        A,
        R,
        argv=T("--overwrite", "--seed", "7", out="@ws/mnt/run"),
        prep=tmpfs(96, old_run, full=True),
        post=old_kept,
        mention=("space",),
    )
    madd(
        "disk-full-train-overwrite-midway",
        A,
        R,
        argv=T("--overwrite", "--seed", "7", out="@ws/mnt/run"),
        prep=tmpfs(80, old_run),
        post=old_kept,
        mention=("space",),
        may_change=("mnt/run/.dti-overwrite*",),
        note="room for the config and log but not the new plot",
    )
    madd("disk-full-generate", A, R, argv=G("@ws/mnt/gen"), prep=tmpfs(16, full=True), mention=("space",))
    madd(
        "disk-full-generate-midway",
        A,
        R,
        argv=[*G("@ws/mnt/gen")[:-2], "-n", "4", "--resolution", "64", "--out", "@ws/mnt/gen"],
        prep=tmpfs(20),
        mention=("space",),
        note="room for about one image, not two and the contact sheet",
    )
    madd(
        "disk-full-convert",
        A,
        R,
        argv=["convert", "@concept", "--out", "@ws/mnt/c.safetensors"],
        prep=tmpfs(16, full=True),
        mention=("space",),
    )
    madd(
        "disk-full-convert-overwrite",
        A,
        R,
        argv=["convert", "@concept", "--out", "@ws/mnt/c.safetensors", "--overwrite"],
        prep=tmpfs(16, lambda m: write(m / "c.safetensors", b"the old file"), full=True),
        mention=("space",),
    )
    madd(
        "disk-full-convert-diffusers",
        A,
        R,
        argv=["convert", "@xlrun", "--to", "diffusers", "--out", "@ws/mnt/d"],
        prep=tmpfs(16, full=True),
        mention=("space",),
    )
    madd(
        "disk-full-interpolate",
        A,
        R,
        argv=["interpolate", "@run", "@run2", "--blends", "50", "--no-grid", "--out", "@ws/mnt/b"],
        prep=tmpfs(40),
        mention=("space",),
        note="room for some of the 50 blends",
    )
    madd(
        "disk-full-demo",
        A,
        R,
        argv=["demo", "--out", "@ws/mnt/demo", "--steps", "1", "--sample-steps", "1", "--quiet"],
        prep=tmpfs(16, full=True),
        mention=("space",),
    )
    madd(
        "disk-full-rescale",
        A,
        R,
        argv=["rescale", "@tirun", "--out", "@ws/mnt/r.safetensors"],
        prep=tmpfs(16, full=True),
        mention=("space",),
    )
    # read-only file systems: root cannot write there either
    madd("ro-train", A, R, argv=T(out="@ws/mnt/run"), prep=tmpfs(64, ro=True), mention=("read-only", "permission", "writ"))
    madd(
        "ro-train-existing-run-overwrite",
        A,
        R,
        argv=T("--overwrite", out="@ws/mnt/run"),
        prep=tmpfs(128, old_run, ro=True),
        post=old_kept,
        mention=("read-only", "writ"),
    )
    madd(
        "ro-resume",
        A,
        R,
        argv=["train", "--resume", "@ws/mnt/run"],
        prep=tmpfs(128, lambda m: unfinished_run(m / "run"), ro=True),
        mention=("read-only", "writ"),
    )
    madd("ro-generate", A, R, argv=G("@ws/mnt/gen"), prep=tmpfs(64, ro=True), mention=("read-only", "writ"))
    madd(
        "ro-convert",
        A,
        R,
        argv=["convert", "@concept", "--out", "@ws/mnt/c.safetensors"],
        prep=tmpfs(64, ro=True),
        mention=("read-only", "writ"),
    )
    madd(
        "ro-interpolate",
        A,
        R,
        argv=["interpolate", "@run", "@run2", "--no-grid", "--out", "@ws/mnt/b"],
        prep=tmpfs(64, ro=True),
        mention=("read-only", "writ"),
    )
    madd(
        "ro-demo",
        A,
        R,
        argv=["demo", "--out", "@ws/mnt/demo", "--steps", "1", "--sample-steps", "1", "--quiet"],
        prep=tmpfs(64, ro=True),
        mention=("read-only", "writ"),
    )
    madd(
        "ro-inspect-run",
        A,
        "ok",
        argv=["inspect", "@ws/mnt/run"],
        prep=tmpfs(128, old_run, ro=True),
        note="reading a run on a read-only disk",
    )
    madd("ro-photos", A, "ok", argv=T(photos="@ws/mnt/photos"), prep=tmpfs(128, lambda m: good_photos(m / "photos"), ro=True))
    # monkeypatched faults (no mount needed)
    add(
        "fault-convert-replace-enospc",
        A,
        R,
        argv=["convert", "@concept", "--out", "@ws/c.safetensors", "--overwrite"],
        prep=lambda ws: write(ws / "c.safetensors", b"the old file"),
        patch=lambda ws: fail_os_replace(),
        mention=("space",),
    )
    add(
        "fault-convert-half-write",
        A,
        R,
        argv=["convert", "@concept", "--to", "a1111", "--out", "@ws/c.safetensors", "--overwrite"],
        prep=lambda ws: write(ws / "c.safetensors", b"the old file"),
        patch=lambda ws: half_write_safetensors(),
        mention=("space",),
    )
    add(
        "fault-convert-diffusers-second-fails",
        A,
        R,
        argv=["convert", "@xlrun", "--to", "diffusers", "--out", "@ws/d", "--overwrite"],
        prep=lambda ws: (
            write(ws / "d" / "learned_embeds.safetensors", b"old 1"),
            write(ws / "d" / "learned_embeds_2.safetensors", b"old 2"),
        ),
        patch=lambda ws: half_write_safetensors(after=1),
        mention=("space",),
        note="the second of two files fails: neither may change",
    )
    add(
        "fault-convert-diffusers-second-replace-fails",
        A,
        R,
        argv=["convert", "@xlrun", "--to", "diffusers", "--out", "@ws/d", "--overwrite"],
        prep=lambda ws: (
            write(ws / "d" / "learned_embeds.safetensors", b"old 1"),
            write(ws / "d" / "learned_embeds_2.safetensors", b"old 2"),
        ),
        patch=lambda ws: fail_os_replace(match="learned_embeds_2.safetensors"),
        mention=("space",),
        note="the rename of the second file into place fails after the first was renamed",
    )
    add(
        "fault-train-concept-half-write",
        A,
        R,
        argv=T(),
        patch=lambda ws: half_write_safetensors(after=2),
        mention=("space",),
        may_change=("run/*",),
    )
    add(
        "fault-train-png-half-write",
        A,
        R,
        argv=T(validate=True),
        patch=lambda ws: half_write_png(),
        mention=("space",),
        may_change=("run/*",),
    )
    add(
        "fault-train-checkpoint-enospc",
        A,
        R,
        argv=T("--checkpoint-every", "1", "--steps", "3"),
        patch=lambda ws: fail_torch_save(after=1),
        mention=("space",),
        may_change=("run/*",),
        skip_check=(),
        note="the second checkpoint save hits a full disk",
    )
    add(
        "fault-train-log-enospc",
        A,
        R,
        argv=T(),
        mention=("space",),
        may_change=("run/*",),
        patch=lambda ws: raising(module("dti.training.run_folder").RunFolder, "append_log", enospc("train_log.jsonl")),
        note="appending to train_log.jsonl fails with ENOSPC",
    )
    add("fault-generate-png-half-write", A, R, argv=G("@ws/gen"), patch=lambda ws: half_write_png(), mention=("space",))
    add(
        "fault-generate-replace-second",
        A,
        R,
        argv=[*G("@ws/gen"), "--overwrite"],
        prep=lambda ws: (
            write(ws / "gen" / "seed-0000.png", image_bytes(size=(20, 20))),
            write(ws / "gen" / "seed-0001.png", image_bytes(size=(21, 21))),
        ),
        patch=lambda ws: fail_os_replace(after=1, match="/gen/"),
        mention=("space",),
        note="the second image's rename fails: the first old image must not have been replaced alone",
    )
    add(
        "fault-interpolate-json-enospc",
        A,
        R,
        argv=["interpolate", "@run", "@run2", "--blends", "3", "--no-grid", "--out", "@ws/b"],
        patch=lambda ws: fail_os_replace(match="interpolation.json"),
        mention=("space",),
        note="the blends are written, then interpolation.json fails: a half set of outputs",
    )
    add(
        "fault-demo-eacces",
        A,
        R,
        argv=["demo", "--out", "@ws/demo", "--steps", "1", "--sample-steps", "1", "--quiet"],
        patch=lambda ws: raising(module("PIL.Image").Image, "save", PermissionError(errno.EACCES, "Permission denied")),
        mention=("permission",),
    )


def define_concepts() -> None:
    """Every bad concept file through inspect, convert, Concept.load, dti.load, interpolate (and generate for some)."""
    A = "concept"
    evil_words = ("system", "eval")
    for name, kind in BAD_KINDS.items():
        ref = bad_ref(name)
        mention = evil_words if kind == "evil" else ()
        # inspect: a bad file is shown with what is wrong (or refused in one line)
        if kind in ("values", "format", "token"):

            def flagged(ws: Path, res: Result) -> list:
                text = res.stdout.lower()
                words = ("problem", "nan", "infinite", "zero", "unusable", "out of distribution", "damaged", "not ", "⚠")
                if res.code == 0 and not any(w in text for w in words):
                    return [("poor", "inspect shows a damaged file without flagging what is wrong")]
                return []

            add(f"concept-inspect-{name}", A, "any", argv=["inspect", ref], post=flagged, mention=mention)
            if kind == "values":
                add(f"concept-inspect-json-{name}", A, "any", argv=["inspect", ref, "--json"], post=json_strict)
        else:
            expect = {"ok": "ok", "any": "any", "mismatch": "ok"}.get(kind, "refuse")
            add(f"concept-inspect-{name}", A, expect, argv=["inspect", ref], mention=mention)
        # convert to A1111 (a file other tools load): bad values must never be exported
        expect = {"ok": "ok", "any": "any", "mismatch": "ok"}.get(kind, "refuse")
        add(f"concept-convert-{name}", A, expect, argv=["convert", ref, "--to", "a1111", "--out", "@ws/out.safetensors"], mention=mention)
        # dti.Concept.load: only dti files
        is_dti = name.startswith("dti-")
        cl_expect = ("ok" if kind == "ok" else "any" if kind == "token" else "refuse") if is_dti else "refuse"
        if name in ("wrong-ext-txt", "safetensors-as-pt"):
            cl_expect = "any"  # a dti safetensors file under another extension: read by content
        add(
            f"concept-Concept.load-{name}",
            A,
            cl_expect,
            api=(lambda n: lambda ws, x: module("dti").Concept.load(BAD[n]))(name),
            desc=f"dti.Concept.load({name})",
        )
        # dti.load onto the tiny SD pipeline
        ld_expect = {"ok": "ok", "any": "any"}.get(kind, "refuse")
        post = pipe_unchanged("sd")

        def do_load(n: str) -> Callable:
            def fn(ws: Path, x: dict) -> Any:
                import dti

                c = dti.load(pipe_for("sd"), BAD[n])
                dti.unload(pipe_for("sd"), c.token)
                return c.token

            return fn

        add(f"concept-dti.load-{name}", A, ld_expect, api=do_load(name), mention=mention, post=post, desc=f"dti.load(sd_pipe, {name})")
        # interpolate with a good concept
        ip_expect = {"ok": "ok", "any": "any", "mismatch": "refuse", "token": "any"}.get(kind, "refuse")
        add(
            f"concept-interpolate-{name}",
            A,
            ip_expect,
            argv=["interpolate", "@run", ref, "--blends", "3", "--no-grid", "--out", "@ws/b"],
            mention=mention,
        )
    G = lambda ref: [  # noqa: E731
        "generate",
        "a <my-hd> dog",
        "--concept",
        ref,
        "--model",
        "@sd",
        "-n",
        "1",
        "--sample-steps",
        "1",
        "--resolution",
        "32",
        "--out",
        "@ws/gen",
    ]
    for name in (
        "dti-nan",
        "dti-zero",
        "dti-int",
        "kohya-nan",
        "a1111-nan",
        "evil-zip",
        "evil-raw",
        "st-random",
        "kohya-width7",
        "pt-empty",
    ):
        add(
            f"concept-generate-{name}",
            A,
            "refuse",
            argv=G(f"@bad_{name.replace('-', '_')}"),
            mention=("system",) if name.startswith("evil") else (),
        )
    add(
        "concept-generate-a1111-ok",
        A,
        "any",
        argv=[
            "generate",
            "a hpt dog",
            "--concept",
            "@bad_a1111_ok",
            "--model",
            "@sd",
            "-n",
            "1",
            "--sample-steps",
            "1",
            "--resolution",
            "32",
            "--out",
            "@ws/gen",
        ],
    )
    add("concept-rescale-nan", A, "refuse", argv=["rescale", "@bad_kohya_nan", "--model", "@sd", "--out", "@ws/r.safetensors"])
    add("concept-rescale-zero", A, "refuse", argv=["rescale", "@bad_kohya_zero", "--out", "@ws/r.safetensors"])
    add(
        "concept-rescale-width7-on-sd",
        A,
        "refuse",
        argv=["rescale", "@bad_kohya_width7", "--model", "@sd", "--out", "@ws/r.safetensors"],
        mention=("width",),
    )


def json_strict(ws: Path, res: Result) -> list:
    if res.code != 0:
        return []

    def bad_const(name: str) -> Any:
        raise ValueError(name)

    try:
        json.loads(res.stdout, parse_constant=bad_const)
    except ValueError as exc:
        return [("poor", f"--json output is not strict JSON ({str(exc)[:80]})")]
    return []


def define_generate() -> None:
    A = "generate"
    R, OK, ANY, RW = "refuse", "ok", "any", "refuse-or-warn"

    def G(*extra: str, prompt: str = "a <my-hd> dog", concept: tuple = ("--concept", "@run")) -> list[str]:
        return ["generate", prompt, *concept, "-n", "1", "--sample-steps", "1", "--resolution", "32", "--out", "@ws/gen", *extra]

    def pngs_ok(ws: Path, res: Result) -> list:
        if res.code != 0:
            return []
        from PIL import Image

        issues = []
        pngs = sorted((ws / "gen").glob("seed-*.png"))
        if not pngs or not (ws / "gen" / "contact_sheet.png").is_file():
            issues.append(("poor", "exit 0 but the images or the contact sheet are missing"))
        for p in pngs:
            with Image.open(p) as im:
                if "prompt" not in im.info or "parameters" not in im.info:
                    issues.append(("poor", f"{p.name} lacks the prompt / parameters metadata"))
        return issues

    add("gen-ok", A, OK, argv=G(), post=pngs_ok)
    for flag, value, expect in (
        ("-n", "0", R),
        ("-n", "-1", R),
        ("-n", "257", R),
        ("-n", "abc", R),
        ("--sample-steps", "0", R),
        ("--sample-steps", "-1", R),
        ("--sample-steps", "100000", R),
        ("--guidance", "nan", R),
        ("--guidance", "inf", R),
        ("--guidance", "-1", R),
        ("--guidance", "1e30", RW),
        ("--guidance", "0", OK),
        ("--resolution", "63", R),
        ("--resolution", "0", R),
        ("--resolution", "-8", R),
        ("--resolution", "100000", R),
        ("--resolution", "72", OK),
        ("--seed", "-1", R),
        ("--seed", str(2**63), R),
        ("--seed", str(2**63 - 2), OK),
        ("--precision", "fp16", ANY),
        ("--device", "cuda", R),
        ("--device", "tpu", R),
        ("--rescale", "mode", R),
        ("--rescale", "median", OK),
        ("--rescale", "mean", OK),
        ("--negative-prompt", "blurry", OK),
        ("--negative-prompt", "a <nope> thing", RW),
    ):
        name = value.replace("-", "neg").replace(".", "p")[:12]
        add(
            f"gen{flag}-{name}",
            A,
            expect,
            argv=G(flag, value),
            mention=(flag.lstrip("-"),) if expect == R and flag != "--negative-prompt" else (),
        )
    add("gen-missing-concept", A, R, argv=G(concept=("--concept", "@ws/nope.safetensors")), mention=("nope",))
    add("gen-unknown-token", A, R, argv=G(prompt="a <nope> dog"), mention=("<nope>",))
    add("gen-no-token-in-prompt", A, "warn", argv=G(prompt="a dog on the beach"), mention=("none of the loaded", "<my-hd>"))
    add("gen-empty-prompt", A, ANY, argv=G(prompt=""))
    add(
        "gen-long-prompt",
        A,
        ANY,
        argv=G(prompt="a <my-hd> dog " + "very " * 2000 + "fluffy"),
        note="a 2000-word prompt; the same command with a short prompt takes a few seconds",
    )
    add("gen-prompt-newlines", A, ANY, argv=G(prompt="a <my-hd>\ndog\n\n"))
    add(
        "gen-sdxl-concept-on-sd",
        A,
        R,
        argv=[*G(concept=("--concept", "@xlrun"), prompt="a <my-hx> dog"), "--model", "@sd"],
        mention=("<my-hx>", "text_encoder"),
    )
    add(
        "gen-flux-concept-on-sd",
        A,
        R,
        argv=[*G(concept=("--concept", "@fluxrun"), prompt="a <my-hf> dog"), "--model", "@sd"],
        mention=("<my-hf>",),
    )
    add("gen-same-concept-twice", A, R, argv=G(concept=("--concept", "@run", "--concept", "@run")), mention=("already",))
    add("gen-two-concepts", A, OK, argv=G(concept=("--concept", "@run", "--concept", "@run2"), prompt="a <my-hd> and a <my-hc>"))
    add("gen-multivector", A, OK, argv=G(concept=("--concept", "@run2v"), prompt="a <my-hv> on a table"))
    add("gen-no-model-no-base", A, R, argv=G(concept=("--concept", "@bad_kohya_ok"), prompt="a <kohya-ok> dog"), mention=("--model",))
    add("gen-no-concept", A, OK, argv=[*G(concept=(), prompt="a dog"), "--model", "@sd"])
    add("gen-no-concept-no-model", A, R, argv=G(concept=(), prompt="a dog"), mention=("--model",))
    add(
        "gen-concept-empty-dir",
        A,
        R,
        argv=G(concept=("--concept", "@ws/empty")),
        prep=lambda ws: (ws / "empty").mkdir(),
        mention=("empty",),
    )
    add(
        "gen-concept-unfinished-run",
        A,
        R,
        argv=G(concept=("--concept", "@ws/run")),
        prep=lambda ws: unfinished_run(ws / "run"),
        mention=("concept",),
    )
    add(
        "gen-flux-res-72",
        A,
        OK,
        note="the tiny FLUX VAE downsamples by 2: 72 is a valid size for it",
        argv=[
            "generate",
            "a <my-hf> dog",
            "--concept",
            "@fluxrun",
            "-n",
            "1",
            "--sample-steps",
            "1",
            "--resolution",
            "72",
            "--out",
            "@ws/gen",
        ],
    )
    add("gen-ti-concept", A, OK, argv=G(concept=("--concept", "@tirun"), prompt="a <my-ht> cat"))
    add("gen-webui-file", A, OK, argv=[*G(concept=("--concept", "@webui")), "--model", "@sd"])
    add("gen-diffusers-file", A, OK, argv=G(concept=("--concept", "@diffusers")))
    add(
        "gen-token-word-concept",
        A,
        "warn",
        argv=[*G(concept=("--concept", "@ws/dog.safetensors"), prompt="a dog"), "--model", "@sd"],
        prep=lambda ws: shutil.copy(P["bad_kohya_ok"], ws / "dog.safetensors"),
        mention=("none of the loaded",),
        note="an A1111 file named dog.safetensors gives the token <dog>; 'dog' alone must not be hijacked",
    )


def define_interpolate() -> None:
    A = "interpolate"
    R, OK, ANY, RW = "refuse", "ok", "any", "refuse-or-warn"

    def interp(a: str = "@run", b: str = "@run2", *extra: str, grid: bool = False) -> list[str]:
        g = ["--model", "@sd", "--seeds", "0", "--sample-steps", "1", "--resolution", "32"] if grid else ["--no-grid"]
        return ["interpolate", a, b, "--blends", "3", *g, "--out", "@ws/b", *extra]

    def blends_ok(ws: Path, res: Result) -> list:
        if res.code != 0:
            return []
        issues = []
        import dti

        files = sorted((ws / "b").glob("blend-*.safetensors"))
        if not files:
            issues.append(("poor", "exit 0 but no blend files"))
        for f in files:
            try:
                dti.Concept.load(f)
            except dti.DTIError as exc:
                issues.append(("data-loss", f"a blend dti cannot read back: {f.name}: {exc}"))
        return issues

    add("interp-ok", A, OK, argv=interp(), post=blends_ok)
    add("interp-grid", A, OK, argv=interp(grid=True), post=blends_ok)
    for value, expect in (("1", R), ("0", R), ("-1", R), ("abc", R), ("2", OK), ("5000", RW)):
        add(f"interp-blends-{value.replace('-', 'neg')}", A, expect, argv=interp("@run", "@run2", "--blends", value), mention=("blends",))
    add("interp-same-concept", A, ANY, argv=interp("@run", "@run"))
    add("interp-sd-sdxl", A, R, argv=interp("@run", "@xlrun"), mention=("encoder",))
    add("interp-sd-flux", A, R, argv=interp("@run", "@fluxrun"), mention=("encoder",))
    add("interp-1v-2v", A, R, argv=interp("@run", "@run2v"), mention=("vector",))
    add("interp-dti-ti", A, OK, argv=interp("@run", "@tirun"), post=blends_ok)

    def antipodal(ws: Path) -> None:
        import dti

        c = dti.Concept.load(P["concept"])
        enc = c.encoders["text_encoder"]
        neg = dti.Concept("<neg>", {"text_encoder": dti.EncoderVectors(-enc.vectors, enc.magnitude, enc.init, kind=enc.kind)}, dict(c.meta))
        neg.save(ws / "neg.safetensors")

    add("interp-antipodal-slerp", A, R, argv=interp("@run", "@ws/neg.safetensors"), prep=antipodal, mention=("antipodal",))
    add(
        "interp-antipodal-lerp",
        A,
        R,
        argv=interp("@run", "@ws/neg.safetensors", "--mode", "lerp"),
        prep=antipodal,
        mention=("opposite", "zero"),
    )
    add("interp-lerp", A, OK, argv=interp("@run", "@run2", "--mode", "lerp"), post=blends_ok)
    add("interp-mode-bad", A, R, argv=interp("@run", "@run2", "--mode", "cubic"), mention=("mode",))
    add("interp-prompt-no-braces", A, R, argv=interp("@run", "@run2", "--prompt", "a photo", grid=True), mention=("{}",))
    add(
        "interp-prompt-format-field",
        A,
        R,
        argv=interp("@run", "@run2", "--prompt", "a {} in {style}", grid=True),
        mention=("{style}", "prompt"),
    )
    add("interp-token-space", A, R, argv=interp("@run", "@run2", "--token", "my blend"), mention=("token",))
    add("interp-token-empty", A, R, argv=interp("@run", "@run2", "--token", ""), mention=("token",))
    add("interp-token-existing-word", A, RW, argv=interp("@run", "@run2", "--token", "dog"), mention=("dog",))
    add("interp-missing-a", A, R, argv=interp("@ws/nope", "@run2"), mention=("nope",))
    add("interp-grid-seed-neg", A, R, argv=interp("@run", "@run2", "--seeds", "-1", grid=True), mention=("seed",))
    add("interp-grid-seed-huge", A, R, argv=interp("@run", "@run2", "--seeds", str(2**64), grid=True), mention=("seed",))
    add("interp-grid-sample-steps-0", A, R, argv=interp("@run", "@run2", "--sample-steps", "0", grid=True), mention=("steps",))
    add("interp-grid-guidance-nan", A, R, argv=interp("@run", "@run2", "--guidance", "nan", grid=True), mention=("guidance",))
    add("interp-grid-resolution-63", A, R, argv=interp("@run", "@run2", "--resolution", "63", grid=True), mention=("resolution",))
    add("interp-grid-model-sdxl", A, R, argv=interp("@run", "@run2", "--model", "@sdxl", grid=True), mention=("encoder", "text_encoder"))
    add("interp-grid-device-cuda", A, R, argv=interp("@run", "@run2", "--device", "cuda", grid=True), mention=("cuda",))
    add(
        "interp-grid-no-model-foreign",
        A,
        OK,
        argv=["interpolate", "@bad_kohya_ok", "@bad_a1111_ok", "--blends", "3", "--out", "@ws/b"],
        note="no base model recorded and no --model: blends without a grid, with a note",
    )


def define_inspect() -> None:
    A = "inspect"
    R, OK, ANY = "refuse", "ok", "any"
    add("inspect-run", A, OK, argv=["inspect", "@run"])
    add("inspect-json", A, OK, argv=["inspect", "@run", "--json"], post=json_strict)
    add("inspect-model", A, OK, argv=["inspect", "@run", "--model", "@sd"])
    add("inspect-model-json", A, OK, argv=["inspect", "@run", "--model", "@sd", "--json"], post=json_strict)
    add("inspect-xl", A, OK, argv=["inspect", "@xlrun", "--model", "@sdxl"])
    add("inspect-flux", A, OK, argv=["inspect", "@fluxrun"])
    add("inspect-ti", A, OK, argv=["inspect", "@tirun", "--model", "@sd"])
    add("inspect-webui", A, OK, argv=["inspect", "@webui"])
    add("inspect-diffusers-file", A, OK, argv=["inspect", "@diffusers"])
    for value, expect in (("0", R), ("-1", R), ("abc", R), ("100000", ANY), ("1", OK)):
        add(
            f"inspect-top-{value.replace('-', 'neg')}",
            A,
            expect,
            argv=["inspect", "@run", "--model", "@sd", "--top", value],
            mention=("top",),
        )
    add(
        "inspect-model-other-family",
        A,
        ANY,
        argv=["inspect", "@run", "--model", "@sdxl"],
        mention=("encoder", "text_encoder"),
        note="an SD concept (CLIP-L) against SDXL, whose text_encoder is CLIP-L too: comparable",
    )
    add(
        "inspect-model-flux-on-sd",
        A,
        ANY,
        note="the CLIP-L part is compared with SD's CLIP-L, the T5 part with its stored statistics",
        argv=["inspect", "@fluxrun", "--model", "@sd"],
        mention=("encoder", "text_encoder"),
    )
    add("inspect-model-missing", A, R, argv=["inspect", "@run", "--model", "@ws/nope"], mention=("nope",))
    add("inspect-token-space", A, R, argv=["inspect", "@bad_kohya_ok", "--token", "a b"], mention=("token",))
    add("inspect-missing", A, R, argv=["inspect", "@ws/nope.safetensors"], mention=("nope",))
    add("inspect-unfinished-run", A, R, argv=["inspect", "@ws/run"], prep=lambda ws: unfinished_run(ws / "run"), mention=("concept",))
    add("inspect-snapshot", A, OK, argv=["inspect", "@run/snapshots/concept-step-000001.safetensors"])
    add(
        "inspect-checkpoint",
        A,
        R,
        argv=["inspect", "@run/checkpoints/step-000002.pt"],
        mention=("step-000002.pt",),
        note="a training checkpoint is not a concept file",
    )
    add("inspect-device-cuda", A, R, argv=["inspect", "@run", "--model", "@sd", "--device", "cuda"], mention=("cuda",))


def define_convert() -> None:
    A = "convert"
    R, OK, ANY = "refuse", "ok", "any"

    def readable(ws: Path, res: Result) -> list:
        if res.code != 0:
            return []
        import dti.concepts.formats

        issues = []
        for line in res.stdout.splitlines():
            if line.startswith("wrote "):
                for path in line[len("wrote ") :].split(", "):
                    p = Path(path)
                    p = p if p.is_absolute() else ws / p
                    try:
                        dti.concepts.formats.read(p if p.suffix else p.parent if p.name.startswith("learned") else p)
                    except Exception as exc:
                        issues.append(("data-loss", f"dti cannot read back what it wrote ({p.name}): {str(exc)[:100]}"))
        return issues

    for src in ("@run", "@xlrun", "@fluxrun", "@tirun", "@run2v"):
        for to in ("dti", "diffusers", "a1111", "comfyui", "kohya"):
            sname = src.lstrip("@")
            out = "@ws/out" if to == "diffusers" else "@ws/out.safetensors"
            expect = OK if not (sname == "fluxrun" and to in ("a1111", "kohya")) else ANY
            add(f"convert-{sname}-to-{to}", A, expect, argv=["convert", src, "--to", to, "--out", out], post=readable)
    add("convert-a1111-pt", A, OK, argv=["convert", "@run", "--to", "a1111", "--out", "@ws/x.pt"], post=readable)
    add("convert-from-a1111-pt", A, OK, argv=["convert", "@bad_a1111_ok", "--out", "@ws/x.safetensors"], post=readable)
    add("convert-from-legacy-pt", A, OK, argv=["convert", "@bad_a1111_legacy", "--out", "@ws/x.safetensors"], post=readable)
    add("convert-from-kohya", A, OK, argv=["convert", "@bad_kohya_ok", "--out", "@ws/x.safetensors"], post=readable)
    add("convert-from-diffusers-bin", A, OK, argv=["convert", "@bad_diffusers_bin", "--out", "@ws/x.safetensors"], post=readable)
    add("convert-to-bogus", A, R, argv=["convert", "@run", "--to", "onnx", "--out", "@ws/x"], mention=("onnx", "--to"))
    add("convert-token-word", A, R, argv=["convert", "@run", "--token", "dog", "--to", "a1111"], mention=("dog",))
    add("convert-token-bracket-word-default-out", A, R, argv=["convert", "@run", "--token", "<dog>", "--to", "a1111"], mention=("dog",))
    add(
        "convert-token-bracket-word-named-out",
        A,
        OK,
        argv=["convert", "@run", "--token", "<dog>", "--to", "a1111", "--out", "@ws/my-dog.safetensors"],
    )
    add("convert-token-empty", A, R, argv=["convert", "@run", "--token", "", "--out", "@ws/x.safetensors"], mention=("token",))
    add("convert-token-space", A, R, argv=["convert", "@run", "--token", "a b", "--out", "@ws/x.safetensors"], mention=("token",))
    add(
        "convert-token-slash",
        A,
        ANY,
        argv=["convert", "@run", "--token", "<../../evil>", "--to", "a1111", "--out", "@ws/emb"],
        post=lambda ws, res: (
            [("data-loss", "a token with ../ wrote outside --out")]
            if (ws.parent / "evil.safetensors").exists() or (ws.parent.parent / "evil.safetensors").exists()
            else []
        ),
        note="a token with path separators must not escape --out",
    )
    add("convert-out-folder-dti", A, OK, argv=["convert", "@run", "--out", "@ws/folder"], post=readable)
    add("convert-rescale-no-model", A, OK, argv=["convert", "@tirun", "--rescale", "mean", "--out", "@ws/x.safetensors"])
    add("convert-rescale-model", A, OK, argv=["convert", "@tirun", "--rescale", "max", "--model", "@sd", "--out", "@ws/x.safetensors"])
    add(
        "convert-rescale-wrong-family",
        A,
        R,
        argv=["convert", "@run", "--rescale", "mean", "--model", "@sdxl", "--out", "@ws/x.safetensors"],
        mention=("encoder", "text_encoder"),
    )
    add(
        "convert-rescale-model-missing",
        A,
        R,
        argv=["convert", "@run", "--rescale", "mean", "--model", "@ws/nope", "--out", "@ws/x.safetensors"],
        mention=("nope",),
    )
    add(
        "convert-rescale-device-cuda",
        A,
        R,
        argv=["convert", "@run", "--rescale", "mean", "--model", "@sd", "--device", "cuda", "--out", "@ws/x.safetensors"],
        mention=("cuda",),
    )
    add("convert-rescale-bogus", A, R, argv=["convert", "@run", "--rescale", "mode", "--out", "@ws/x.safetensors"], mention=("rescale",))
    add(
        "convert-foreign-rescale-no-stats",
        A,
        ANY,
        argv=["convert", "@bad_kohya_ok", "--rescale", "mean", "--out", "@ws/x.safetensors"],
        note="a foreign width-32 file with no stored stats and no --model: no reference norm exists",
    )
    add(
        "convert-unfinished-run",
        A,
        R,
        argv=["convert", "@ws/run", "--out", "@ws/x.safetensors"],
        prep=lambda ws: unfinished_run(ws / "run"),
        mention=("concept",),
    )
    add("convert-checkpoint", A, R, argv=["convert", "@run/checkpoints/step-000002.pt", "--out", "@ws/x.safetensors"])
    add("rescale-ti-model", A, OK, argv=["rescale", "@tirun", "--model", "@sd", "--out", "@ws/r.safetensors"], post=readable)
    add("rescale-ti-no-model", A, OK, argv=["rescale", "@tirun", "--out", "@ws/r.safetensors"], post=readable)
    add("rescale-dti", A, ANY, argv=["rescale", "@run", "--out", "@ws/r.safetensors"], note="rescaling a dti concept is a no-op")
    add("rescale-bogus", A, R, argv=["rescale", "@tirun", "--rescale", "mode", "--out", "@ws/r.safetensors"], mention=("rescale",))
    add("rescale-default-out", A, OK, argv=["rescale", "@tirun", "--model", "@sd"])
    add("rescale-to-diffusers", A, OK, argv=["rescale", "@tirun", "--to", "diffusers", "--out", "@ws/d"], post=readable)


def define_demo() -> None:
    A = "demo"
    R = "refuse"
    D = lambda *extra: ["demo", "--out", "@ws/demo", "--quiet", *extra]  # noqa: E731
    for flag, value in (
        ("--steps", "0"),
        ("--steps", "-1"),
        ("--steps", "abc"),
        ("--steps", "1e9"),
        ("--sample-steps", "0"),
        ("--sample-steps", "-3"),
        ("--sample-steps", "nan"),
        ("--steps", "1000000000"),
        ("--sample-steps", "100000"),
    ):
        add(f"demo{flag}-{value.replace('-', 'neg')}", A, R, argv=D(flag, value), mention=(flag.lstrip("-").split("-")[0],))
    add("demo-model-missing", A, R, argv=D("--model", "@ws/nope"), mention=("nope",))
    add("demo-model-empty", A, R, argv=D("--model", "@ws/empty"), prep=lambda ws: (ws / "empty").mkdir(), mention=("empty", "model"))
    add(
        "demo-model-sd",
        A,
        "any",
        argv=D("--model", "@sd", "--steps", "1", "--sample-steps", "1"),
        note="a pipeline that is not dti-mini: refused, or it starts (the harness stops it when training begins)",
    )
    add("demo-model-file", A, R, argv=D("--model", "@ws/f"), prep=lambda ws: write(ws / "f", "x"), mention=("f",))
    add(
        "demo-out-existing-overwrite-user-files",
        A,
        "any",
        argv=D("--overwrite", "--steps", "1", "--sample-steps", "1"),
        prep=lambda ws: write(ws / "demo" / "my-notes.txt", "mine"),
        note="--overwrite must keep a user's file (the harness stops at training)",
    )
    add("demo-unknown-flag", A, R, argv=D("--steps", "1", "--fast"), mention=("--fast",))


def define_api() -> None:
    A = "api"
    R, OK, ANY = "refuse", "ok", "any"
    import dti

    def kw(ws: Path, **over: Any) -> dict:
        base = dict(
            photos=P["photos"],
            token="<my-hd>",
            init="dog",
            model=P["sd"],
            output=str(ws / "run"),
            steps=1,
            resolution=32,
            batch_size=1,
            validate=False,
            progress=False,
        )
        base.update(over)
        return base

    def tr(**over: Any) -> Callable:
        return lambda ws, x: dti.train(**kw(ws, **over))

    add("api-train-noargs", A, R, api=lambda ws, x: dti.train(), desc="dti.train()")
    add("api-train-ok", A, OK, api=tr(), desc="dti.train(photos, token, init, model, output, steps=2, ...)")
    add("api-train-no-output", A, OK, api=tr(output=None), desc="dti.train(..., output=None): in memory only")
    add(
        "api-train-pathlike",
        A,
        OK,
        api=lambda ws, x: dti.train(**kw(ws, photos=Path(P["photos"]), model=Path(P["sd"]))),
        desc="Path objects",
    )
    add("api-train-photos-int", A, R, api=tr(photos=123), desc="photos=123")
    add(
        "api-train-photos-list",
        A,
        R,
        api=lambda ws, x: dti.train(**kw(ws, photos=[P["photos"]])),
        desc="photos=[folder] (a list of folders)",
    )
    add("api-train-token-int", A, R, api=tr(token=5), desc="token=5")
    add("api-train-init-list", A, R, api=tr(init=["dog", "cat"]), desc="init=['dog', 'cat']")
    add("api-train-steps-str", A, R, api=tr(steps="2"), mention=("steps",), desc="steps='2'")
    add("api-train-steps-float", A, R, api=tr(steps=2.0), mention=("steps",), desc="steps=2.0")
    add("api-train-steps-bool", A, R, api=tr(steps=True), mention=("steps",), desc="steps=True")
    add("api-train-steps-numpy", A, OK, api=lambda ws, x: dti.train(**kw(ws, steps=__import__("numpy").int64(2))), desc="steps=np.int64(2)")
    add("api-train-lr-nan", A, R, api=tr(lr=float("nan")), mention=("lr",), desc="lr=nan")
    add("api-train-unknown-kw", A, R, api=tr(stepz=2), mention=("stepz",), desc="stepz=2 (typo)")
    add(
        "api-train-too-many-positional",
        A,
        R,
        api=lambda ws, x: dti.train(P["photos"], "<my-hd>", "dog", P["sd"], str(ws / "run"), 2),
        desc="six positional arguments",
    )
    add(
        "api-train-config-str",
        A,
        R,
        api=lambda ws, x: dti.train(**kw(ws), config="run.toml"),
        mention=("config",),
        desc="config='run.toml'",
    )
    add(
        "api-train-config-dict",
        A,
        OK,
        api=lambda ws, x: dti.train(**kw(ws), config={"steps": 2}),
        desc="config={'steps': 2}",
        note="a dict of settings is a documented config= form (TrainConfig.from_dict)",
    )
    add(
        "api-train-config-dict-bad",
        A,
        R,
        api=lambda ws, x: dti.train(**kw(ws), config={"stepz": 2}),
        mention=("stepz",),
        desc="config={'stepz': 2}",
    )
    add(
        "api-train-config-bad",
        A,
        R,
        api=lambda ws, x: dti.train(**kw(ws), config=dti.TrainConfig(beta=5.0)),
        mention=("beta",),
        desc="config=TrainConfig(beta=5.0)",
    )
    add(
        "api-trainconfig-bad-type",
        A,
        R,
        api=lambda ws, x: dti.train(**kw(ws), config=dti.TrainConfig(kappa="lots")),
        mention=("kappa",),
        desc="config=TrainConfig(kappa='lots')",
    )
    add("api-train-model-object", A, R, api=tr(model=object()), desc="model=object()")
    add("api-train-model-int", A, R, api=tr(model=42), desc="model=42")
    add(
        "api-train-templates-format-field",
        A,
        R,
        api=tr(templates=["a {} in {style}"]),
        mention=("template", "{style}"),
        desc="templates=['a {} in {style}']",
    )
    add("api-train-templates-empty", A, R, api=tr(templates=[]), mention=("template",), desc="templates=[]")
    add(
        "api-train-validation-prompt-field",
        A,
        R,
        api=tr(validate=True, sample_steps=1, validation_seeds=[0], validation_prompts=["a {} {0}"]),
        mention=("prompt",),
        desc="validation_prompts=['a {} {0}']",
    )
    add("api-train-family-options-sd", A, R, api=tr(family_options={"x": 1}), mention=("x",), desc="family_options={'x': 1} on SD")
    add("api-train-family-options-list", A, R, api=tr(family_options=[("x", 1)]), desc="family_options=[('x', 1)]")
    add("api-train-adam-betas-short", A, R, api=tr(adam_betas=(0.9,)), mention=("adam_betas",), desc="adam_betas=(0.9,)")
    add("api-train-adam-betas-1", A, R, api=tr(adam_betas=(1.5, 0.9), method="ti"), mention=("adam_betas",), desc="adam_betas=(1.5, 0.9)")
    add("api-train-encoders-empty", A, R, api=tr(encoders=[]), mention=("encoders",), desc="encoders=[]")
    add("api-train-encoders-str", A, R, api=tr(encoders="text_encoder"), mention=("encoders",), desc="encoders='text_encoder' (a string)")
    add("api-train-magnitude-bool", A, R, api=tr(magnitude=True), mention=("magnitude",), desc="magnitude=True")
    add("api-train-magnitude-number", A, OK, api=tr(magnitude=0.3), desc="magnitude=0.3")
    add(
        "api-train-output-file",
        A,
        R,
        api=lambda ws, x: dti.train(**kw(ws, output=str(ws / "f"))),
        prep=lambda ws: write(ws / "f", "x"),
        mention=("file",),
        desc="output=<a file>",
    )
    add(
        "api-train-device-obj",
        A,
        ANY,
        api=lambda ws, x: dti.train(**kw(ws, device=__import__("torch").device("cpu"))),
        desc="device=torch.device('cpu')",
    )
    add("api-train-progress-str", A, R, api=tr(progress="no"), mention=("progress",), desc="progress='no'")
    add(
        "api-train-nan-loss",
        A,
        "stop:1",
        api=tr(steps=6, max_bad_steps=2),
        patch=lambda ws: nan_loss(),
        desc="a diverged run raises RunStopped",
        may_change=("run/*",),
    )
    pp = pipe_unchanged("sd")
    add(
        "api-train-pipe",
        A,
        OK,
        api=lambda ws, x: dti.train(**kw(ws, model=pipe_for("sd"))),
        post=pp,
        desc="dti.train(..., model=<loaded pipe>)",
    )
    pp = pipe_unchanged("sd")
    add(
        "api-train-pipe-bad-token",
        A,
        R,
        api=lambda ws, x: dti.train(**kw(ws, model=pipe_for("sd"), token="dog")),
        post=pp,
        desc="loaded pipe, token='dog'",
    )
    pp = pipe_unchanged("sd")
    add(
        "api-train-pipe-nan",
        A,
        "stop:1",
        api=lambda ws, x: dti.train(**kw(ws, model=pipe_for("sd"), steps=6, max_bad_steps=2)),
        post=pp,
        patch=lambda ws: nan_loss(),
        may_change=("run/*",),
        desc="loaded pipe, a diverged run: the pipe must be restored",
    )
    pp = pipe_unchanged("sd")
    add(
        "api-train-pipe-interrupt",
        A,
        "any",
        api=lambda ws, x: dti.train(**kw(ws, model=pipe_for("sd"))),
        post=pp,
        patch=lambda ws: raising(module("dti.training.callbacks"), "plot_norms", KeyboardInterrupt()),
        may_change=("run/*",),
        desc="loaded pipe, KeyboardInterrupt while writing outputs: the pipe must be restored",
    )
    pp = pipe_unchanged("sd")

    def loaded_then_train(ws: Path, x: dict) -> Any:
        dti.load(pipe_for("sd"), P["run2"])
        try:
            return dti.train(**kw(ws, model=pipe_for("sd"), token="<my-hc>"))
        finally:
            dti.unload(pipe_for("sd"), "<my-hc>")

    add("api-train-pipe-loaded-concept", A, "any", api=loaded_then_train, post=pp, desc="train a token the pipe already has loaded")
    # resume
    add("api-resume-missing", A, R, api=lambda ws, x: dti.resume(str(ws / "nope")), desc="dti.resume(missing)")
    add(
        "api-resume-finished",
        A,
        "any",
        api=lambda ws, x: dti.resume(str(ws / "run")),
        prep=lambda ws: copy_run(P["run"], ws / "run"),
        may_change=("run/*",),
        desc="dti.resume(<finished run>)",
        note="the CLI says 'nothing to do'; the API raises dti.training.session.RunFinished",
    )
    add(
        "api-resume-lr",
        A,
        R,
        api=lambda ws, x: dti.resume(str(ws / "run"), lr=0.5),
        mention=("lr",),
        prep=lambda ws: unfinished_run(ws / "run"),
        desc="dti.resume(run, lr=0.5)",
    )
    add(
        "api-resume-steps-str",
        A,
        R,
        api=lambda ws, x: dti.resume(str(ws / "run"), steps="4"),
        mention=("steps",),
        prep=lambda ws: unfinished_run(ws / "run"),
        desc="dti.resume(run, steps='4')",
    )
    add(
        "api-resume-ok",
        A,
        OK,
        api=lambda ws, x: dti.resume(str(ws / "run")),
        may_change=("run/*", "run/*/*"),
        prep=lambda ws: unfinished_run(ws / "run"),
        desc="dti.resume(run)",
    )
    add(
        "api-resume-pipe-other-family",
        A,
        R,
        api=lambda ws, x: dti.resume(str(ws / "run"), pipe=pipe_for("sdxl")),
        prep=lambda ws: unfinished_run(ws / "run"),
        desc="dti.resume(sd run, pipe=<SDXL pipe>)",
    )
    add(
        "api-resume-pipe-not-pipe",
        A,
        R,
        api=lambda ws, x: dti.resume(str(ws / "run"), pipe="pipe"),
        prep=lambda ws: unfinished_run(ws / "run"),
        desc="dti.resume(run, pipe='pipe')",
    )

    # load / unload
    def ld(source: Callable[[Path], Any], **k: Any) -> Callable:
        def fn(ws: Path, x: dict) -> Any:
            c = dti.load(pipe_for("sd"), source(ws), **k)
            dti.unload(pipe_for("sd"), c.token)
            return c.token

        return fn

    for id, fn, expect, mention, desc in (
        ("api-load-ok", ld(lambda ws: P["run"]), OK, (), "dti.load(pipe, run)"),
        ("api-load-concept-object", ld(lambda ws: dti.Concept.load(P["concept"])), OK, (), "dti.load(pipe, Concept)"),
        ("api-load-rename", ld(lambda ws: P["run"], token="<other>"), OK, (), "token='<other>'"),
        ("api-load-rescale", ld(lambda ws: P["tirun"], rescale="mean"), OK, (), "rescale='mean'"),
        ("api-load-missing", ld(lambda ws: str(ws / "nope")), R, ("nope",), "missing path"),
        ("api-load-sdxl-on-sd", ld(lambda ws: P["xlrun"]), R, ("text_encoder",), "an SDXL concept onto SD"),
        ("api-load-flux-on-sd", ld(lambda ws: P["fluxrun"]), R, ("text_encoder",), "a FLUX concept onto SD"),
        ("api-load-bad-token", ld(lambda ws: P["run"], token="a b"), R, ("token",), "token='a b'"),
        ("api-load-token-empty", ld(lambda ws: P["run"], token=""), R, ("token",), "token=''"),
        ("api-load-token-word", ld(lambda ws: P["run"], token="dog"), R, ("dog",), "token='dog' (an existing word)"),
        ("api-load-token-special", ld(lambda ws: P["run"], token="<|endoftext|>"), R, ("endoftext",), "token='<|endoftext|>'"),
        ("api-load-rescale-bogus", ld(lambda ws: P["run"], rescale="mode"), R, ("rescale",), "rescale='mode'"),
        ("api-load-int-source", ld(lambda ws: 123), R, (), "source=123"),
        ("api-load-none-source", ld(lambda ws: None), R, (), "source=None"),
        ("api-load-bytes-source", ld(lambda ws: Path(P["concept"]).read_bytes()), R, (), "source=<the file's bytes>"),
        ("api-load-nan-concept", ld(lambda ws: nan_concept()), R, ("nan",), "a Concept object holding NaN"),
        ("api-load-int-concept", ld(lambda ws: int_concept()), R, (), "a Concept object holding int64 rows"),
    ):
        pp = pipe_unchanged("sd")
        add(id, A, expect, api=fn, mention=mention, post=pp, desc=desc)
    pp = pipe_unchanged("sd")

    def twice(ws: Path, x: dict) -> Any:
        dti.load(pipe_for("sd"), P["run"])
        try:
            dti.load(pipe_for("sd"), P["run"])
        finally:
            dti.unload(pipe_for("sd"), "<my-hd>")

    add("api-load-twice", A, R, api=twice, mention=("already",), post=pp, desc="the same concept loaded twice")
    pp = pipe_unchanged("sd")

    def unload_twice(ws: Path, x: dict) -> Any:
        dti.load(pipe_for("sd"), P["run"])
        dti.unload(pipe_for("sd"), "<my-hd>")
        dti.unload(pipe_for("sd"), "<my-hd>")

    add("api-unload-twice", A, R, api=unload_twice, post=pp, mention=("<my-hd>",), desc="unload the same token twice")
    add("api-load-not-a-pipe", A, R, api=lambda ws, x: dti.load("pipe", P["run"]), desc="dti.load('pipe', run)")
    add("api-load-none-pipe", A, R, api=lambda ws, x: dti.load(None, P["run"]), desc="dti.load(None, run)")
    add("api-load-no-args", A, R, api=lambda ws, x: dti.load(), desc="dti.load()")
    add(
        "api-unload-never-loaded",
        A,
        R,
        api=lambda ws, x: dti.unload(pipe_for("sd"), "<never>"),
        mention=("<never>",),
        desc="unload('<never>')",
    )
    add("api-unload-int", A, R, api=lambda ws, x: dti.unload(pipe_for("sd"), 5), desc="unload(pipe, 5)")
    add("api-unload-not-pipe", A, R, api=lambda ws, x: dti.unload(object(), "<my-hd>"), desc="unload(object(), '<my-hd>')")
    pp = pipe_unchanged("sd")
    add("api-unload-vocab-word", A, R, api=lambda ws, x: dti.unload(pipe_for("sd"), "dog"), post=pp, desc="unload(pipe, 'dog')")
    # Concept
    add("api-concept-load-missing", A, R, api=lambda ws, x: dti.Concept.load(ws / "nope.safetensors"), desc="Concept.load(missing)")
    add(
        "api-concept-load-foreign",
        A,
        R,
        api=lambda ws, x: dti.Concept.load(P["webui"]),
        mention=("convert", "dti concept"),
        desc="Concept.load(<A1111 file>)",
    )
    add("api-concept-load-int", A, R, api=lambda ws, x: dti.Concept.load(5), desc="Concept.load(5)")
    add(
        "api-concept-load-problems",
        A,
        OK,
        api=lambda ws, x: _problems_listed(BAD["dti-nan"]),
        desc="Concept.load(nan file, problems=[])",
    )

    def save_nan(ws: Path, x: dict) -> Any:
        nan_concept().save(ws / "nan.safetensors")

    def readback(ws: Path, res: Result) -> list:
        if res.code == 0 and (ws / "nan.safetensors").exists():
            try:
                dti.Concept.load(ws / "nan.safetensors")
            except dti.DTIError:
                return [("poor", "Concept.save wrote a file that dti itself refuses to read (NaN rows)")]
        return []

    add("api-concept-save-nan", A, R, api=save_nan, post=readback, desc="Concept(<NaN rows>).save(path)")
    add(
        "api-concept-save-to-dir",
        A,
        R,
        api=lambda ws, x: dti.Concept.load(P["concept"]).save(ws),
        mention=("folder", "directory"),
        desc="concept.save(<an existing folder>)",
    )
    add(
        "api-concept-save-under-file",
        A,
        R,
        api=lambda ws, x: dti.Concept.load(P["concept"]).save(ws / "f" / "c.safetensors"),
        prep=lambda ws: write(ws / "f", "x"),
        mention=("file",),
        desc="concept.save(<path under a file>)",
    )
    add(
        "api-concept-save-ok", A, OK, api=lambda ws, x: dti.Concept.load(P["concept"]).save(ws / "c.safetensors"), desc="concept.save(path)"
    )
    add(
        "api-concept-save-overwrites",
        A,
        "any",
        api=lambda ws, x: dti.Concept.load(P["concept"]).save(ws / "c.safetensors"),
        prep=lambda ws: write(ws / "c.safetensors", b"user file"),
        may_change=("c.safetensors",),
        note="Concept.save is a library call: replacing a path the caller names is its contract",
    )
    add(
        "api-encodervectors-3d",
        A,
        R,
        api=lambda ws, x: dti.EncoderVectors(__import__("torch").zeros(2, 2, 4)).width,
        desc="EncoderVectors(3-D tensor)",
    )
    add(
        "api-concept-rescaled-missing-encoder",
        A,
        R,
        api=lambda ws, x: dti.Concept.load(P["concept"]).rescaled({}),
        desc="concept.rescaled({})",
    )


def _problems_listed(path: str) -> Any:
    import dti

    problems: list[str] = []
    dti.Concept.load(path, problems=problems)
    if not problems:
        raise RuntimeError("Concept.load(problems=[]) recorded no problem for a NaN file")
    return problems


def nan_concept() -> Any:

    import dti

    c = dti.Concept.load(P["concept"])
    enc = c.encoders["text_encoder"]
    v = enc.vectors.clone()
    v[0, 0] = float("nan")
    return dti.Concept("<hn>", {"text_encoder": dti.EncoderVectors(v, enc.magnitude, enc.init, kind=enc.kind)}, dict(c.meta))


def int_concept() -> Any:
    import torch

    import dti

    c = dti.Concept.load(P["concept"])
    enc = c.encoders["text_encoder"]
    e = dti.EncoderVectors(enc.vectors, None, None, kind=enc.kind)
    e.vectors = (enc.vectors * 100).to(torch.int64)
    return dti.Concept("<hi>", {"text_encoder": e}, {})


# ====================================================================== signals & concurrency (subprocesses)
def start_train(ws: Path, out: str, *extra: str, steps: str = "400") -> subprocess.Popen:
    argv = [subst(a, {"ws": str(ws)}) for a in T("--checkpoint-every", "2", *extra, out=out, steps=steps)]
    return subprocess.Popen(
        [sys.executable, "-m", "dti", *argv],
        cwd=ws,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=sub_env(),
        start_new_session=True,
    )


def log_steps(run: Path) -> int:
    for log_path in (run / ".dti-overwrite" / "train_log.jsonl", run / "train_log.jsonl"):
        if log_path.is_file():
            try:
                return max(0, len([ln for ln in log_path.read_text().splitlines() if ln.strip()]) - 1)
            except OSError:
                return 0
    return 0


def wait_steps(run: Path, n: int, proc: subprocess.Popen, timeout: float = 180) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            return False
        if log_steps(run) >= n:
            return True
        time.sleep(0.1)
    return False


def finish(proc: subprocess.Popen, timeout: float = 120) -> Result:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += "\n[harness: the process did not stop within the timeout; killed]"
    return Result(code=proc.returncode, stdout=out, stderr=err)


def last_checkpoint(run: Path) -> int:
    steps = [int(m.group(1)) for p in run.rglob("step-*.pt") if (m := re.match(r"step-(\d+)\.pt", p.name))]
    return max(steps, default=0)


def resume_in_process(run: Path) -> Result:
    return run_cli(["train", "--resume", str(run), "--steps", str(max(last_checkpoint(run), log_steps(run)) + 2), "--quiet"])


def define_signals() -> None:
    A = "signals"

    def stop_and_resume(sig: int, double: bool = False) -> Callable:
        def fn(ws: Path, x: dict) -> Result:
            run = ws / "run"
            proc = start_train(ws, str(run))
            if not wait_steps(run, 3, proc):
                res = finish(proc, 5)
                res.issues.append(("poor", f"the run did not reach step 3 (exit {res.code})"))
                return res
            proc.send_signal(sig)
            if double:
                time.sleep(0.05)
                proc.send_signal(sig)
            res = finish(proc)
            hint = [ln for ln in stderr_lines(res.stderr) if "--resume" in ln]
            if hint and str(run) not in hint[0]:
                res.issues.append(("poor", f"the resume command names another folder: {hint[0][:120]}"))
            if (run / ".dti.lock").exists():
                res.issues.append(("poor", "the stopped run left its lock file"))
            again = resume_in_process(run)
            if again.code != 0:
                res.issues.append(
                    (
                        "poor" if again.code == 2 else "traceback" if "Traceback" in again.stderr else "poor",
                        f"resume after the stop failed (exit {again.code}): {(stderr_lines(again.stderr) or [''])[-1][:140]}",
                    )
                )
            elif not (run / "concept.safetensors").is_file():
                res.issues.append(("poor", "resume after the stop wrote no concept"))
            return res

        return fn

    add(
        "sig-sigterm-then-resume",
        A,
        "stop:143",
        custom=stop_and_resume(signal.SIGTERM),
        may_change=("*",),
        desc="SIGTERM after step 3 (exit 143 + resume command), then dti train --resume",
    )
    add(
        "sig-ctrl-c-then-resume",
        A,
        "stop:130",
        custom=stop_and_resume(signal.SIGINT),
        may_change=("*",),
        desc="SIGINT after step 3 (exit 130 + resume command), then dti train --resume",
    )
    add(
        "sig-double-ctrl-c-then-resume",
        A,
        "stop:130",
        custom=stop_and_resume(signal.SIGINT, double=True),
        may_change=("*",),
        desc="two SIGINTs 50 ms apart (stop at once), then dti train --resume",
    )

    def kill_then(action: str) -> Callable:
        def fn(ws: Path, x: dict) -> Result:
            run = ws / "run"
            proc = start_train(ws, str(run))
            ok = wait_steps(run, 3, proc)
            os.killpg(proc.pid, signal.SIGKILL)
            finish(proc, 10)
            if not ok:
                return Result(code=1, issues=[("poor", "the run did not reach step 3 before SIGKILL")])
            if action == "resume":
                return resume_in_process(run)
            return run_cli([subst(a, {"ws": str(ws)}) for a in T(out=str(run))])

        return fn

    add(
        "sig-sigkill-then-resume",
        A,
        "ok",
        custom=kill_then("resume"),
        may_change=("*",),
        desc="SIGKILL mid-run (stale lock left), then dti train --resume",
    )
    add(
        "sig-sigkill-then-fresh-train",
        A,
        "refuse",
        custom=kill_then("fresh"),
        may_change=("*",),
        mention=("--resume",),
        desc="SIGKILL mid-run, then the same dti train again (no --overwrite)",
    )

    def concurrent(second: str) -> Callable:
        def fn(ws: Path, x: dict) -> Result:
            run = ws / "run"
            proc = start_train(ws, str(run))
            if not wait_steps(run, 2, proc):
                res = finish(proc, 5)
                res.issues.append(("poor", "the first run did not start"))
                return res
            before = log_steps(run)
            if second == "overwrite":
                res = run_cli([subst(a, {"ws": str(ws)}) for a in T("--overwrite", out=str(run))])
            elif second == "resume":
                res = run_cli(["train", "--resume", str(run), "--quiet"])
            else:
                res = run_cli([subst(a, {"ws": str(ws)}) for a in T(out=str(run))])
            alive = proc.poll() is None
            proc.send_signal(signal.SIGTERM)
            first = finish(proc)
            if not alive:
                res.issues.append(("poor", f"the first run died while the second was refused (exit {first.code})"))
            elif first.code != 143:
                res.issues.append(
                    (
                        "poor",
                        f"the first run, stopped by SIGTERM afterwards, exited {first.code}: {last_line(first.stderr)}",
                    )
                )
            if log_steps(run) < before:
                res.issues.append(("data-loss", "the second run rewrote the first run's log"))
            return res

        return fn

    add(
        "sig-concurrent-overwrite",
        A,
        "refuse",
        custom=concurrent("overwrite"),
        may_change=("*",),
        mention=("another dti run", "lock"),
        desc="a second dti train --overwrite into the folder a live run is writing",
    )
    add(
        "sig-concurrent-same-folder",
        A,
        "refuse",
        custom=concurrent("fresh"),
        may_change=("*",),
        desc="a second dti train (no --overwrite) into the folder a live run is writing",
    )
    add(
        "sig-concurrent-resume",
        A,
        "refuse",
        custom=concurrent("resume"),
        may_change=("*",),
        mention=("another dti run", "lock"),
        desc="dti train --resume of a run that is still running",
    )

    def race(ws: Path, x: dict) -> Result:
        run = ws / "run"
        procs = [start_train(ws, str(run), "--seed", str(i), steps="3") for i in range(2)]
        results = [finish(p, 240) for p in procs]
        codes = sorted(r.code for r in results)
        res = Result(code=2 if codes == [0, 2] else 0, stderr="\n".join(r.stderr for r in results if r.code != 0) or "")
        if codes != [0, 2]:
            res.issues.append(("poor", f"two runs started at once into one new folder: exit codes {codes} (want one 0, one 2)"))
        if codes == [0, 0]:
            res.issues.append(("data-loss", "both runs finished into the same folder: one result silently overwrote the other"))
        loser = [r for r in results if r.code == 2]
        if loser:
            res.stderr = loser[0].stderr
        return res

    add(
        "sig-race-two-fresh-runs",
        A,
        "refuse",
        custom=race,
        may_change=("*",),
        desc="two dti train processes started together into one new folder",
    )

    stash: dict[str, Any] = {}

    def overwrite_prep(ws: Path) -> None:
        run = copy_run(P["run"], ws / "run")
        stash[str(ws)] = (user_files(run), concept_digest(run / "concept.safetensors"))

    def overwrite_term(ws: Path, x: dict) -> Result:
        run = ws / "run"
        users, old = stash[str(ws)]
        proc = start_train(ws, str(run), "--overwrite", "--seed", "9")
        if not wait_steps(run, 3, proc):
            res = finish(proc, 5)
            res.issues.append(
                ("poor", f"the overwrite run did not reach step 3 (exit {res.code}): {(stderr_lines(res.stderr) or [''])[-1][:120]}")
            )
            return res
        proc.send_signal(signal.SIGTERM)
        res = finish(proc)
        if concept_digest(run / "concept.safetensors") != old:
            res.issues.append(("data-loss", "the old concept was replaced by an overwrite run that was stopped"))
        res.issues += check_user_files(run, users)
        again = resume_in_process(run)
        if again.code != 0:
            res.issues.append(
                ("poor", f"resume of the stopped overwrite failed (exit {again.code}): {(stderr_lines(again.stderr) or [''])[-1][:140]}")
            )
        else:
            if concept_digest(run / "concept.safetensors") == old:
                res.issues.append(("poor", "the resumed overwrite finished but the old concept is still in place"))
            if (run / ".dti-overwrite").exists():
                res.issues.append(("poor", "the staging folder was left after the resumed overwrite finished"))
        res.issues += [(c, n + " (after the resumed overwrite)") for c, n in check_user_files(run, users)]
        return res

    add(
        "sig-sigterm-overwrite-then-resume",
        A,
        "stop:143",
        custom=overwrite_term,
        prep=overwrite_prep,
        may_change=(
            "run/*.*",
            "run/checkpoints/step-*",
            "run/snapshots/concept-*",
            "run/samples/step-*",
            "run/webui/my-hd*",
            "run/.dti-overwrite*",
            "run/.dti-overwrite/*",
        ),
        desc="SIGTERM during an --overwrite run: old results and user files intact; resume commits",
    )

    def early_term(ws: Path, x: dict) -> Result:
        run = ws / "run"
        proc = start_train(ws, str(run))
        time.sleep(4.0)
        proc.send_signal(signal.SIGTERM)
        first = finish(proc)
        res = run_cli([subst(a, {"ws": str(ws)}) for a in T(out=str(run))])
        res.issues.append(("good", f"first run, SIGTERM during start-up, exited {first.code}"))
        return res

    add(
        "sig-sigterm-during-startup-then-train",
        A,
        "ok",
        custom=early_term,
        may_change=("*",),
        desc="SIGTERM 4 s after start (model loading), then the same dti train again must not be blocked",
    )

    def gen_term(ws: Path, x: dict) -> Result:
        argv = [
            "generate",
            "a <my-hd> dog",
            "--concept",
            P["run"],
            "-n",
            "40",
            "--sample-steps",
            "4",
            "--resolution",
            "64",
            "--out",
            str(ws / "gen"),
        ]
        proc = subprocess.Popen(
            [sys.executable, "-m", "dti", *argv],
            cwd=ws,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=sub_env(),
            start_new_session=True,
        )
        time.sleep(9.0)
        proc.send_signal(signal.SIGTERM)
        res = finish(proc)
        if res.code in (-signal.SIGTERM, 143, 128 + signal.SIGTERM):
            res.issues.append(("good", f"generate stopped by SIGTERM (exit {res.code})"))
            res.code = 0
        return res

    add("sig-sigterm-generate", A, "any", custom=gen_term, may_change=(), desc="SIGTERM to dti generate mid-way: no partial PNGs")
    add(
        "sig-nonfinite-exit-1",
        A,
        "stop:1",
        argv=T("--steps", "6", "--max-bad-steps", "2"),
        patch=lambda ws: nan_loss(),
        may_change=("run/*",),
        desc="every loss NaN: exit 1 with the resume command",
    )
    add(
        "sig-nonfinite-snapshot-readable",
        A,
        "stop:1",
        argv=T("--steps", "6", "--max-bad-steps", "3", "--checkpoint-every", "1"),
        patch=lambda ws: nan_loss(),
        may_change=("run/*",),
        post=lambda ws, res: [
            ("poor", f"the 'last good concept' snapshot is unreadable: {why}")
            for p in (ws / "run" / "snapshots").glob("*.safetensors")
            if (why := _concept_problem(p))
        ],
    )


def _concept_problem(path: Path) -> str | None:
    import dti

    try:
        dti.Concept.load(path)
    except dti.DTIError as exc:
        return str(exc)[:120]
    return None


# ====================================================================== the new command line
def define_cli_changes() -> None:
    """The command line's renames and stricter parsing: each old spelling is refused in one line that
    names the new one, and the one seeds syntax works everywhere."""
    A = "cli"
    G = ["generate", "a <my-hd> dog", "--concept", "@run", "-n", "1", "--resolution", "32", "--out", "@ws/gen"]
    add("cli-generate-steps-renamed", A, "refuse", argv=[*G, "--steps", "1"], mention=("--sample-steps",))
    add(
        "cli-interpolate-steps-renamed",
        A,
        "refuse",
        argv=["interpolate", "@run", "@run2", "--steps", "3", "--no-grid", "--out", "@ws/b"],
        mention=("--blends",),
    )
    add(
        "cli-demo-sampler-steps-renamed",
        A,
        "refuse",
        argv=["demo", "--out", "@ws/demo", "--steps", "1", "--sampler-steps", "1", "--quiet"],
        mention=("--sample-steps",),
    )
    add("cli-train-validation-steps-renamed", A, "refuse", argv=T("--validation-steps", "1"), mention=("--sample-steps",))
    add("cli-train-foreign-flag", A, "refuse", argv=T("--learning_rate", "0.1"), mention=("--lr",))
    add("cli-train-abbreviated-flag", A, "refuse", argv=T("--step", "2"), mention=("did you mean --steps",))
    add("cli-generate-abbreviated-flag", A, "refuse", argv=[*G, "--sample", "1"], mention=("--sample",))
    add("cli-train-lr-above-1000", A, "refuse", argv=T("--lr", "1001"), mention=("--lr",))
    add("cli-train-lr-1000", A, "ok", argv=T("--lr", "1000"))
    for name, words in (("range", ["0-1"]), ("commas", ["0,1"]), ("words", ["0", "1"])):
        add(
            f"cli-train-validation-seeds-{name}",
            A,
            "ok",
            argv=T("--validation-seeds", *words, "--sample-steps", "1", "--validation-every", "0"),
        )
        add(
            f"cli-interpolate-seeds-{name}",
            A,
            "ok",
            argv=[
                "interpolate",
                "@run",
                "@run2",
                "--blends",
                "2",
                "--model",
                "@sd",
                "--sample-steps",
                "1",
                "--resolution",
                "32",
                "--out",
                "@ws/b",
                "--seeds",
                *words,
            ],
        )
    add("cli-train-validation-seeds-backwards", A, "refuse", argv=T("--validation-seeds", "3-1"), mention=("seed",))
    add("cli-train-validation-seeds-garbage", A, "refuse", argv=T("--validation-seeds", "0,x"), mention=("seed",))


# ====================================================================== runner
def shared_state() -> dict:
    out = {}
    for root in (CACHE, WORK / "fixtures"):
        for rel, info in snapshot(root, hashed=False).items():
            out[f"{root.name}/{rel}"] = info
    return out


def run_case(case: Case, keep: bool = False) -> dict:
    """Run one case in ``WORK/cases/<id>`` and judge it: a record with ``outcome`` (a class of
    :data:`CLASSES`, ``harness-error`` when the harness itself failed, or ``unavailable``), ``exit``,
    ``first_line`` and ``notes``. The workspace is removed when the case is good (or ``keep``)."""
    ws = WORK / "cases" / case.id
    if ws.exists():
        for mnt in reversed(mounts_under(ws)):
            unmount(mnt)
        with contextlib.suppress(Exception):
            _chmod_all(ws)
        shutil.rmtree(ws, ignore_errors=True)
    ws.mkdir(parents=True)
    extra = {"ws": str(ws)}
    record: dict[str, Any] = {"id": case.id, "area": case.area, "expected": case.expect, "desc": case.desc, "note": case.note}
    t0 = time.time()
    cwd = os.getcwd()
    try:
        if case.prep:
            got = case.prep(ws)
            if isinstance(got, dict):
                extra.update(got)
        argv = [subst(a, extra) for a in case.argv] if case.argv is not None else None
        record["argv"] = ["dti", *argv] if argv is not None else (case.desc or case.id)
        if case.post is not None and hasattr(case.post, "before"):
            case.post.before()
        before = snapshot(ws)
        shared_before = shared_state()
        PWNED.unlink(missing_ok=True)
        PWNED_EVAL.unlink(missing_ok=True)
        os.chdir(ws)
        limit = case.timeout or (420 if case.custom else 90)
        old_handler = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(limit)
        try:
            with contextlib.ExitStack() as stack:
                if case.patch:
                    stack.enter_context(case.patch(ws))
                if argv and argv[0] == "demo":
                    stack.enter_context(demo_guard())
                if case.custom:
                    res = case.custom(ws, extra)
                elif case.isolate:
                    res = run_sub_limited(argv or [], ws, timeout=case.timeout or 150)
                elif case.api:
                    res = run_api(lambda: case.api(ws, extra))
                else:
                    res = run_cli(argv or [])
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old_handler)
        os.chdir(cwd)
        res.seconds = time.time() - t0
        after = snapshot(ws)
        refused = res.code == 2 and case.expect in ("refuse", "any", "refuse-or-warn")
        res.issues += compare(before, after, ws, refused, case.may_change, case.skip_check)
        shared_after = shared_state()
        changed = sorted(k for k in set(shared_before) | set(shared_after) if shared_before.get(k) != shared_after.get(k))
        if changed:
            res.issues.append(("data-loss", f"a shared input changed: {', '.join(changed[:3])}"))
        if PWNED.exists() or PWNED_EVAL.exists():
            res.issues.append(("data-loss", "CODE EXECUTED: the malicious pickle ran its shell command"))
            PWNED.unlink(missing_ok=True)
            PWNED_EVAL.unlink(missing_ok=True)
        if case.post:
            res.issues += case.post(ws, res) or []
        cls, notes, first = classify(case, res)
        record.update(
            outcome=cls,
            exit=res.code,
            first_line=first[:400],
            notes=notes,
            seconds=round(res.seconds, 2),
            stderr_lines=len(stderr_lines(res.stderr)),
        )
        if cls != "good":
            record["stderr_tail"] = res.stderr[-3000:]
            record["stdout_tail"] = res.stdout[-1000:]
    except Unavailable as exc:
        record.update(outcome="unavailable", exit=None, first_line=str(exc), notes=[], seconds=round(time.time() - t0, 2))
    except Exception as exc:
        record.update(
            outcome="harness-error",
            exit=None,
            first_line=f"{type(exc).__name__}: {exc}"[:400],
            notes=[traceback.format_exc()[-1500:]],
            seconds=round(time.time() - t0, 2),
        )
    finally:
        os.chdir(cwd)
        for mnt in list(MOUNTS):
            if str(mnt).startswith(str(ws)):
                unmount(mnt)
                MOUNTS.remove(mnt)
        for mnt in reversed(mounts_under(ws)):
            unmount(mnt)
        if record.get("outcome") in ("good", "unavailable") and not keep:
            with contextlib.suppress(Exception):
                _chmod_all(ws)
            shutil.rmtree(ws, ignore_errors=True)
    return record


def _chmod_all(root: Path) -> None:
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            with contextlib.suppress(OSError):
                os.chmod(Path(dirpath) / name, 0o755)


def describe(record: dict) -> str:
    """A record as a few lines: what ran, the outcome, the first line and the notes (a failed test's message)."""
    argv = record.get("argv")
    argv = " ".join(_q(a) for a in argv) if isinstance(argv, list) else str(argv)
    lines = [
        f"{record['id']}: {record['outcome']} (expected {record['expected']}, exit {record.get('exit')})",
        f"  ran: {argv}",
        f"  first line: {record.get('first_line', '')}",
        *[f"  note: {n}" for n in record.get("notes", []) if n],
    ]
    if record.get("outcome") not in ("good", None) and record.get("stderr_tail"):
        lines += ["  stderr (tail):", *["    " + ln for ln in record["stderr_tail"].splitlines()[-15:]]]
    if record.get("note"):
        lines.append(f"  case note: {record['note']}")
    return "\n".join(lines)


# ====================================================================== report
def fault_group(rec: dict) -> str:
    """Which code is likely at fault, from the area and the message."""
    area, rid = rec["area"], rec["id"]
    if "harness" in rec["outcome"]:
        return "harness"
    if area == "signals":
        return "trainer/stopping/lock (src/dti/training/loop.py, stopping.py, lock.py)"
    if area == "photos":
        return "photo loading (src/dti/training/data.py)"
    if area == "config" or rid.startswith("flag"):
        return "settings validation (src/dti/training/config.py, core/settings.py, commands/)"
    if area == "model":
        return "model folder checks (src/dti/models/__init__.py, models/hub.py)"
    if area == "resume":
        return "resume / checkpoints (src/dti/training/session.py, checkpoints.py, run_folder.py)"
    if area == "overwrite" and "generate" in rid:
        return "generate outputs (src/dti/use/generate.py, core/files.py)"
    if area == "overwrite":
        return "run folder / overwrite (src/dti/training/run_folder.py, session.py)"
    if area == "concept" or rid.startswith("api-concept") or "api-load" in rid or "api-unload" in rid:
        return "concept files / loading (src/dti/concepts/, use/loading.py)"
    if area in ("disk", "output"):
        if "train" in rid or "resume" in rid:
            return "atomic writes in training (src/dti/training/, core/files.py)"
        if "generate" in rid:
            return "generate outputs (src/dti/use/generate.py, core/files.py)"
        if "demo" in rid:
            return "demo (src/dti/evaluation/demo.py)"
        if "interpolate" in rid:
            return "interpolate (src/dti/use/interpolate.py, concepts/blend.py)"
        return "format writing (src/dti/concepts/formats/, core/files.py)"
    return {
        "generate": "generate (src/dti/use/generate.py, commands/generate.py)",
        "interpolate": "interpolate (src/dti/use/interpolate.py, concepts/blend.py)",
        "inspect": "inspect (src/dti/use/inspection.py)",
        "convert": "convert / rescale (src/dti/use/convert.py, concepts/formats/)",
        "demo": "demo (src/dti/evaluation/demo.py, commands/demo.py)",
        "token": "token / initializer / family checks (src/dti/text/, training/, models/)",
        "api": "Python API (src/dti/training/session.py, use/loading.py, concepts/concept.py)",
        "cli": "CLI (src/dti/commands/)",
    }.get(area, area)


COMMAND = "DTI_ACCEPTANCE=all python -m pytest tests/acceptance -q"


def write_reports(records: list[dict], json_path: Path, started: str, seconds: float, machine: str = "") -> Path:
    """The records as JSON (``json_path``) and a summary beside it (``.md``): counts per class and area,
    and every case that is not good, grouped by the code likely at fault."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"started": started, "seconds": round(seconds, 1), "cases": records}, indent=1, default=str) + "\n")
    extra = [c for c in ("harness-error", "unavailable") if any(r["outcome"] == c for r in records)]
    classes = list(CLASSES) + extra
    counts = {c: sum(r["outcome"] == c for r in records) for c in classes}
    areas = sorted({r["area"] for r in records})
    lines = [
        f"# dti hostile-user acceptance suite: {started}",
        "",
        f"{len(records)} cases in {seconds / 60:.1f} min (`{COMMAND}`; details in `{json_path.name}`).",
        *([f"Machine: {machine}."] if machine else []),
        "",
        "| class | cases |",
        "|---|---|",
        *[f"| {c} | {n} |" for c, n in counts.items()],
        "",
        "| area | " + " | ".join(classes) + " | total |",
        "|---" * (len(classes) + 2) + "|",
    ]
    for area in areas:
        rs = [r for r in records if r["area"] == area]
        lines.append(f"| {area} | " + " | ".join(str(sum(r["outcome"] == c for r in rs)) for c in classes) + f" | {len(rs)} |")
    lines += ["", "## Every case that is not good", ""]
    bad = [r for r in records if r["outcome"] not in ("good", "unavailable")]
    groups: dict[str, list[dict]] = {}
    for r in bad:
        groups.setdefault(fault_group(r), []).append(r)
    for group, rs in sorted(groups.items(), key=lambda kv: -max(RANK.get(r["outcome"], 4) for r in kv[1])):
        lines += [f"### {group}", "", "| id | class | exit | argv / call | first stderr line | notes |", "|---|---|---|---|---|---|"]
        for r in sorted(rs, key=lambda r: (-RANK.get(r["outcome"], 4), r["id"])):
            argv = r.get("argv")
            argv = " ".join(_q(a) for a in argv) if isinstance(argv, list) else str(argv)
            lines.append(
                f"| {r['id']} | {r['outcome']} | {r.get('exit')} | `{_cell(argv)}` | {_cell(r.get('first_line', ''))} | "
                f"{_cell('; '.join(n for n in r.get('notes', []) if n))} |"
            )
        lines.append("")
    md = json_path.with_suffix(".md")
    md.write_text("\n".join(lines) + "\n")
    return md


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", "\\n")[:300]


def _q(arg: str) -> str:
    if arg == "" or re.search(r"[\s'\"<>|&;{}]", arg):
        return repr(arg)
    return arg


DEFINERS: dict[str, Callable[[], None]] = {
    "cli": define_cli,
    "photos": define_photos,
    "flags": define_flags,
    "token": define_tokens,
    "model": define_models,
    "config": define_config,
    "resume": define_resume,
    "overwrite": define_overwrite,
    "output": define_output,
    "disk": define_disk,
    "concept": define_concepts,
    "generate": define_generate,
    "interpolate": define_interpolate,
    "inspect": define_inspect,
    "convert": define_convert,
    "demo": define_demo,
    "api": define_api,
    "signals": define_signals,
}


def define_all() -> list[Case]:
    """Every case, defined once (needs no fixture: paths are @variables resolved when a case runs)."""
    if not CASES:
        for define in DEFINERS.values():
            define()
        define_cli_changes()
    return CASES
