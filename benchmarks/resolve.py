#!/usr/bin/env python3
"""Resolution benchmark: nbenv vs pip vs uv on real requirement sets, side by side.

    .venv/bin/python benchmarks/resolve.py [--sets A,B,C] [--runs 5] [--tools nbenv,pip,uv]
                                           [--modes cold,warm] [--json OUT]

Each tool resolves each set against the same index for the running Python on this
platform; the wall time of the whole process is measured. `cold` runs get a fresh, empty
cache every run; `warm` runs reuse one cache primed by an untimed run. Runs are interleaved
(round by round, tool order rotated each round) so drift in the machine or the network hits
every tool alike. See benchmarks/README.md for what is measured and the caveats.

Stdlib only: this script must run before nbenv itself works.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _harness import (
    RunResult,
    Summary,
    base_env,
    find_uv,
    fmt_ratio,
    fmt_summary,
    format_table,
    indent,
    normalize,
    progress,
    ratio,
    summarize,
    tail,
    timed_run,
)

ROOT = Path(__file__).resolve().parent.parent
PYPI = "https://pypi.org/simple"
# The full version: with "3.11" uv assumes 3.11.0 and skips releases that declare
# Requires-Python >=3.11.5 (soupsieve 4.x on this index), so it would disagree with pip.
PY_VERSION = ".".join(str(n) for n in sys.version_info[:3])

SETS: dict[str, tuple[str, ...]] = {
    "A": ("requests",),
    "B": ("pandas", "scikit-learn", "matplotlib"),
    "C": ("jupyterlab",),
}
TOOLS = ("nbenv", "pip", "uv")
MODES = ("cold", "warm")
GOAL_PIP_COLD = 1.0  # nbenv cold median must be below pip's cold median on every set
GOAL_UV_WARM = 1.5  # nbenv warm median must be within 1.5x of uv's warm median

Versions = dict[str, str]  # normalized project name -> version


# --------------------------------------------------------------------------- tools


@dataclass(frozen=True)
class Invocation:
    argv: list[str]
    env: dict[str, str]
    stdin: str | None = None
    cwd: str | None = None


@dataclass
class Tool:
    name: str
    index_url: str
    workdir: Path

    def invocation(self, specs: Sequence[str], cache: Path, scratch: Path, mode: str) -> Invocation:
        raise NotImplementedError

    def versions(self, result: RunResult, scratch: Path) -> Versions:
        raise NotImplementedError

    def version_line(self) -> str:
        raise NotImplementedError


@dataclass
class Nbenv(Tool):
    refresh_warm: bool = True
    extra_args: tuple[str, ...] = ()

    def invocation(self, specs: Sequence[str], cache: Path, scratch: Path, mode: str) -> Invocation:
        argv = [sys.executable, "-m", "nbenv", "lock", "--json", "--index-url", self.index_url]
        if mode == "warm" and self.refresh_warm:
            argv.append("--refresh")  # revalidate index pages, as pip and uv do when warm
        argv += [*self.extra_args, *specs]
        env = base_env(self.workdir)
        env["NBENV_HOME"] = str(cache)
        # nbenv runs from the source tree, where PYTHONDONTWRITEBYTECODE=1 would make every
        # run recompile its modules; an installed nbenv has bytecode, as pip's and its
        # dependencies' do here. Cache it outside the tree; the untimed priming runs fill it.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(self.workdir / "pycache")
        env["PYTHONPATH"] = str(ROOT)
        return Invocation(argv, env, cwd=str(ROOT))

    def versions(self, result: RunResult, scratch: Path) -> Versions:
        summary = json.loads(result.stdout)
        return {normalize(p["name"]): str(p["version"]) for p in summary["packages"]}

    def version_line(self) -> str:
        init = ROOT / "nbenv" / "__init__.py"
        found = re.search(r'__version__ = "([^"]+)"', init.read_text()) if init.exists() else None
        return f"nbenv {found.group(1) if found else '?'} (source tree {ROOT})"


@dataclass
class Pip(Tool):
    def invocation(self, specs: Sequence[str], cache: Path, scratch: Path, mode: str) -> Invocation:
        argv = [
            sys.executable, "-m", "pip", "install",
            "--dry-run", "--ignore-installed", "--quiet",
            "--report", str(scratch / "pip-report.json"),
            "--cache-dir", str(cache),
            "--index-url", self.index_url,
            *specs,
        ]  # fmt: skip
        return Invocation(argv, base_env(self.workdir))

    def versions(self, result: RunResult, scratch: Path) -> Versions:
        report = json.loads((scratch / "pip-report.json").read_text())
        return {
            normalize(item["metadata"]["name"]): item["metadata"]["version"]
            for item in report["install"]
        }

    def version_line(self) -> str:
        env = base_env(self.workdir)
        return timed_run([sys.executable, "-m", "pip", "--version"], env=env).stdout.strip()


_UV_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


@dataclass
class Uv(Tool):
    uv: str = "uv"

    def invocation(self, specs: Sequence[str], cache: Path, scratch: Path, mode: str) -> Invocation:
        argv = [
            self.uv, "pip", "compile", "-",
            "--no-config",  # no uv.toml / pyproject settings; UV_* are dropped from the env
            "--python", sys.executable, "--python-version", PY_VERSION,
            "--cache-dir", str(cache),
            "--index-url", self.index_url,
            "--no-header", "--no-annotate", "--quiet",
        ]  # fmt: skip
        return Invocation(argv, base_env(self.workdir), stdin="\n".join(specs) + "\n")

    def versions(self, result: RunResult, scratch: Path) -> Versions:
        pins = (_UV_PIN.match(line.strip()) for line in result.stdout.splitlines())
        return {normalize(m.group(1)): m.group(2) for m in pins if m}

    def version_line(self) -> str:
        return timed_run([self.uv, "--version"], env=base_env(self.workdir)).stdout.strip()


# --------------------------------------------------------------------------- running


@dataclass
class Cell:
    """Everything measured for one tool x set x mode."""

    seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@dataclass
class Bench:
    tools: dict[str, Tool]
    sets: dict[str, tuple[str, ...]]
    modes: tuple[str, ...]
    runs: int
    workdir: Path
    timeout: float
    cells: dict[tuple[str, str, str], Cell] = field(default_factory=dict)
    records: list[dict[str, object]] = field(default_factory=list)
    versions: dict[tuple[str, str], Versions] = field(default_factory=dict)
    unstable: dict[tuple[str, str], list[Versions]] = field(default_factory=dict)
    broken: dict[tuple[str, str], str] = field(default_factory=dict)  # tool, set -> why

    def warm_cache(self, tool: str, set_name: str) -> Path:
        return self.workdir / "warm" / f"{tool}-{set_name}"

    def once(
        self, tool: str, set_name: str, mode: str, cache: Path, label: str
    ) -> tuple[RunResult, Versions | None, str | None]:
        """One run; returns the result, the chosen versions, and why it failed (if it did)."""
        scratch = self.workdir / "scratch" / f"{tool}-{set_name}-{label}"
        scratch.mkdir(parents=True, exist_ok=True)
        inv = self.tools[tool].invocation(self.sets[set_name], cache, scratch, mode)
        result = timed_run(
            inv.argv, env=inv.env, cwd=inv.cwd, stdin=inv.stdin, timeout=self.timeout
        )
        versions: Versions | None = None
        why: str | None = None
        if result.returncode is None:
            why = f"timed out after {self.timeout:.0f} s"
        elif not result.ok:
            why = f"exit status {result.returncode}"
        else:
            try:
                versions = self.tools[tool].versions(result, scratch)
            except (ValueError, KeyError, TypeError, OSError) as exc:
                why = f"could not read its output: {type(exc).__name__}: {exc}"
            else:
                if not versions:
                    why = "its output named no packages"
        if why:
            detail = tail(result.stderr) or tail(result.stdout) or "(no output)"
            why = f"{why}\n    $ {' '.join(inv.argv)}\n" + indent(detail, "    | ")
        shutil.rmtree(scratch, ignore_errors=True)
        return result, versions, why

    def note_versions(self, tool: str, set_name: str, versions: Versions) -> None:
        key = (tool, set_name)
        first = self.versions.setdefault(key, versions)
        if versions != first and versions not in self.unstable.setdefault(key, []):
            self.unstable[key].append(versions)

    def prime(self) -> None:
        """Untimed first runs into the warm caches; a tool that fails here is skipped."""
        for set_name in self.sets:
            for tool in self.tools:
                cache = self.warm_cache(tool, set_name)
                cache.mkdir(parents=True, exist_ok=True)
                progress(f"prime  {set_name} {tool:<5} ")
                result, versions, why = self.once(tool, set_name, "cold", cache, "prime")
                if why:
                    seen = {_gist(w) for (t, _), w in self.broken.items() if t == tool}
                    self.broken[(tool, set_name)] = why
                    progress(f"FAILED ({result.seconds:.2f} s)\n")
                    if _gist(why) not in seen:
                        print(f"  {tool} failed on set {set_name}: {why}", file=sys.stderr)
                    continue
                assert versions is not None
                self.note_versions(tool, set_name, versions)
                progress(f"{result.seconds:6.2f} s  ({len(versions)} packages)\n")

    def measure(self) -> None:
        names = list(self.tools)
        for rnd in range(self.runs):
            order = names[rnd % len(names) :] + names[: rnd % len(names)]
            for set_name in self.sets:
                for mode in self.modes:
                    progress(f"run {rnd + 1}/{self.runs}  {set_name} {mode:<4} ")
                    for tool in order:
                        if (tool, set_name) in self.broken:
                            continue
                        self.timed(rnd, tool, set_name, mode)
                    progress("\n")

    def timed(self, rnd: int, tool: str, set_name: str, mode: str) -> None:
        if mode == "cold":
            cache = self.workdir / "cold" / f"{tool}-{set_name}-{rnd}"
            shutil.rmtree(cache, ignore_errors=True)
            cache.mkdir(parents=True)
        else:
            cache = self.warm_cache(tool, set_name)
        result, versions, why = self.once(tool, set_name, mode, cache, f"{mode}-{rnd}")
        if mode == "cold":
            shutil.rmtree(cache, ignore_errors=True)
        cell = self.cells.setdefault((tool, set_name, mode), Cell())
        self.records.append(
            {
                "tool": tool,
                "set": set_name,
                "mode": mode,
                "round": rnd,
                "seconds": result.seconds,
                "ok": why is None,
                "returncode": result.returncode,
                "packages": len(versions) if versions else None,
            }
        )
        if why:
            cell.failures.append(why)
            progress(f" {tool} FAILED")
            return
        assert versions is not None
        cell.seconds.append(result.seconds)
        self.note_versions(tool, set_name, versions)
        progress(f" {tool} {result.seconds:.2f}")

    def summary(self, tool: str, set_name: str, mode: str) -> Summary | None:
        cell = self.cells.get((tool, set_name, mode))
        return summarize(cell.seconds) if cell else None


# --------------------------------------------------------------------------- reporting


def timing_table(bench: Bench) -> str:
    header = ["set", "mode", "nbenv s", "pip s", "uv s", "nbenv/pip", "nbenv/uv"]
    rows = []
    for set_name in bench.sets:
        for mode in bench.modes:
            nb, pip, uv = (bench.summary(t, set_name, mode) for t in TOOLS)
            rows.append(
                [
                    set_name,
                    mode,
                    fmt_summary(nb),
                    fmt_summary(pip),
                    fmt_summary(uv),
                    fmt_ratio(ratio(nb, pip)),
                    fmt_ratio(ratio(nb, uv)),
                ]
            )
    return format_table(header, rows, left=2)


def compare_versions(bench: Bench, set_name: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The tools that produced a resolution, and {package: {tool: version}} where they differ."""
    present = [t for t in bench.tools if (t, set_name) in bench.versions]
    chosen = {t: bench.versions[(t, set_name)] for t in present}
    names = sorted({n for v in chosen.values() for n in v})
    diffs: dict[str, dict[str, str]] = {}
    for name in names:
        per_tool = {t: chosen[t].get(name, "(absent)") for t in present}
        if len(set(per_tool.values())) > 1:
            diffs[name] = per_tool
    return present, diffs


