"""Shared helpers for nbenv benchmarks: stdlib only, no nbenv imports.

Benchmarks time whole processes (interpreter start included), because that is what a user
waits for. Helpers here: a clean environment for a peer tool, one timed subprocess run,
summary statistics, and a plain-text table.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "RunResult",
    "Summary",
    "clean_env",
    "format_table",
    "summarize",
    "tail",
    "timed_run",
]


@dataclass(frozen=True)
class RunResult:
    """One subprocess run: wall time of the whole process and what it printed."""

    argv: tuple[str, ...]
    seconds: float
    returncode: int | None  # None: killed after the timeout
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def timed_run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | None = None,
    stdin: str | None = None,
    timeout: float = 600.0,
) -> RunResult:
    """Run `argv` (a list, never a shell string) and time it with perf_counter."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            list(argv),
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            env=dict(env),
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        elapsed = time.perf_counter() - start
        return RunResult(tuple(argv), elapsed, None, _text(exc.stdout), _text(exc.stderr))
    except OSError as exc:  # executable missing, not runnable
        elapsed = time.perf_counter() - start
        return RunResult(tuple(argv), elapsed, 127, "", f"{type(exc).__name__}: {exc}")
    elapsed = time.perf_counter() - start
    return RunResult(tuple(argv), elapsed, proc.returncode, proc.stdout, proc.stderr)


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data


def clean_env(
    *,
    drop_prefixes: Iterable[str] = (),
    keep: Iterable[str] = (),
    set_vars: Mapping[str, str] | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A copy of the environment without variables starting with `drop_prefixes`.

    Names in `keep` survive the prefix filter (e.g. PIP_CERT: TLS trust, not resolution
    policy); `set_vars` are applied last.
    """
    prefixes = tuple(drop_prefixes)
    kept = set(keep)
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if k in kept or not k.startswith(prefixes)}
    env.update(set_vars or {})
    return env


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    min: float
    max: float


def summarize(samples: Sequence[float]) -> Summary | None:
    if not samples:
        return None
    return Summary(len(samples), statistics.median(samples), min(samples), max(samples))


def tail(text: str, lines: int = 15) -> str:
    """The last `lines` non-empty lines of `text`, for failure reports."""
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> str:
    """A plain-text table: the first `left` columns left-aligned, the rest right-aligned."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(w) if i < left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])
