"""Stopping a run cleanly: SIGTERM and Ctrl-C ask the loop to stop after the current step.

The loop then saves a checkpoint and the current concept and exits non-zero with the command
that continues the run. A second Ctrl-C stops at once (the last periodic checkpoint remains).
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import ClassVar


class RunStopped(Exception):
    """The run ended before its last step; ``str()`` is one line with what to do, ``exit_code``
    is the CLI's status (130 Ctrl-C, 143 SIGTERM, 1 a numerical failure)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StopRequests:
    """``with StopRequests() as stop:`` ... ``if stop.requested:``; handlers are restored on exit.
    Outside the main thread (signals cannot be caught there) it only ever reports no request."""

    SIGNALS: ClassVar[dict[int, tuple[str, int]]] = {signal.SIGINT: ("Ctrl-C", 130), signal.SIGTERM: ("SIGTERM", 143)}

    def __init__(self) -> None:
        self.requested: str | None = None
        self.exit_code = 0
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name, code = self.SIGNALS[signum]
        if self.requested and signum == signal.SIGINT:  # the second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested, self.exit_code = name, code
        print(f"\n{name}: stopping after this step to save a checkpoint (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()
