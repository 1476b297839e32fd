"""The requirement grammar shared by `%%pypi` and the CLI, parsed into a frozen EnvRequest.

SPEC... [--index-url URL] [--extra-index-url URL]... [--python X.Y]...
        [--platform TAG]... [--pre] [--name NAME]
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from packaging.requirements import InvalidRequirement, Requirement

from nbenv.errors import SpecError, UsageError
from nbenv.resolve.target import Target

__all__ = [
    "EnvRequest",
    "add_request_arguments",
    "parse_request",
    "parse_requirement",
    "request_from_namespace",
]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")  # also a PEP 751 lock name: no dots
# (at most 64 characters: names become file names, kernel names and lock file names)


@dataclass(frozen=True)
class EnvRequest:
    """What the user asked for, before any resolution."""

    requirements: tuple[Requirement, ...] = ()
    index_url: str | None = None  # None: the user's pip settings, then PyPI
    extra_index_urls: tuple[str, ...] = ()
    pythons: tuple[str, ...] = ()  # empty: the running interpreter's version
    platforms: tuple[str, ...] = ()  # empty: this machine
    pre: bool = False
    name: str | None = None
    targets: tuple[Target, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        pythons: Sequence[str | None] = self.pythons or (None,)
        platforms: Sequence[str | None] = self.platforms or (None,)
        targets = tuple(Target(py, plat) for py in pythons for plat in platforms)
        object.__setattr__(self, "targets", targets)

    def requirement_strings(self) -> tuple[str, ...]:
        return tuple(str(r) for r in self.requirements)


def parse_requirement(text: str) -> Requirement:
    """Parse one PEP 508 requirement; errors quote it and point at the bad spot."""
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        cause = exc.__cause__
        span = getattr(cause, "span", None)
        reason = getattr(cause, "message", None) or str(exc).splitlines()[0]
        position = span[1] if span else 0
        raise SpecError(text, position, reason) from None
    if requirement.url:
        raise SpecError(text, text.index("@"), "direct URL requirements are not supported yet")
    return requirement


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def add_request_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the shared request grammar to `parser` (positional SPECs plus options)."""
    parser.add_argument("specs", nargs="*", metavar="SPEC", help="PEP 508 requirements")
    parser.add_argument("--index-url", "-i", help="base URL of the package index")
    parser.add_argument(
        "--extra-index-url", action="append", default=[], help="more indexes (repeatable)"
    )
    parser.add_argument(
        "--python", action="append", default=[], metavar="X.Y", help="target Python (repeatable)"
    )
    parser.add_argument(
        "--platform",
        action="append",
        default=[],
        metavar="TAG",
        help="target wheel platform tag, e.g. manylinux_2_28_x86_64 (repeatable)",
    )
    parser.add_argument("--pre", action="store_true", help="allow pre-releases")
    parser.add_argument("--name", help="a human name for the environment")


def request_from_namespace(ns: argparse.Namespace) -> EnvRequest:
    if ns.name is not None and not _NAME.match(ns.name):
        raise UsageError(
            f"--name {ns.name!r}: use lowercase letters, digits, '_' and '-', "
            "starting with a letter or digit (at most 64)"
        )
    requirements = tuple(parse_requirement(spec) for spec in ns.specs)
    return EnvRequest(
        requirements=requirements,
        index_url=ns.index_url,
        extra_index_urls=tuple(ns.extra_index_url),
        pythons=tuple(dict.fromkeys(ns.python)),
        platforms=tuple(dict.fromkeys(ns.platform)),
        pre=bool(ns.pre),
        name=ns.name,
    )


def parse_request(argv: Sequence[str]) -> EnvRequest:
    """Parse magic or CLI arguments (already split into words) into an EnvRequest."""
    parser = _Parser(prog="nbenv", add_help=False)
    add_request_arguments(parser)
    ns, unknown = parser.parse_known_args(list(argv))
    if unknown:
        raise UsageError(f"Unknown option {unknown[0]!r}")
    return request_from_namespace(ns)
