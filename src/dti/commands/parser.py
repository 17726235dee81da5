"""The help formatter of every `dti` command: shows a flag's default only when there is one to show."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's defaults formatter without ``(default: None)``, ``[]`` or ``False`` noise, and
    without repeating a default the help text already states (``[default: ...]``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default:" in text or action.default in (None, [], False, argparse.SUPPRESS) or action.nargs == 0:
            return text
        return super()._get_help_string(action)
