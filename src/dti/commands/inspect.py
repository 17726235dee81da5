"""``dti inspect``: what is in a concept file (ours or another tool's)."""

from __future__ import annotations

import argparse

from dti.commands.common import add_model
from dti.commands.flags import groups_of
from dti.commands.parser import whole

VERB = "inspect"
HELP = "norms, angle to the initializer, and nearest vocabulary words of a concept"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        VERB,
        help=HELP,
        description="Report a concept (ours or a foreign file): per encoder the vector norms against the vocabulary's, "
        "the angle to the initializer, and, with --model, the nearest vocabulary words by cosine and by distance.",
    )
    groups = groups_of(p)
    groups["inputs"].add_argument("concept", help="concept file or run folder, any supported format")
    groups["inputs"].add_argument("--token", default=None, help="name to use for a file that stores none")
    add_model(p, help="diffusers pipeline whose vocabulary to measure and list the nearest words of (hub id, local folder or dti-mini)")
    groups["outputs"].add_argument("--top", type=whole, default=8, help="nearest words to list per vector (with --model)")
    groups["outputs"].add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def run(args: argparse.Namespace) -> int:
    from dti.use.inspection import format_report, inspect, report_json

    report = inspect(args.concept, args.model, top=args.top, token=args.token, precision=args.precision, device=args.device)
    print(report_json(report) if args.json else format_report(report))
    return 0