def agreement_report(bench: Bench) -> str:
    lines = ["Chosen versions:"]
    for set_name in bench.sets:
        present, diffs = compare_versions(bench, set_name)
        missing = [t for t in bench.tools if t not in present]
        counts = ", ".join(f"{t} {len(bench.versions[(t, set_name)])}" for t in present)
        head = f"  {set_name} ({' '.join(bench.sets[set_name])}): packages {counts or 'none'}"
        if missing:
            head += f"; no resolution from {', '.join(missing)}"
        if len(present) < 2:
            lines.append(head + "; nothing to compare")
        elif not diffs:
            who = "all three" if len(present) == 3 else " and ".join(present)
            lines.append(head + f"; {who} agree on every version")
        else:
            lines.append(head + f"; {len(diffs)} differ:")
            rows = [[name, *(diffs[name][t] for t in present)] for name in diffs]
            table = format_table(["package", *present], rows, left=1)
            lines.append(indent(table, "      "))
        for tool in present:
            for other in bench.unstable.get((tool, set_name), []):
                first = bench.versions[(tool, set_name)]
                changed = sorted(
                    k for k in first.keys() | other.keys() if first.get(k) != other.get(k)
                )
                lines.append(
                    f"    note: {tool} chose differently between runs: {', '.join(changed)}"
                )
    return "\n".join(lines)


