"""The one exception type for bad input at the boundary (CLI, files, models), and the one way to warn.

Its message is a single line that names the problem and the fix; the CLI prints it and exits
with status 2. The core assumes valid input and asserts its invariants instead.
Warnings are single lines too: ``warning: ...`` on stderr, printed by :func:`warn`.
"""

from __future__ import annotations

import sys


class DTIError(Exception):
    """Bad input a user can fix; ``str(err)`` is a one-line explanation with the fix."""


def warn(message: str) -> None:
    """Print one ``warning: message`` line on stderr (looked up at call time, so captured streams see it)."""
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
