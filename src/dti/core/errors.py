"""The one exception type for bad input at the boundary (CLI, files, models), and the one way to warn.

Its message is a single line that names the problem and the fix; the CLI prints it and exits
with status 2. A message that names a setting writes it as ``{name}`` and lists it in ``settings``
(other braces are literal): the library shows the setting's name (``steps``), the command line
renders it as the flag that sets it (``--steps``), so an error reads right wherever it surfaces. The core assumes
valid input and asserts its invariants instead. Warnings are single lines too: ``warning: ...``
on stderr, printed by :func:`warn`.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Callable, Iterator, Sequence

#: How messages name a setting: the library says its name; the command line installs its flags (:func:`naming`).
_namer: Callable[[str], str] = str


class Line:
    """A line for the user that may name settings as ``{name}`` (a warning, a hint in a report)."""

    def __init__(self, message: str, *, settings: Sequence[str] = ()) -> None:
        self.message = message
        self.settings = tuple(settings)

    def render(self, name: Callable[[str], str] | None = None) -> str:
        """The message with each setting it names written by ``name`` (default: as :func:`naming` says)."""
        if not self.settings:
            return self.message
        name = name or _namer
        pattern = re.compile(r"\{(" + "|".join(map(re.escape, self.settings)) + r")\}")
        return pattern.sub(lambda m: name(m.group(1)), self.message)

    def __str__(self) -> str:
        return self.render()


class DTIError(Line, Exception):
    """Bad input a user can fix; ``str(err)`` is a one-line explanation with the fix."""

    def __init__(self, message: str, *, settings: Sequence[str] = ()) -> None:
        Exception.__init__(self, message)
        Line.__init__(self, message, settings=settings)

    def __str__(self) -> str:
        return self.render()

    def within(self, prefix: str) -> DTIError:
        """The same refusal said of a part of something larger (``"subject dog: "``), its settings kept."""
        return DTIError(prefix + self.message, settings=self.settings)


@contextlib.contextmanager
def naming(namer: Callable[[str], str]) -> Iterator[None]:
    """Within the body, messages name settings by ``namer`` (the command line: each setting's flag)."""
    global _namer
    before, _namer = _namer, namer
    try:
        yield
    finally:
        _namer = before


def setting_error(message: str, *settings: str) -> DTIError:
    """A :class:`DTIError` about ``settings``, each written ``{name}`` in ``message``."""
    return DTIError(message, settings=settings)


def one_line(text: str) -> str:
    """``text`` as one screen line: a control character (a newline in a file name) written as its escape."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def note(message: object) -> None:
    """Print one ``note: message`` line on stderr: something the run decided that the user should know (not a problem)."""
    print(f"note: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def warn(message: object) -> None:
    """Print one ``warning: message`` line on stderr (looked up at call time, so captured streams see it);
    a :class:`Line` as message names its settings as :func:`naming` says."""
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