def goals_report(bench: Bench) -> str:
    lines = [
        "Goals: nbenv faster than pip cold on every set (nbenv/pip < 1.00x);",
        f"       nbenv within {GOAL_UV_WARM:.1f}x of uv warm (nbenv/uv <= {GOAL_UV_WARM:.2f}x).",
    ]
    checks = []
    for set_name in bench.sets:
        if "cold" in bench.modes:
            r = ratio(
                bench.summary("nbenv", set_name, "cold"), bench.summary("pip", set_name, "cold")
            )
            checks.append(f"{set_name} cold vs pip: {_verdict(r, GOAL_PIP_COLD, strict=True)}")
        if "warm" in bench.modes:
            r = ratio(
                bench.summary("nbenv", set_name, "warm"), bench.summary("uv", set_name, "warm")
            )
            checks.append(f"{set_name} warm vs uv: {_verdict(r, GOAL_UV_WARM, strict=False)}")
    if checks and all(c.endswith("not measured") for c in checks):
        lines.append("       (nbenv not measured)")
    elif checks:
        lines.append("       " + "; ".join(checks))
    return "\n".join(lines)


def _verdict(r: float | None, limit: float, *, strict: bool) -> str:
    if r is None:
        return "not measured"
    met = r < limit if strict else r <= limit
    return f"{r:.2f}x {'met' if met else 'MISSED'}"


