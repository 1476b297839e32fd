"""What a `%%pypi` / `%%conda` cell declares: its stacked header lines and its body.

    %%pypi --python 3.12 pandas
    %pypi --extra-index-url https://example.invalid/simple private-lib
    %conda -c conda-forge openmpi
    import pandas

Header lines after the first start with `%pypi`/`%conda` (or `%%pypi`/`%%conda`, which
people type); they add to one declaration until the first line of code. Options that belong
to the cell rather than the env (`--in`, `--out`, `--upgrade`) may appear on any header line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NoReturn

from nbenv.errors import UsageError
from nbenv.spec import EnvRequest, add_request_arguments, request_from_namespace

__all__ = ["CellDeclaration", "parse_cell", "parse_line"]

_HEADER = re.compile(r"^\s*%{1,2}(pypi|conda)\b(.*)$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class CellDeclaration:
    pypi: EnvRequest
    conda: tuple[tuple[str, ...], ...]  # argv of each conda header line (the conda issue)
    body: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    upgrade: bool = False

    @property
    def key(self) -> str:
        """Identifies the declared env in a notebook lock (independent of option order)."""
        request = self.pypi
        data = {
            "pypi": sorted(str(r) for r in request.requirements),
            "index_url": request.index_url,
            "extra_index_urls": list(request.extra_index_urls),
            "python": list(request.pythons),
            "pre": request.pre,
            "conda": [list(line) for line in self.conda],
        }
        text = json.dumps(data, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        parts = [str(r) for r in self.pypi.requirements]
        parts += [" ".join(line) for line in self.conda]
        return " ".join(parts) or "(nothing)"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"%{self.prog}: {message}")


def _names(text: str, option: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if not _IDENT.match(n)]
    if bad:
        raise UsageError(f"{option} takes variable names separated by commas, not {bad[0]!r}")
    return names


def _split(line: str, magic: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%{magic} {line.strip()}: {exc}") from None


def parse_line(magic: str, line: str) -> tuple[EnvRequest, argparse.Namespace]:
    """One `%pypi` header line: the env request plus the cell options."""
    parser = _Parser(prog=magic, add_help=False)
    add_request_arguments(parser)
    _cell_options(parser)
    ns, unknown = parser.parse_known_args(_split(line, magic))
    if unknown:
        raise UsageError(f"%{magic}: unknown option {unknown[0]!r}")
    return request_from_namespace(ns), ns


def _cell_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--in", dest="inputs", default="")
    parser.add_argument("--out", dest="outputs", default="")
    parser.add_argument("--upgrade", action="store_true")


def _conda_line(line: str) -> tuple[tuple[str, ...], argparse.Namespace]:
    """A `%conda` header line: the cell options taken out, the rest (checked by the conda
    grammar, nbenv.resolve.conda) kept in order."""
    parser = _Parser(prog="conda", add_help=False, allow_abbrev=False)
    _cell_options(parser)
    ns, rest = parser.parse_known_args(_split(line, "conda"))
    return tuple(rest), ns


def _merge(requests: Sequence[EnvRequest]) -> EnvRequest:
    def one(field: str) -> str | None:
        values = {getattr(r, field) for r in requests} - {None}
        if len(values) > 1:
            raise UsageError(f"the header lines give different --{field.replace('_', '-')} values")
        return values.pop() if values else None

    pythons = tuple(dict.fromkeys(p for r in requests for p in r.pythons))
    if len(pythons) > 1:
        raise UsageError("a cell's env has one Python: give --python once")
    if any(r.platforms for r in requests):
        raise UsageError("--platform is for `nbenv lock`; a cell runs on this machine")
    first = requests[0]
    return replace(
        first,
        requirements=tuple(q for r in requests for q in r.requirements),
        index_url=one("index_url"),
        extra_index_urls=tuple(dict.fromkeys(u for r in requests for u in r.extra_index_urls)),
        pythons=pythons,
        pre=any(r.pre for r in requests),
        name=one("name"),
    )


def parse_cell(magic: str, line: str, cell: str) -> CellDeclaration:
    """Parse `%%magic line` and the cell: stacked header lines, then the body."""
    lines = cell.splitlines(keepends=True)
    headers: list[tuple[str, str]] = [(magic, line)]
    index = 0
    while index < len(lines):
        match = _HEADER.match(lines[index])
        if match is None:
            if (
                lines[index].strip() == ""
                and index + 1 < len(lines)
                and _HEADER.match(lines[index + 1])
            ):
                index += 1  # a blank line between header lines is still the header
                continue
            break
        headers.append((match.group(1), match.group(2)))
        index += 1
    body = "".join(lines[index:])
    requests: list[EnvRequest] = []
    conda: list[tuple[str, ...]] = []
    inputs: list[str] = []
    outputs: list[str] = []
    upgrade = False
    for kind, text in headers:
        if kind == "conda":
            argv, ns = _conda_line(text)
            conda.append(argv)
            inputs += _names(ns.inputs, "--in")
            outputs += _names(ns.outputs, "--out")
            upgrade = upgrade or ns.upgrade
            continue
        request, ns = parse_line(kind, text)
        requests.append(request)
        inputs += _names(ns.inputs, "--in")
        outputs += _names(ns.outputs, "--out")
        upgrade = upgrade or ns.upgrade
    pypi = _merge(requests) if requests else EnvRequest()
    return CellDeclaration(
        pypi, tuple(conda), body, tuple(dict.fromkeys(inputs)), tuple(dict.fromkeys(outputs)),
        upgrade,
    )  # fmt: skip
