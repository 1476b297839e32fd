"""`nbenv` command line (also `jupyter nbenv`). Thin: parse, call the core, print."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from nbenv import __version__
from nbenv.errors import NbenvError, UsageError
from nbenv.net.auth import redact
from nbenv.report import NullReporter, Reporter, TerminalReporter
from nbenv.resolve.cache import CachePolicy
from nbenv.spec import add_request_arguments, request_from_namespace

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nbenv",
        description="Isolated, locked environments for notebooks and cells.",
    )
    parser.add_argument("--version", action="version", version=f"nbenv {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    lock = commands.add_parser(
        "lock",
        help="resolve requirements into a pylock.toml",
        description="Resolve requirements into a PEP 751 pylock.toml, printed or written "
        "with -o. --python and --platform may be repeated to lock several targets at once.",
    )
    add_request_arguments(lock)
    lock.add_argument("-o", "--output", type=Path, help="write the lock to this file")
    lock.add_argument("--json", action="store_true", help="print a JSON summary instead")
    cache = lock.add_mutually_exclusive_group()
    cache.add_argument("--refresh", action="store_true", help="refetch index pages")
    cache.add_argument("--offline", action="store_true", help="use only the local cache")
    return parser


def _lock(ns: argparse.Namespace, reporter: Reporter) -> int:
    from nbenv.lock import build_lock, write_lock
    from nbenv.resolve.pypi import resolve

    request = request_from_namespace(ns)
    if not request.requirements:
        raise UsageError("nbenv lock: give at least one requirement, e.g. `nbenv lock pandas`")
    policy = (
        CachePolicy.OFFLINE
        if ns.offline
        else CachePolicy.REFRESH
        if ns.refresh
        else CachePolicy.DEFAULT
    )
    resolutions = resolve(request, policy=policy, reporter=reporter)
    lock = build_lock(resolutions, request)
    if ns.output is not None:
        write_lock(lock, ns.output)
    if ns.json:
        summary = lock.to_summary()
        if ns.output is not None:
            summary["path"] = str(ns.output)
        print(json.dumps(summary, indent=2))
    elif ns.output is None:
        sys.stdout.write(lock.dumps())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    reporter: Reporter = NullReporter()
    try:
        ns = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        if ns.command is None:
            parser.print_help()
            return 0
        if sys.stderr.isatty():
            reporter = TerminalReporter(sys.stderr)
        return _lock(ns, reporter)
    except UsageError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except NbenvError as exc:
        _close(reporter)
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _close(reporter)
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        _close(reporter)


def _close(reporter: Reporter) -> None:
    if isinstance(reporter, TerminalReporter):
        reporter.close()
