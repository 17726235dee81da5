"""``dti ui``: the local web app (New word, Queue, Words, Play, Evaluate) over a workspace folder.
gradio is imported only here and in :mod:`dti.ui`, so dti works without it."""

from __future__ import annotations

import argparse
import importlib.util

from dti.core.errors import DTIError

VERB = "ui"
HELP = "a local web app: train words from photos in a queue, look at them, blend them, evaluate them"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        VERB,
        help=HELP,
        description='Serve the dti app on 127.0.0.1 (offline; needs pip install "dti[ui]"). Everything it makes lives in the '
        "workspace folder: photos/, runs/, models/ (local diffusers folders), evaluations/, and .ui/queue.json (the queue; "
        "closing the app loses nothing, and the next start continues it).",
    )
    p.add_argument("--workspace", default="dti-workspace", help="the folder the app works in [default: dti-workspace]")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; any but a local one needs --auth [default: 127.0.0.1]")
    p.add_argument("--port", type=int, default=7860, help="port [default: 7860]")
    p.add_argument("--auth", metavar="USER:PASSWORD", help="ask for this user and password (required with another --host)")
    p.add_argument("--no-worker", dest="worker", action="store_false", help="serve the pages without running the queue")
    return p


def run(args: argparse.Namespace) -> int:
    from dti.ui.safety import check_free, check_host, check_port
    from dti.ui.workspace import Workspace

    auth = check_host(args.host, args.auth)
    port = check_port(args.port)
    check_free(args.host, port)
    if importlib.util.find_spec("gradio") is None:
        raise DTIError('dti ui needs gradio: pip install "dti[ui]"')
    workspace = Workspace(args.workspace).create()
    from dti.ui.app import serve

    print(f"dti ui: http://{'[' + args.host + ']' if ':' in args.host else args.host}:{port}/ (workspace {workspace.root}; Ctrl-C to end)")
    try:
        serve(workspace, args.host, port, auth, start_worker=args.worker)
    except OSError as exc:  # the port was taken meanwhile (gradio's own message is long)
        reason = exc.strerror or str(exc).split(". ")[0]
        raise DTIError(f"cannot serve on {args.host}:{port}: {reason}; choose another --port") from None
    return 0