def _gist(why: str) -> str:
    """A failure without its command line, to group the same failure across sets."""
    return "\n".join(line for line in why.splitlines() if not line.lstrip().startswith("$ "))


def failures_report(bench: Bench) -> str:
    lines = []
    grouped: dict[tuple[str, str], list[str]] = {}
    first: dict[tuple[str, str], str] = {}
    for (tool, set_name), why in bench.broken.items():
        key = (tool, _gist(why))
        grouped.setdefault(key, []).append(set_name)
        first.setdefault(key, why)
    for key, set_names in grouped.items():
        lines.append(
            f"  {key[0]} failed its first run on set {', '.join(set_names)}, not measured: "
            f"{first[key]}"
        )
    for (tool, set_name, mode), cell in bench.cells.items():
        if cell.failures:
            lines.append(
                f"  {tool} {set_name} {mode}: {len(cell.failures)} of "
                f"{len(cell.failures) + len(cell.seconds)} runs failed; last: {cell.failures[-1]}"
            )
    return "Failures:\n" + "\n".join(lines) if lines else ""


def raw_json(bench: Bench, meta: Mapping[str, object]) -> dict[str, object]:
    summaries = {}
    for (tool, set_name, mode), cell in bench.cells.items():
        s = summarize(cell.seconds)
        summaries[f"{tool}/{set_name}/{mode}"] = {
            "n": len(cell.seconds),
            "failed": len(cell.failures),
            "median": s.median if s else None,
            "min": s.min if s else None,
            "max": s.max if s else None,
            "seconds": cell.seconds,
        }
    return {
        "meta": dict(meta),
        "summary": summaries,
        "runs": bench.records,
        "versions": {
            set_name: {t: bench.versions.get((t, set_name)) for t in bench.tools}
            for set_name in bench.sets
        },
        "differences": {set_name: compare_versions(bench, set_name)[1] for set_name in bench.sets},
        "broken": {f"{t}/{s}": why for (t, s), why in bench.broken.items()},
    }


# --------------------------------------------------------------------------- main


