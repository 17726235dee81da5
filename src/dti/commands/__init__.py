"""The ``dti`` command: one module per verb, each adding its own parser (``VERB``, ``HELP``,
``add_parser``, ``run``). Thin: parse, call the library, print. Bad input exits 2 with one line that
names the flag (library errors name settings; here they are rendered as the flags that set them).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from dti.commands.flags import flag
from dti.commands.parser import EXIT_USAGE, Parser, unknown_flag
from dti.core.errors import DTIError, naming, one_line
from dti.training.stopping import RunStopped

#: The verbs, in the order ``dti --help`` lists them; each is a module of this package.
VERBS = ("train", "generate", "interpolate", "inspect", "convert", "rescale", "demo", "sweep", "evaluate", "ui")


def verbs() -> dict[str, ModuleType]:
    return {name: importlib.import_module(f"{__name__}.{name}") for name in VERBS}


def build_parser() -> argparse.ArgumentParser:
    from dti.core.version import __version__

    parser = Parser(prog="dti", description="Directional Textual Inversion: learn new words for text-to-image models.")
    parser.add_argument("--version", action="version", version=f"dti {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in verbs().values():
        module.add_parser(sub)
    return parser


def _refuse_empty_paths(args: argparse.Namespace) -> None:
    """An empty output path (an unset shell variable, most likely) would mean the current folder: refuse it."""
    for name in ("out", "output"):
        value = getattr(args, name, None)
        if isinstance(value, str) and not value.strip():
            raise DTIError(f"--{name} is empty; name the folder to write into, e.g. --{name} out/")


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments, or SystemExit with one line: an unknown flag is answered with the nearest one."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        verb = getattr(args, "command", None)
        print(unknown_flag(sub.choices[verb] if verb in sub.choices else parser, verb, extra), file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    return args


def _quiet_broken_pipe() -> int:
    """stdout went away (``dti inspect --json | head -1``): end quietly, as Unix tools do."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141  # 128 + SIGPIPE, what a shell reports for a tool stopped by a closed pipe


def quiet_libraries() -> None:
    """Keep diffusers', transformers' and torchao's log lines (a pipeline moved to the CPU in fp16, a prompt truncated,
    a component cast) off the command's stderr, where every line is dti's own: dti says what matters in its
    own words. A user's DIFFUSERS_VERBOSITY / TRANSFORMERS_VERBOSITY still wins."""
    # torchao, imported by diffusers whenever it is installed, logs a line per CUDA kernel library a CPU torch
    # cannot load, and torch a deprecation line per enum torchao registers: harmless, and not dti's to say
    # (bitsandbytes' CPU backend, imported the same way, a line about a kernel it could not download)
    for name in ("torchao", "torch.utils._pytree", "bitsandbytes", "kernels"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.ERROR)
    for library in ("diffusers", "transformers"):
        variable = f"{library.upper()}_VERBOSITY"
        if variable in os.environ:
            continue
        os.environ[variable] = "error"
        if library in sys.modules:  # imported before (dti called from Python): the variable is read only at import
            importlib.import_module(f"{library}.utils.logging").set_verbosity_error()


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    quiet_libraries()
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return int(exc.code or 0)
    module = verbs()[args.command]
    with naming(flag):
        try:
            _refuse_empty_paths(args)
            code = module.run(args)
            sys.stdout.flush()
            return code
        except BrokenPipeError:
            return _quiet_broken_pipe()
        except DTIError as exc:
            print(f"error: {one_line(str(exc))}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as exc:  # a full disk, a read-only place, a path under a file, met while writing
            where = f" {exc.filename}" if exc.filename else ""
            print(
                one_line(f"error: could not write{where}: {exc.strerror or exc}; free space or choose another output folder"),
                file=sys.stderr,
            )
            return EXIT_USAGE
        except RunStopped as stopped:
            print(f"stopped: {one_line(str(stopped))}", file=sys.stderr)
            return stopped.exit_code
        except KeyboardInterrupt:  # a second Ctrl-C: no time to save, but the last checkpoint is there
            hint = module.resume_hint(args) if hasattr(module, "resume_hint") else ""
            print(f"interrupted{hint}", file=sys.stderr)
            return 130
        except Exception as exc:
            if type(exc).__name__ == "SafetensorError" and "os error" in str(exc):  # safetensors' own I/O failure (a full disk)
                first = str(exc).splitlines()[0]
                print(f"error: could not write a file: {first}; free space or choose another output folder", file=sys.stderr)
                return EXIT_USAGE
            raise


if __name__ == "__main__":
    sys.exit(main())
