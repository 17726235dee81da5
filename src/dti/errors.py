"""The one exception type for bad input at the boundary (CLI, files, models).

Its message is a single line that names the problem and the fix; the CLI prints it and exits
with status 2. The core assumes valid input and asserts its invariants instead.
"""


class DTIError(Exception):
    """Bad input a user can fix; ``str(err)`` is a one-line explanation with the fix."""