def csv_choice(value: str, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    unknown = [v for v in chosen if v not in allowed]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none)'}; choose from {','.join(allowed)}"
        )
    return chosen


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Time nbenv, pip and uv resolving the same requirement sets.",
        epilog="Sets: " + "; ".join(f"{k} = {' '.join(v)}" for k, v in SETS.items()),
    )
    p.add_argument(
        "--sets",
        default=",".join(SETS),
        type=lambda v: csv_choice(v, list(SETS), "set"),
        help="comma-separated sets (A,B,C)",
    )
    p.add_argument(
        "--tools",
        default=",".join(TOOLS),
        type=lambda v: csv_choice(v, TOOLS, "tool"),
        help="comma-separated tools (nbenv,pip,uv)",
    )
    p.add_argument(
        "--modes",
        default=",".join(MODES),
        type=lambda v: csv_choice(v, MODES, "mode"),
        help="comma-separated cache modes (cold,warm)",
    )
    p.add_argument("--runs", type=int, default=5, help="timed runs per tool x set x mode (5)")
    p.add_argument("--index-url", default=PYPI, help=f"index all tools use ({PYPI})")
    p.add_argument("--json", type=Path, metavar="OUT", help="write raw figures to OUT")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per run (600)")
    p.add_argument("--workdir", type=Path, help="where caches go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the workdir (warm caches)")
    p.add_argument("--uv", default=None, help="uv executable (default: beside python, or PATH)")
    p.add_argument(
        "--nbenv-no-refresh",
        action="store_true",
        help="warm nbenv runs without --refresh (cached index pages; pip and uv revalidate)",
    )
    p.add_argument(
        "--nbenv-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `nbenv lock` (repeatable)",
    )
    ns = p.parse_args(argv)
    if ns.runs < 1:
        p.error("--runs must be at least 1")
    return ns


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse_args(argv)
    made_temp = ns.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="nbenv-bench-")) if made_temp else ns.workdir
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    uv_bin = ns.uv or find_uv()
    every: dict[str, Tool] = {
        "nbenv": Nbenv(
            "nbenv",
            ns.index_url,
            workdir,
            refresh_warm=not ns.nbenv_no_refresh,
            extra_args=tuple(ns.nbenv_arg),
        ),
        "pip": Pip("pip", ns.index_url, workdir),
        "uv": Uv("uv", ns.index_url, workdir, uv=uv_bin),
    }
    tools = {name: every[name] for name in TOOLS if name in ns.tools}
    bench = Bench(
        tools=tools,
        sets={k: SETS[k] for k in SETS if k in ns.sets},
        modes=tuple(m for m in MODES if m in ns.modes),
        runs=ns.runs,
        workdir=workdir,
        timeout=ns.timeout,
    )
    tool_lines = {name: tool.version_line() for name, tool in tools.items()}
    meta: dict[str, object] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "index_url": ns.index_url,
        "runs": ns.runs,
        "sets": bench.sets,
        "modes": list(bench.modes),
        "nbenv_warm_refresh": not ns.nbenv_no_refresh,
        "nbenv_args": ns.nbenv_arg,
        "tools": tool_lines,
        "workdir": str(workdir),
    }
    print(
        f"Resolving for Python {meta['python']} on {meta['platform']} against {ns.index_url}",
        file=sys.stderr,
    )
    for line in tool_lines.values():
        print(f"  {line}", file=sys.stderr)
    try:
        bench.prime()
        bench.measure()
    except KeyboardInterrupt:
        print("\ninterrupted; reporting what was measured", file=sys.stderr)
    finally:
        if made_temp and not ns.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(
        f"Wall time of the whole process, seconds: median [min-max] of {ns.runs} run(s); "
        f"cold = fresh empty cache each run, warm = cache primed by an untimed run"
        + ("" if ns.nbenv_no_refresh else " (nbenv warm runs use --refresh)")
        + "."
    )
    print(f"Python {meta['python']}, {meta['platform']}, index {ns.index_url}")
    print("; ".join(tool_lines.values()))
    print()
    print(timing_table(bench))
    print()
    print(agreement_report(bench))
    failures = failures_report(bench)
    if failures:
        print()
        print(failures)
    print()
    print(goals_report(bench))
    if ns.json:
        ns.json.parent.mkdir(parents=True, exist_ok=True)
        ns.json.write_text(json.dumps(raw_json(bench, meta), indent=2, sort_keys=False) + "\n")
        print(f"\nRaw figures: {ns.json}")
    if ns.keep:
        print(f"Workdir kept: {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
