"""optimum-quanto's C++ extension, made ready before an ``--quantize int4`` run starts.

quanto unpacks its int4 weights on the CPU with a C++ extension it compiles on first use, through
``torch.utils.cpp_extension.load``, into a ``build`` folder inside its own installed package. Left to
itself that happens inside the first forward pass, silently, and two things go wrong:

- the first run spends a minute or more compiling with no word said;
- the build holds a lock file (``build/lock``) that every later process waits on, *forever*: a run
  killed while it held the lock (Ctrl-C during the first forward) leaves the file behind, and every
  later int4 run hangs without a line (measured here: two benchmark workers waited 40 minutes on a
  lock a killed worker had left).

:func:`ready` builds (or loads) the extension before the model is quantized, says so while it builds,
waits for a build another process is running, and turns a lock that outlived any build, or a build
that fails (no C++ compiler), into dti's one line with the fix.

On CUDA quanto compiles another extension with nvcc; which of its kernels a run needs depends on the
activations' dtype and the card, so this module does not build it ahead (not measured: no GPU lent).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dti.core.errors import DTIError, note

STALE_S = 15 * 60  # a lock older than this outlived any build (one build takes 1-3 min on 2 cores)
POLL_S = 2.0


def extension() -> Any:
    """quanto's CPU extension object (its ``lib`` builds or loads it)."""
    from optimum.quanto.library.extensions import get_extension

    return get_extension("quanto_cpp")


def ready(ext: Any | None = None, stale_s: float = STALE_S, poll_s: float = POLL_S) -> None:
    """Build or load quanto's CPU extension now; one line when that cannot work."""
    ext = extension() if ext is None else ext
    if getattr(ext, "_lib", None) is not None:
        return
    build = Path(ext.build_directory)
    lock = build / "lock"
    waited = False
    while lock.exists():
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:  # the build that held it just ended
            break
        if age > stale_s:
            raise DTIError(
                f"optimum-quanto's C++ extension (for --quantize int4) has been locked for {age / 60:.0f} minutes by {lock}: "
                "a run stopped while it was building leaves that file and every later run would wait on it; "
                "delete the file and run again",
                settings=["quantize"],
            )
        if not waited:
            note(f"waiting for another process to finish building optimum-quanto's C++ extension ({lock})")
            waited = True
        time.sleep(poll_s)
    if not (build / f"{ext.name}.so").exists():
        note("building optimum-quanto's C++ extension for --quantize int4 (once per installation, about a minute)")
    try:
        _ = ext.lib  # builds or loads it
    except Exception as exc:  # a compiler error, a missing compiler: the first line says which
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DTIError(
            f"optimum-quanto could not build its C++ extension for --quantize int4 ({first[:200]}); "
            "install a C++ compiler (g++) or use --quantize int8 or nf4, which need none",
            settings=["quantize"],
        ) from exc
