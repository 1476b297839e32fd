"""Shared helpers for nbenv benchmarks: stdlib only, no nbenv imports.

Benchmarks time whole processes (interpreter start included), because that is what a user
waits for. Helpers here: a clean environment for a peer tool, one timed subprocess run,
summary statistics, and a plain-text table. Added with create.py: the ordinary user's
environment (`base_env`), nbenv run from the source tree (`source_tree_env`), finding uv,
and the formatting of medians and ratios.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "RunResult",
    "Summary",
    "base_env",
    "clean_env",
    "find_uv",
    "fmt_ratio",
    "fmt_summary",
    "format_table",
    "indent",
    "normalize",
    "progress",
    "ratio",
    "source_tree_env",
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
    # user + system CPU seconds of the process and of the children it waited for (worker
    # processes, uv's interpreter query); not of detached ones (nbenv's bytecode compiler)
    cpu: float | None = None

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
    """Run `argv` (a list, never a shell string) and time it with perf_counter; its CPU
    time comes from this process's RUSAGE_CHILDREN (runs are sequential)."""
    used = _children_cpu()
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
    cpu = _children_cpu() - used
    return RunResult(tuple(argv), elapsed, proc.returncode, proc.stdout, proc.stderr, cpu)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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


# -- added with create.py ------------------------------------------------------------------


def base_env(workdir: Path) -> dict[str, str]:
    """What an ordinary user has: no pip/uv/nbenv settings from this machine.

    The machine's pip configuration adds a local index, find-links and constraints;
    PIP_CONFIG_FILE=/dev/null and dropping every PIP_* variable removes them (PIP_CERT is
    TLS trust, not resolution policy, so it stays). UV_* would steer uv the same way.
    Jupyter dirs point into the workdir so no run touches the real home. (resolve.py has
    its own copy of this function.)
    """
    return clean_env(
        drop_prefixes=("PIP_", "UV_", "NBENV_", "JUPYTER_"),
        keep=("PIP_CERT",),
        set_vars={
            "PIP_CONFIG_FILE": "/dev/null",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",  # uv and nbenv make no such request
            "PIP_NO_INPUT": "1",
            "JUPYTER_DATA_DIR": str(workdir / "jupyter" / "data"),
            "JUPYTER_CONFIG_DIR": str(workdir / "jupyter" / "config"),
            "JUPYTER_RUNTIME_DIR": str(workdir / "jupyter" / "runtime"),
        },
    )


def source_tree_env(env: Mapping[str, str], root: Path, pycache: Path) -> dict[str, str]:
    """`env` for running nbenv from its source tree at `root` as if it were installed.

    With PYTHONDONTWRITEBYTECODE=1 (set on these machines) every run would recompile
    nbenv's modules; an installed nbenv has bytecode, as pip's and the dependencies' do.
    So the variable goes and the bytecode is cached outside the tree, in `pycache`; an
    untimed first run fills it.
    """
    out = dict(env)
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    out["PYTHONPYCACHEPREFIX"] = str(pycache)
    out["PYTHONPATH"] = str(root)
    return out


def find_uv() -> str:
    """uv next to this interpreter (the project venv's `bench` extra), else on PATH."""
    beside = Path(sys.executable).parent / "uv"
    if beside.exists():
        return str(beside)
    return shutil.which("uv") or "uv"


def fmt_summary(s: Summary | None, *, scale: float = 1.0, digits: int = 2) -> str:
    """`median [min-max]` (just the median for one sample), values multiplied by `scale`."""
    if s is None:
        return "-"
    if s.n == 1:
        return f"{s.median * scale:.{digits}f}"
    return f"{s.median * scale:.{digits}f} [{s.min * scale:.{digits}f}-{s.max * scale:.{digits}f}]"


def ratio(a: Summary | None, b: Summary | None) -> float | None:
    """a's median over b's, None when either is missing."""
    if a is None or b is None or b.median <= 0:
        return None
    return a.median / b.median


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def progress(text: str) -> None:
    """Progress on stderr, no newline added; the report goes to stdout."""
    print(text, end="", file=sys.stderr, flush=True)


def normalize(name: str) -> str:
    """A project name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines())
