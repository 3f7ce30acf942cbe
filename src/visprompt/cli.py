"""The ``visprompt`` command line: one entry point, one module per subcommand under ``visprompt.commands``.

``main(argv)`` takes the argument list (tests call it directly) and returns the exit status. A
:class:`~visprompt.errors.VispromptError` (bad config, missing data or weights, unknown name) is printed as
one ``error: ...`` line with exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from visprompt import __version__
from visprompt.errors import VispromptError

# Subcommand modules in --help order, each with ``add_parser(subparsers)`` (which sets ``func``) and
# ``run(args) -> int``.
COMMAND_MODULES = (
    "visprompt.commands.demo",
    "visprompt.commands.train",
    "visprompt.commands.eval",
    "visprompt.commands.predict",
    "visprompt.commands.audit",
    "visprompt.commands.sweep",
    "visprompt.commands.report",
    "visprompt.commands.data",
    "visprompt.commands.cache",
    "visprompt.testbed.command",
    "visprompt.commands.config",
    "visprompt.commands.methods",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visprompt",
        description="Prompt learning on a frozen CLIP under noisy labels (VisPrompt and baselines).",
    )
    parser.add_argument("--version", action="version", version=f"visprompt {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("visprompt").setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    _setup_logging(args.verbose, args.quiet)
    previous = _terminate_as_interrupt()
    try:
        return int(args.func(args) or 0)
    except VispromptError as exc:
        print(f"error: {error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (`visprompt methods | head`): not a failure
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            raise
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:  # main() called in-process (tests, notebooks) leaves the host's handler as it was
            signal.signal(signal.SIGTERM, previous)


def _terminate_as_interrupt() -> signal.Handlers | None:
    """Let ``kill PID`` (SIGTERM) stop a command the way Ctrl-C does: runs in flight are marked, a sweep stops its
    Ray tasks and its own Ray instance, locks are released. A background job cannot get Ctrl-C (the shell ignores
    SIGINT for it), so SIGTERM is how one stops ``visprompt sweep ... &``."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:  # the host installed its own: leave it
        return None
    signal.signal(signal.SIGTERM, _raise_interrupt)
    return previous


def _raise_interrupt(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise KeyboardInterrupt


# Failures of the machine or the user's folders, not of visprompt: reported as one line, like user errors.
_ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.ENAMETOOLONG, errno.EMFILE}
)


def os_error_line(exc: OSError) -> str:
    """``<file>: <reason>`` for an OSError (the file it names, else its message)."""
    where = exc.filename if exc.filename is not None else ""
    reason = exc.strerror or str(exc)
    hint = " (free some space, or write elsewhere with --out)" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return f"{where}: {reason}{hint}" if where else f"{reason}{hint}"


def error_line(exc: BaseException) -> str:
    """The one-line message of ``exc``, also when torch re-raised it from a DataLoader worker.

    torch rebuilds a worker's exception with "Caught X in DataLoader worker process k." and the worker's
    traceback as its message; the original message is then the traceback's last line, after "module.X: ".
    """
    text = str(exc)
    if "\nOriginal Traceback" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    prefix = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    return last.removeprefix(prefix) if last.startswith(prefix) else last.partition(": ")[2] or last


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
