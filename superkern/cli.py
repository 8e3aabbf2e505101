"""Command line: ``superkern <command>``. Each subcommand is a thin shim over one library
function and lives in ``superkern/commands/<name>.py`` with ``register(subparsers)``."""
from __future__ import annotations

import argparse
import importlib
import os
import select
import sys
import warnings
from typing import Optional, Sequence

# Subcommand modules, in help order. Each defines register(subparsers) -> None and sets
# func=handler(args) -> int on its parser.
COMMANDS = ("env", "probe", "compare", "train", "sweep", "fit", "figures")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="superkern",
        description="Superposition geometry of LM heads and the toy model of neural scaling.")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {__import__('superkern').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"superkern.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"superkern.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def _stdout_closed() -> bool:
    """True when stdout's reader went away (``superkern ... | head``). Then stdout is pointed
    at the null device, so that Python's flush at exit does not print a traceback."""
    try:  # the write end of a pipe without a reader polls as an error
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        if not any(ev & select.POLLERR for _, ev in poller.poll(0)):
            return False  # stdout is fine: the broken pipe was another one
    except (OSError, ValueError, AttributeError):  # no poll, or a stdout without a descriptor
        return False
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError):  # a stdout without a file descriptor
        pass
    return True


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # the subcommand's usage, not the top level's (argparse's parse_args gives that)
        words = list(sys.argv[1:] if argv is None else argv)
        command = getattr(args, "command", None) or ""
        # an option before the command is the top level's ('superkern --bogus probe')
        before = command in words and any(e in words[:words.index(command)] for e in extra)
        sub = parser if before else _subparsers(parser).get(command, parser)
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    shown = warnings.formatwarning  # a warning is one line naming the command, as errors are
    warnings.formatwarning = lambda message, *a, **k: (f"superkern {args.command}: warning: "
                                                       f"{message}\n")
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError as exc:
        if _stdout_closed():
            return 141  # quietly, as a command killed by SIGPIPE
        print(f"superkern {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:  # bad input, missing/unreadable file, full disk
        print(f"superkern {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:
        from superkern.backend import is_out_of_memory

        if not is_out_of_memory(exc):
            raise
        detail = str(exc).splitlines()[0] if str(exc) else "no detail"
        gpu = (args.command in ("probe", "train", "sweep")  # the commands with --device
               and (type(exc).__name__ == "OutOfMemoryError" or "CUDA" in str(exc)))
        print(f"superkern {args.command}: error: out of memory ({detail}); ask for less (fewer "
              "rows, top-k pairs or bins, a smaller --dpi or --max-instances"
              + (", or --device cpu to leave the GPU" if gpu else "") + ")", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = {"sweep": "; run the same command again to resume where it stopped",
                 "train": "; train saves its models only at the end (superkern sweep saves "
                          "each launch and resumes)"}
        print(f"\nsuperkern {args.command}: interrupted. Files already written are complete "
              f"(writes are atomic){again.get(args.command, '')}.", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = shown


if __name__ == "__main__":
    sys.exit(main())
