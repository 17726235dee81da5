"""Helpers every page uses: refusals shown as one line, never a traceback on the page."""

from __future__ import annotations

import html
from collections.abc import Callable
from functools import wraps
from typing import Any

from dti.core.errors import DTIError, one_line


def say(text: str, kind: str = "ok") -> str:
    """A one-line message for a Markdown component (``kind``: ok / error / note)."""
    mark = {"ok": "", "error": "**error:** ", "note": "**note:** "}[kind]
    return f"{mark}{html.escape(one_line(text))}"


def refusal(exc: BaseException) -> str:
    if isinstance(exc, DTIError):
        return say(str(exc), "error")
    if isinstance(exc, OSError):
        return say(f"could not read or write {exc.filename or ''}: {exc.strerror or exc}", "error")
    return say(f"{type(exc).__name__}: {exc}", "error")


def guarded(n_outputs: int, message_at: int = 0) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap an event handler: a refusal fills the message output (index ``message_at``) and skips the others."""
    import gradio as gr

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(fn)
        def run(*args: Any) -> Any:
            try:
                return fn(*args)
            except Exception as exc:  # shown as one line on the page; the app keeps serving
                out = [gr.skip()] * n_outputs
                out[message_at] = refusal(exc)
                return tuple(out) if n_outputs > 1 else out[0]

        return run

    return wrap
