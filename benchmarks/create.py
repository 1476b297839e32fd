#!/usr/bin/env python3
"""Env creation benchmark: nbenv vs pip vs uv building set B, side by side in one run.

    .venv/bin/python benchmarks/create.py [--runs 3] [--pip-runs 1] [--tools nbenv,pip,uv]
                                          [--no-kernel-table] [--json OUT]

Set B is `pandas scikit-learn matplotlib`. Every tool builds a new env for it, and the wall
time of the whole process (or processes: `venv` + install) is measured:

- cold: empty cache; warm: cache filled by an untimed run, new env; warm without
  revalidating the index; until the `.pyc` files exist;
- locked: `nbenv create --lock pylock.toml` vs `uv venv` + `uv pip sync` of the same pins;
- existing: the same create again when the env is there (nbenv: whole process and inside
  one Python process, as in a kernel; pip and uv: a no-op install), with no network.

A second table compares nbenv's default env (with ipykernel and ipywidgets, and a
kernelspec) with uv installing the same set plus those packages. Runs are interleaved
(round by round, tool order rotated each round). See benchmarks/README.md.

Stdlib only: this script must run before nbenv itself works.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    source_tree_env,
    summarize,
    tail,
    timed_run,
)

ROOT = Path(__file__).resolve().parent.parent
PYPI = "https://pypi.org/simple"
SPECS = ("pandas", "scikit-learn", "matplotlib")  # set B of resolve.py
KERNEL_SPECS = ("ipykernel", "ipywidgets>=8")  # what nbenv adds to every env by default
TOOLS = ("nbenv", "pip", "uv")
# A proxy nobody listens on: a tool that touches the network while finding an existing
# env fails instead of quietly using it.
DEAD_PROXY = "http://127.0.0.1:9"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")

GOAL_COLD_UV = 1.2  # nbenv cold within 1.2x of uv cold
GOAL_WARM_UV = 1.5  # nbenv warm (revalidating, like uv) within 1.5x of uv warm
GOAL_LOCK_UV = 1.5  # nbenv create --lock within 1.5x of uv venv + uv pip sync
GOAL_PIP_SPEEDUP = 10.0  # nbenv cold at least 10x faster than pip cold
GOAL_EXISTING_S = 0.020  # an existing env found in under 20 ms inside a kernel

# case -> the tools that run it. "k-" cases are the kernel table: nbenv's default env vs uv
# installing SPECS + KERNEL_SPECS. Derived figures (".pyc written", nbenv's own `seconds`,
# in-process lookups) are kept in the same cells; see Cell.
CASES: dict[str, tuple[str, ...]] = {
    "cold": ("nbenv", "pip", "uv"),
    "cold-nocompile": ("pip",),
    "warm": ("nbenv", "pip", "uv"),
    "warm-cached": ("nbenv", "uv"),
    "warm-pyc": ("uv",),
    "lock": ("nbenv", "uv"),
    "lock-offline": ("nbenv", "uv"),
    "existing": ("nbenv", "pip", "uv"),
    "k-cold": ("nbenv", "uv"),
    "k-warm": ("nbenv", "uv"),
    "k-existing": ("nbenv", "uv"),
}
PIP_CASES = ("cold", "cold-nocompile", "warm")  # slow: only in the first --pip-runs rounds

Versions = dict[str, str]  # normalized project name -> version


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class Step:
    argv: list[str]
    env: dict[str, str]
    cwd: str | None = None


@dataclass
class Plan:
    """One timed run: its steps (timed back to back), what to delete after it."""

    steps: list[Step]
    fresh: list[Path] = field(default_factory=list)  # emptied before the run
    cleanup: list[Path] = field(default_factory=list)  # removed after the run
    expect_created: bool | None = None  # nbenv create: what its `--json` must say


@dataclass
class Outcome:
    seconds: float
    step_seconds: list[float]
    own: float | None = None  # nbenv: `seconds` from its --json (inside create_env)
    pyc: float | None = None  # nbenv: from the start until its bytecode compiler ended
    cpu: float | None = None  # user + system seconds, waited-for children included
    why: str | None = None
    stdout: str = ""  # of the last step


@dataclass
class Cell:
    """Everything measured for one tool x case."""

    seconds: list[float] = field(default_factory=list)
    own: list[float] = field(default_factory=list)
    pyc: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@dataclass
class Bench:
    tools: tuple[str, ...]
    cases: dict[str, tuple[str, ...]]
    runs: int
    pip_runs: int
    inproc_calls: int
    workdir: Path
    index_url: str
    uv: str
    timeout: float
    nbenv_args: tuple[str, ...] = ()
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    records: list[dict[str, object]] = field(default_factory=list)
    inproc: list[dict[str, Any]] = field(default_factory=list)
    broken: dict[str, str] = field(default_factory=dict)  # tool or tool/case -> why
    prime_envs: dict[str, Path] = field(default_factory=dict)  # label -> env dir
    pins: list[str] = field(default_factory=list)

    # -- places ------------------------------------------------------------------------
    @property
    def nbenv_home(self) -> Path:
        """Where the primed envs live: the home for the `existing` cases."""
        return self.workdir / "prime" / "nbenv-home"

    @property
    def nbenv_cache(self) -> Path:
        return self.workdir / "warm" / "nbenv-cache"

    @property
    def uv_cache(self) -> Path:
        return self.workdir / "warm" / "uv-cache"

    @property
    def pip_cache(self) -> Path:
        return self.workdir / "warm" / "pip-cache"

    @property
    def pylock(self) -> Path:
        return self.workdir / "prime" / "pylock.toml"

    @property
    def pins_file(self) -> Path:
        return self.workdir / "prime" / "pins.txt"

    def discard(self, path: Path) -> None:
        """Out of the way by a rename; deleted only when everything is measured. On this
        VM's ext4 (no journal) the kernel scans past inodes freed in the last ~30 s when it
        allocates new ones: a run right after another's 7,000-file cleanup created files
        2-3x slower, and which tool paid for it depended on the order."""
        if path.exists():
            trash = self.workdir / "trash"
            trash.mkdir(exist_ok=True)
            path.rename(trash / f"{len(list(trash.iterdir()))}-{path.name}")

    def run_dir(self, tool: str, case: str, label: str) -> Path:
        return self.workdir / "runs" / f"{tool}-{case}-{label}"

    # -- environments ------------------------------------------------------------------
    def env(self, *, offline: bool = False) -> dict[str, str]:
        env = base_env(self.workdir)
        if offline:
            env.update(dict.fromkeys(PROXY_VARS, DEAD_PROXY))
            env.pop("NO_PROXY", None)
            env.pop("no_proxy", None)
        return env

    def nbenv_env(self, home: Path, cache: Path | None, *, offline: bool = False) -> dict[str, str]:
        env = source_tree_env(self.env(offline=offline), ROOT, self.workdir / "pycache")
        env["NBENV_HOME"] = str(home)
        if cache is not None:  # else the cache is $NBENV_HOME/cache
            env["NBENV_CACHE_DIR"] = str(cache)
        env["JUPYTER_DATA_DIR"] = str(home / "jupyter")  # each home its own kernelspecs
        return env

    # -- commands ----------------------------------------------------------------------
    def nbenv_create(self, home: Path, cache: Path | None, args: Sequence[str], *,
                     offline: bool = False) -> Step:  # fmt: skip
        argv = [sys.executable, "-m", "nbenv", "create", "--json", *self.nbenv_args, *args]
        return Step(argv, self.nbenv_env(home, cache, offline=offline), cwd=str(ROOT))

    def uv_venv(self, env_dir: Path, cache: Path) -> Step:
        argv = [
            self.uv, "venv", "--no-config", "--quiet",
            "--python", sys.executable,
            "--cache-dir", str(cache),
            str(env_dir),
        ]  # fmt: skip
        return Step(argv, self.env())

    def uv_pip(self, command: str, env_dir: Path, cache: Path, args: Sequence[str], *,
               offline: bool = False) -> Step:  # fmt: skip
        argv = [
            self.uv, "pip", command, "--no-config", "--quiet",
            "--python", str(env_dir / "bin" / "python"),
            "--cache-dir", str(cache),
            "--index-url", self.index_url,
            "--link-mode", "hardlink",
            *args,
        ]  # fmt: skip
        return Step(argv, self.env(offline=offline))

    def pip_venv(self, env_dir: Path) -> Step:
        # Without ensurepip (about 3 s here, and it would install the older pip bundled with
        # this Python): pip below is the project venv's, run against the new env.
        return Step([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], self.env())

    def pip_install(self, env_dir: Path, cache: Path, args: Sequence[str], *,
                    offline: bool = False) -> Step:  # fmt: skip
        argv = [
            sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"),
            "install", "--quiet",
            "--cache-dir", str(cache),
            "--index-url", self.index_url,
            *args,
        ]  # fmt: skip
        return Step(argv, self.env(offline=offline))

    # -- plans -------------------------------------------------------------------------
    def plan(self, tool: str, case: str, label: str) -> Plan:
        kernel = case.startswith("k-")
        base = case.removeprefix("k-")
        run = self.run_dir(tool, case, label)
        if tool == "nbenv":
            return self._nbenv_plan(base, kernel, run)
        if tool == "uv":
            return self._uv_plan(base, kernel, run)
        return self._pip_plan(base, run)

    def _nbenv_plan(self, base: str, kernel: bool, run: Path) -> Plan:
        args = [] if kernel else ["--no-kernel"]
        if base.startswith("lock"):
            args += ["--lock", str(self.pylock)]
            if base == "lock-offline":
                args.append("--offline")
        else:
            args += ["--index-url", self.index_url]
            if base == "warm":
                args.append("--refresh")  # revalidate index pages, as uv and pip do
            args += SPECS
        if base == "existing":
            step = self.nbenv_create(self.nbenv_home, self.nbenv_cache, args, offline=True)
            return Plan([step], expect_created=False)
        cache = None if base == "cold" else self.nbenv_cache
        return Plan([self.nbenv_create(run, cache, args)], fresh=[run], cleanup=[run],
                    expect_created=True)  # fmt: skip

    def _uv_plan(self, base: str, kernel: bool, run: Path) -> Plan:
        specs = [*SPECS, *KERNEL_SPECS] if kernel else list(SPECS)
        if base == "existing":
            env_dir = self.prime_envs["uv-kernel" if kernel else "uv"]
            return Plan([self.uv_pip("install", env_dir, self.uv_cache, specs, offline=True)])
        env_dir, cache = run / "env", self.uv_cache
        if base == "cold":
            cache = run / "cache"
        if base.startswith("lock"):
            args = [str(self.pins_file)]
            if base == "lock-offline":
                args.append("--offline")
            last = self.uv_pip("sync", env_dir, cache, args)
        else:
            extra = {"warm-cached": ["--offline"], "warm-pyc": ["--compile-bytecode"]}
            last = self.uv_pip("install", env_dir, cache, [*extra.get(base, []), *specs])
        return Plan([self.uv_venv(env_dir, cache), last], fresh=[run], cleanup=[run])

    def _pip_plan(self, base: str, run: Path) -> Plan:
        if base == "existing":
            step = self.pip_install(self.prime_envs["pip"], self.pip_cache, SPECS, offline=True)
            return Plan([step])
        env_dir = run / "env"
        cache = self.pip_cache if base == "warm" else run / "cache"
        args = ["--no-compile", *SPECS] if base == "cold-nocompile" else list(SPECS)
        steps = [self.pip_venv(env_dir), self.pip_install(env_dir, cache, args)]
        return Plan(steps, fresh=[run], cleanup=[run])

    # -- running -----------------------------------------------------------------------
    def execute(self, tool: str, plan: Plan) -> Outcome:
        for path in plan.fresh:
            self.discard(path)
            path.mkdir(parents=True)
        # Untimed: the run before (and nbenv's bytecode compiler) left hundreds of MB of
        # dirty pages; their writeback would otherwise land on whichever tool runs next.
        os.sync()
        start = time.perf_counter()
        step_seconds: list[float] = []
        cpu = 0.0
        result: RunResult | None = None
        why: str | None = None
        for step in plan.steps:
            result = timed_run(step.argv, env=step.env, cwd=step.cwd, timeout=self.timeout)
            step_seconds.append(result.seconds)
            cpu += result.cpu or 0.0
            if result.returncode is None:
                why = f"timed out after {self.timeout:.0f} s"
            elif not result.ok:
                why = f"exit status {result.returncode}"
            if why:
                break
        outcome = Outcome(sum(step_seconds), step_seconds, cpu=cpu)
        outcome.stdout = result.stdout if result is not None else ""
        if plan.expect_created is not None and result is not None and why is None:
            try:
                summary = json.loads(result.stdout)
                outcome.own = float(summary["seconds"])
                created = bool(summary["created"])
            except (ValueError, KeyError, TypeError) as exc:
                why = f"could not read its --json output: {type(exc).__name__}: {exc}"
            else:
                if plan.expect_created is not None and created != plan.expect_created:
                    why = f"--json says created={str(created).lower()}"
        # nbenv compiles bytecode in a detached process after the env is usable: let it
        # finish (untimed) so it neither competes with the next run nor outlives cleanup.
        done = wait_for_compilers(self.workdir, self.timeout)
        if tool == "nbenv" and plan.expect_created and why is None and done is not None:
            outcome.pyc = done - start
        if why and result is not None:
            detail = tail(result.stderr) or tail(result.stdout) or "(no output)"
            why = f"{why}\n    $ {' '.join(result.argv)}\n" + indent(detail, "    | ")
        outcome.why = why
        for path in plan.cleanup:
            self.discard(path)
        return outcome

    def timed(self, rnd: int, tool: str, case: str) -> None:
        outcome = self.execute(tool, self.plan(tool, case, str(rnd)))
        cell = self.cells.setdefault((tool, case), Cell())
        self.records.append(
            {
                "tool": tool,
                "case": case,
                "round": rnd,
                "seconds": outcome.seconds,
                "steps": outcome.step_seconds,
                "own": outcome.own,
                "pyc": outcome.pyc,
                "cpu": outcome.cpu,
                "ok": outcome.why is None,
                "load": load_average(),
            }
        )
        if outcome.why:
            cell.failures.append(outcome.why)
            progress(f" {tool} FAILED")
            return
        cell.seconds.append(outcome.seconds)
        if outcome.own is not None:
            cell.own.append(outcome.own)
        if outcome.pyc is not None:
            cell.pyc.append(outcome.pyc)
        if outcome.cpu is not None:
            cell.cpu.append(outcome.cpu)
        progress(f" {tool} {outcome.seconds:.2f}")

    def measure(self) -> None:
        for rnd in range(self.runs):
            order = self.tools[rnd % len(self.tools) :] + self.tools[: rnd % len(self.tools)]
            for case, runners in self.cases.items():
                todo = [t for t in order if t in runners and not self.skipped(t, case)]
                if "pip" in todo and (rnd >= self.pip_runs and case in PIP_CASES):
                    todo.remove("pip")
                if not todo:
                    continue
                progress(f"run {rnd + 1}/{self.runs}  {case:<14}")
                for tool in todo:
                    self.timed(rnd, tool, case)
                progress("\n")
            if "nbenv" in self.tools and not self.skipped("nbenv", "existing"):
                self.measure_inproc(rnd)

    @property
    def inproc_variants(self) -> list[str]:
        """The kernel variant needs the env primed with the kernel packages (k- cases)."""
        kernel = any(c.startswith("k-") for c in self.cases)
        return ["kernel", "no-kernel"] if kernel else ["no-kernel"]

    def skipped(self, tool: str, case: str) -> bool:
        return tool in self.broken or f"{tool}/{case}" in self.broken

    # -- in-process lookup -------------------------------------------------------------
    def measure_inproc(self, rnd: int) -> None:
        """The existing env found from inside one Python process, as a kernel's magic does:
        import nbenv.envs, call create_env once, then time `inproc_calls` more calls. A
        second process times the first call after `%load_ext nbenv` (its preload done)."""
        progress(f"run {rnd + 1}/{self.runs}  {'in-process':<14}")
        words = ["--index-url", self.index_url, *SPECS]
        variants = self.inproc_variants
        argv = [sys.executable, "-c", INPROC_SCRIPT, json.dumps(words), str(self.inproc_calls),
                json.dumps(variants)]  # fmt: skip
        env = self.nbenv_env(self.nbenv_home, self.nbenv_cache, offline=True)
        result = timed_run(argv, env=env, cwd=str(ROOT), timeout=self.timeout)
        loaded = timed_run([*argv, "load_ext"], env=env, cwd=str(ROOT), timeout=self.timeout)
        try:
            data = json.loads(result.stdout)
            after = json.loads(loaded.stdout)
            for variant in variants:
                if data[variant]["created"] or after[variant]["created"]:
                    raise ValueError(f"{variant}: create_env built an env instead of finding it")
            data["after_load_ext"] = {v: after[v]["first"] for v in variants}
        except (ValueError, KeyError, TypeError) as exc:
            result = result if result.returncode else loaded
            why = f"{type(exc).__name__}: {exc}\n" + indent(tail(result.stderr), "    | ")
            self.cells.setdefault(("nbenv", "inproc"), Cell()).failures.append(why)
            progress(" FAILED\n")
            return
        data["round"] = rnd
        self.inproc.append(data)
        for variant, key in (("kernel", "k-inproc"), ("no-kernel", "inproc")):
            if variant in data:
                self.cells.setdefault(("nbenv", key), Cell()).seconds.extend(data[variant]["calls"])
        kmed = summarize(data[variants[0]]["calls"])
        assert kmed is not None
        progress(f" import {data['import'] * 1e3:.0f} ms, lookup {kmed.median * 1e3:.2f} ms\n")

    # -- priming -----------------------------------------------------------------------
    def prime(self) -> None:
        """Untimed: fill the warm caches, build the envs that `existing` finds again, write
        the lock and its pins. A tool that fails here is skipped."""
        kernel = any(c.startswith("k-") for c in self.cases)
        if "nbenv" in self.tools:
            self._prime_nbenv(kernel)
        self._prime_pins()
        if "uv" in self.tools:
            self._prime_uv(kernel)
        if "pip" in self.tools:
            self._prime_pip()

    def _prime_step(self, tool: str, what: str, plan: Plan) -> Outcome | None:
        progress(f"prime  {tool:<5} {what:<28}")
        outcome = self.execute(tool, plan)
        if outcome.why:
            progress("FAILED\n")
            print(f"  {tool} failed to prime ({what}): {outcome.why}", file=sys.stderr)
            return None
        extra = f" (.pyc after {outcome.pyc:.2f} s)" if outcome.pyc is not None else ""
        progress(f"{outcome.seconds:6.2f} s{extra}\n")
        return outcome

    def _prime_nbenv(self, kernel: bool) -> None:
        home, cache = self.nbenv_home, self.nbenv_cache
        self.discard(home)
        common = ["--index-url", self.index_url, *SPECS]
        variants = [("nbenv", ["--no-kernel", *common])]
        if kernel:
            variants.append(("nbenv-kernel", common))
        for label, args in variants:
            step = self.nbenv_create(home, cache, args)
            what = "create" + label.removeprefix("nbenv")
            outcome = self._prime_step("nbenv", what, Plan([step], expect_created=True))
            if outcome is None:
                self.broken["nbenv"] = "priming failed (see stderr)"
                return
            self.prime_envs[label] = Path(json.loads(outcome.stdout)["path"])
        argv = [sys.executable, "-m", "nbenv", "lock", "--index-url", self.index_url,
                *SPECS, "-o", str(self.pylock)]  # fmt: skip
        lock = Step(argv, self.nbenv_env(home, cache), cwd=str(ROOT))
        if not self._prime_step("nbenv", "lock -o pylock.toml", Plan([lock])):
            self.broken["nbenv/lock"] = self.broken["nbenv/lock-offline"] = "no pylock.toml"

    def _prime_pins(self) -> None:
        """`name==version` lines of the pylock.toml for uv pip sync; without a lock (nbenv
        not run, or broken), uv pip compile gives the pins."""
        if self.pylock.exists():
            import tomllib  # Python 3.11+

            data = tomllib.loads(self.pylock.read_text())
            self.pins = sorted(f"{p['name']}=={p['version']}" for p in data["packages"])
        elif "uv" in self.tools:
            argv = [self.uv, "pip", "compile", "-", "--no-config", "--quiet", "--no-header",
                    "--no-annotate", "--python", sys.executable,
                    "--cache-dir", str(self.uv_cache), "--index-url", self.index_url]  # fmt: skip
            result = timed_run(argv, env=self.env(), stdin="\n".join(SPECS) + "\n")
            self.pins = [
                line.strip() for line in result.stdout.splitlines() if "==" in line.strip()
            ]
        self.pins_file.parent.mkdir(parents=True, exist_ok=True)
        self.pins_file.write_text("".join(f"{pin}\n" for pin in self.pins))
        if not self.pins:
            self.broken["uv/lock"] = self.broken["uv/lock-offline"] = "no pins"

    def _prime_uv(self, kernel: bool) -> None:
        variants = [("uv", list(SPECS))]
        if kernel:
            variants.append(("uv-kernel", [*SPECS, *KERNEL_SPECS]))
        for label, specs in variants:
            env_dir = self.workdir / "prime" / label
            self.discard(env_dir)
            steps = [
                self.uv_venv(env_dir, self.uv_cache),
                self.uv_pip("install", env_dir, self.uv_cache, specs),
            ]
            if self._prime_step("uv", f"venv + install ({label})", Plan(steps)) is None:
                self.broken["uv"] = "priming failed (see stderr)"
                return
            self.prime_envs[label] = env_dir
        if self.pins:
            run = self.run_dir("uv", "sync", "prime")
            steps = [
                self.uv_venv(run / "env", self.uv_cache),
                self.uv_pip("sync", run / "env", self.uv_cache, [str(self.pins_file)]),
            ]
            if self._prime_step("uv", "venv + sync (pins)", Plan(steps, [run], [run])) is None:
                self.broken["uv/lock"] = self.broken["uv/lock-offline"] = "sync failed"

    def _prime_pip(self) -> None:
        env_dir = self.workdir / "prime" / "pip"
        self.discard(env_dir)
        steps = [self.pip_venv(env_dir), self.pip_install(env_dir, self.pip_cache, SPECS)]
        if self._prime_step("pip", "venv + install", Plan(steps)) is None:
            self.broken["pip"] = "priming failed (see stderr)"
            return
        self.prime_envs["pip"] = env_dir

    # -- summaries ---------------------------------------------------------------------
    def summary(self, tool: str, key: str) -> Summary | None:
        """`case`, or `case+pyc` / `case+own` for the derived figures of nbenv's runs, or
        `case+cpu` for any tool's CPU time."""
        case, _, part = key.partition("+")
        cell = self.cells.get((tool, case))
        if cell is None:
            return None
        parts = {"": cell.seconds, "pyc": cell.pyc, "own": cell.own, "cpu": cell.cpu}
        return summarize(parts[part])


# Run by `python -c` in the primed nbenv home: what a kernel's `%nbenv create` does once
# nbenv is imported. Prints JSON: import seconds, then per variant the first call and the
# timed calls. With "load_ext": first what `%load_ext nbenv` does in a kernel (its
# background imports, nbenv.preload, waited for: the user runs the next cell after it).
INPROC_SCRIPT = """
import json, sys, threading, time
words, n, variants = json.loads(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
after_load_ext = len(sys.argv) > 4 and sys.argv[4] == "load_ext"
if after_load_ext:  # a kernel: `%load_ext nbenv` ran in an earlier cell, its preload ended
    from IPython.core.interactiveshell import InteractiveShell
    InteractiveShell.instance().run_line_magic("load_ext", "nbenv")
    for thread in threading.enumerate():
        if thread.name == "nbenv-preload":
            thread.join()
t0 = time.perf_counter()
from nbenv.envs import BuildOptions, create_env
from nbenv.spec import parse_request
imported = time.perf_counter() - t0
out = {"import": imported}
for variant, kernel in (("kernel", True), ("no-kernel", False)):
    if variant not in variants:
        continue
    t = time.perf_counter()
    result = create_env(parse_request(words), BuildOptions(register_kernel=kernel))
    first = time.perf_counter() - t
    calls = []
    for _ in range(n):
        t = time.perf_counter()
        create_env(parse_request(words), BuildOptions(register_kernel=kernel))
        calls.append(time.perf_counter() - t)
    out[variant] = {"first": first, "calls": calls, "created": result.created}
print(json.dumps(out))
"""


def load_average() -> float | None:
    """The 1-minute load average (other processes compete for the CPUs), where known."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def wait_for_compilers(under: Path, timeout: float) -> float | None:
    """Wait until no `compileall` process works under `under`; the perf_counter() time it
    was seen gone, or None where processes cannot be listed (no /proc) or on timeout."""
    needle = str(under).encode()
    deadline = time.perf_counter() + timeout
    while True:
        try:
            entries = [e for e in os.scandir("/proc") if e.name.isdigit()]
        except OSError:
            return None
        busy = False
        for entry in entries:
            try:
                cmdline = Path(entry.path, "cmdline").read_bytes()
            except OSError:
                continue
            if b"compileall" in cmdline and needle in cmdline:
                busy = True
                break
        now = time.perf_counter()
        if not busy:
            return now
        if now > deadline:
            return None
        time.sleep(0.02)


# --------------------------------------------------------------------------- env facts


def site_packages(env_dir: Path) -> Path | None:
    found = sorted(env_dir.glob("lib/python3*/site-packages"))
    return found[0] if found else None


def installed(env_dir: Path) -> Versions:
    """{name: version} from the env's *.dist-info directories."""
    sp = site_packages(env_dir)
    out: Versions = {}
    for info in sp.glob("*.dist-info") if sp else ():
        name, _, version = info.name.removesuffix(".dist-info").partition("-")
        out[normalize(name)] = version
    return out


@dataclass(frozen=True)
class EnvFacts:
    files: int
    hardlinked: int  # regular files with more than one link: shared with a cache
    pyc: int


def env_facts(env_dir: Path) -> EnvFacts | None:
    sp = site_packages(env_dir)
    if sp is None:
        return None
    files = linked = pyc = 0
    for dirpath, _, names in os.walk(sp):
        for name in names:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if name.endswith(".pyc"):
                pyc += 1
                continue
            files += 1
            linked += st.st_nlink > 1
    return EnvFacts(files, linked, pyc)


# --------------------------------------------------------------------------- reporting


@dataclass(frozen=True)
class Row:
    label: str
    nbenv: str | None
    pip: str | None
    uv: str | None
    unit: str = "s"
    pip_row: bool = False  # only says something about pip


MAIN_ROWS = (
    Row("cold: empty cache, new env", "cold", "cold", "cold"),
    Row("  pip --no-compile", "cold", "cold-nocompile", "cold", pip_row=True),
    Row("  until .pyc written", "cold+pyc", "cold", None),
    Row("warm: cache filled, new env", "warm", "warm", "warm"),
    Row("  index not revalidated", "warm-cached", None, "warm-cached"),
    Row("  until .pyc written", "warm+pyc", "warm", "warm-pyc"),
    Row("locked: pylock.toml / pins", "lock", None, "lock"),
    Row("  --offline", "lock-offline", None, "lock-offline"),
    Row("existing env, whole process", "existing", "existing", "existing", "ms"),
    Row("existing env, in-process", "inproc", None, "existing", "ms"),
)
KERNEL_ROWS = (
    Row("cold: empty cache, new env", "k-cold", None, "k-cold"),
    Row("  until .pyc written", "k-cold+pyc", None, None),
    Row("warm: cache filled, new env", "k-warm", None, "k-warm"),
    Row("  until .pyc written", "k-warm+pyc", None, None),
    Row("existing env, whole process", "k-existing", None, "k-existing", "ms"),
    Row("existing env, in-process", "k-inproc", None, "k-existing", "ms"),
)

LEGEND = """\
cold      fresh empty cache per run (a fresh NBENV_HOME for nbenv), new env.
warm      cache filled by an untimed run, new env; index pages revalidated by all (nbenv
          --refresh). "index not revalidated": nbenv's default (pages under 10 min old
          served from its cache) vs uv --offline.
.pyc      nbenv: from the start until its background compiler ended (the env is usable, and
          the nbenv row above timed, before); pip compiles during install by default; uv
          --compile-bytecode. Rows without ".pyc" leave uv with no bytecode.
locked    nbenv create --lock pylock.toml vs uv venv + uv pip sync of the same pins, warm.
existing  the same create again (nbenv: created=false) vs a no-op pip/uv install into the
          env, all with a dead proxy (no network); "in-process": per create_env() call in
          one Python process after a first call, vs uv's whole process.
nbenv own nbenv's own --json `seconds` (inside create_env: no interpreter start, imports,
          argument parsing), which nbenv rounds to the millisecond."""


def fmt_cell(s: Summary | None, unit: str) -> str:
    if unit == "ms":
        return fmt_summary(s, scale=1e3, digits=1)
    return fmt_summary(s)


def timing_table(bench: Bench, rows: Sequence[Row], *, with_pip: bool) -> str:
    header = ["case", "unit", "nbenv", "nbenv own", "pip", "uv", "nbenv/pip", "nbenv/uv"]
    if not with_pip:
        header = [h for h in header if "pip" not in h]
    out = []
    for row in rows:
        if row.pip_row and not with_pip:
            continue
        nb = bench.summary("nbenv", row.nbenv) if row.nbenv else None
        own = None
        if row.nbenv and "+" not in row.nbenv and "inproc" not in row.nbenv:
            own = bench.summary("nbenv", row.nbenv + "+own")
        pip = bench.summary("pip", row.pip) if row.pip else None
        uv = bench.summary("uv", row.uv) if row.uv else None
        cells = [row.label, row.unit, fmt_cell(nb, row.unit), fmt_cell(own, row.unit)]
        if with_pip:
            cells.append(fmt_cell(pip, row.unit))
        cells.append(fmt_cell(uv, row.unit))
        if with_pip:
            cells.append(fmt_ratio(ratio(nb, pip)))
        cells.append(fmt_ratio(ratio(nb, uv)))
        out.append(cells)
    return format_table(header, out, left=2)


# Where wall-time ratios move from run to run with the machine's state, CPU time says
# how much work each tool does: on 2 CPUs a build that needs 3.6 s of CPU cannot take
# less than 1.8 s however well it overlaps.
CPU_ROWS = (
    ("cold", "cold"),
    ("warm", "warm"),
    ("locked", "lock"),
    ("cold, kernel packages", "k-cold"),
    ("warm, kernel packages", "k-warm"),
)


def cpu_table(bench: Bench, *, with_pip: bool) -> str:
    header = ["case", "nbenv", "pip", "uv", "nbenv/uv"]
    if not with_pip:
        header.remove("pip")
    out = []
    for label, case in CPU_ROWS:
        if case not in bench.cases:
            continue
        nb = bench.summary("nbenv", case + "+cpu")
        uv = bench.summary("uv", case + "+cpu")
        cells = [label, fmt_summary(nb)]
        if with_pip:
            pip = bench.summary("pip", case + "+cpu") if "pip" in bench.cases[case] else None
            cells.append(fmt_summary(pip) if pip else "-")
        cells += [fmt_summary(uv), fmt_ratio(ratio(nb, uv))]
        out.append(cells)
    return format_table(header, out, left=2)


def inproc_report(bench: Bench) -> str:
    if not bench.inproc:
        return ""
    imports = summarize([d["import"] for d in bench.inproc])
    lines = [
        "In-process lookups (one Python process per round; nbenv already imported for the "
        "timed calls):",
        f"  import nbenv.envs + nbenv.spec: {fmt_summary(imports, scale=1e3, digits=0)} ms",
    ]
    for variant in bench.inproc_variants:
        first = summarize([d[variant]["first"] for d in bench.inproc])
        loaded = summarize([d["after_load_ext"][variant] for d in bench.inproc])
        calls = summarize([c for d in bench.inproc for c in d[variant]["calls"]])
        lines.append(
            f"  {variant:<9} first call {fmt_summary(first, scale=1e3, digits=1)} ms "
            f"(after %load_ext nbenv: {fmt_summary(loaded, scale=1e3, digits=1)} ms), "
            f"then {fmt_summary(calls, scale=1e3, digits=2)} ms per call "
            f"({calls.n if calls else 0} calls)"
        )
    return "\n".join(lines)


def agreement_report(bench: Bench) -> str:
    """What each primed env holds, whether its files are hardlinks, and its bytecode."""
    envs = {label: path for label, path in bench.prime_envs.items() if path.exists()}
    if not envs:
        return ""
    lines = ["Primed envs (what each tool installed):"]
    facts = {label: env_facts(path) for label, path in envs.items()}
    for label, f in facts.items():
        if f is None:
            continue
        share = 100.0 * f.hardlinked / f.files if f.files else 0.0
        lines.append(
            f"  {label:<13} {len(installed(envs[label])):>3} distributions, {f.files} files, "
            f"{share:.0f}% hardlinked, {f.pyc} .pyc"
        )
    for group in (("nbenv", "pip", "uv"), ("nbenv-kernel", "uv-kernel")):
        present = [g for g in group if g in envs]
        if len(present) < 2:
            continue
        chosen = {g: installed(envs[g]) for g in present}
        names = sorted({n for v in chosen.values() for n in v})
        diffs = [
            [n, *(chosen[g].get(n, "(absent)") for g in present)]
            for n in names
            if len({chosen[g].get(n, "(absent)") for g in present}) > 1
        ]
        if not diffs:
            lines.append(f"  {', '.join(present)}: the same {len(names)} versions")
        else:
            lines.append(f"  {', '.join(present)}: {len(diffs)} differ:")
            lines.append(indent(format_table(["package", *present], diffs), "      "))
    if bench.pins:
        lines.append(f"  locked cases: {len(bench.pins)} pins from nbenv's pylock.toml")
    return "\n".join(lines)


def goals(bench: Bench) -> list[tuple[str, str]]:
    """(goal, verdict) per goal."""
    s = bench.summary

    def verdict(value: float | None, met: bool, text: str) -> str:
        return "not measured" if value is None else f"{text} {'met' if met else 'MISSED'}"

    out = []
    for case, limit, what in (
        ("cold", GOAL_COLD_UV, "cold create"),
        ("warm", GOAL_WARM_UV, "warm create"),
        ("lock", GOAL_LOCK_UV, "locked create (vs uv pip sync)"),
    ):
        r = ratio(s("nbenv", case), s("uv", case))
        out.append(
            (
                f"{what} within {limit:.1f}x of uv (nbenv/uv)",
                verdict(r, r is not None and r <= limit, f"{r or 0:.2f}x"),
            )
        )
    speedup = ratio(s("pip", "cold"), s("nbenv", "cold"))
    out.append(
        (
            f"cold create at least {GOAL_PIP_SPEEDUP:.0f}x faster than pip (pip/nbenv)",
            verdict(
                speedup, speedup is not None and speedup >= GOAL_PIP_SPEEDUP, f"{speedup or 0:.1f}x"
            ),
        )
    )
    k = s("nbenv", "k-inproc")
    first = summarize([d["kernel"]["first"] for d in bench.inproc if "kernel" in d])
    loaded = summarize([d["after_load_ext"]["kernel"] for d in bench.inproc if "kernel" in d])
    for value, what in (
        (k.median if k else None, "in-process median of repeated calls"),
        (first.median if first else None, "first call after the import, median"),
        (loaded.median if loaded else None, "first call after %load_ext nbenv, median"),
    ):
        out.append(
            (
                f"existing env found in under {GOAL_EXISTING_S * 1e3:.0f} ms in a kernel "
                f"({what}; kernelspec checked, no network)",
                verdict(
                    value,
                    value is not None and value < GOAL_EXISTING_S,
                    f"{(value or 0) * 1e3:.2f} ms",
                ),
            )
        )
    return out


def goals_report(bench: Bench) -> str:
    rows = [[goal, result] for goal, result in goals(bench)]
    return "Goals:\n" + indent(format_table(["goal", "result"], rows, left=2), "  ")


def failures_report(bench: Bench) -> str:
    lines = [f"  {what}: {why}" for what, why in bench.broken.items()]
    for (tool, case), cell in bench.cells.items():
        if cell.failures:
            lines.append(
                f"  {tool} {case}: {len(cell.failures)} of "
                f"{len(cell.failures) + len(cell.seconds)} runs failed; last: {cell.failures[-1]}"
            )
    return "Failures:\n" + "\n".join(lines) if lines else ""


def raw_json(bench: Bench, meta: Mapping[str, object]) -> dict[str, object]:
    summaries: dict[str, object] = {}
    for (tool, case), cell in bench.cells.items():
        parts = (("", cell.seconds), ("+own", cell.own), ("+pyc", cell.pyc), ("+cpu", cell.cpu))
        for part, samples in parts:
            s = summarize(samples)
            if s is None and part:
                continue
            summaries[f"{tool}/{case}{part}"] = {
                "n": len(samples),
                "failed": len(cell.failures) if not part else None,
                "median": s.median if s else None,
                "min": s.min if s else None,
                "max": s.max if s else None,
                "seconds": samples,
            }
    facts = {}
    for label, path in bench.prime_envs.items():
        f = env_facts(path) if path.exists() else None
        facts[label] = {
            "path": str(path),
            "versions": installed(path) if path.exists() else None,
            "files": f.files if f else None,
            "hardlinked": f.hardlinked if f else None,
            "pyc": f.pyc if f else None,
        }
    return {
        "meta": dict(meta),
        "summary": summaries,
        "goals": dict(goals(bench)),
        "runs": bench.records,
        "inproc": bench.inproc,
        "envs": facts,
        "pins": bench.pins,
        "broken": bench.broken,
        "failures": {f"{t}/{c}": cell.failures for (t, c), cell in bench.cells.items()},
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
        description=f"Time nbenv, pip and uv creating the same environment ({' '.join(SPECS)}).",
    )
    p.add_argument(
        "--tools",
        default=",".join(TOOLS),
        type=lambda v: csv_choice(v, TOOLS, "tool"),
        help="comma-separated tools (nbenv,pip,uv)",
    )
    p.add_argument("--runs", type=int, default=3, help="timed runs per tool x case (3)")
    p.add_argument(
        "--pip-runs",
        type=int,
        default=1,
        help="timed runs of pip's cold/warm installs (1; about 20-60 s each); its no-op "
        "install runs --runs times",
    )
    p.add_argument(
        "--no-kernel-table",
        action="store_true",
        help="skip the second table (nbenv's default env with ipykernel + ipywidgets)",
    )
    p.add_argument(
        "--inproc-calls", type=int, default=30, help="timed in-process lookups per round (30)"
    )
    p.add_argument("--index-url", default=PYPI, help=f"index all tools use ({PYPI})")
    p.add_argument("--json", type=Path, metavar="OUT", help="write raw figures to OUT")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per step (600)")
    p.add_argument(
        "--workdir",
        type=Path,
        help="where caches and envs go, one filesystem for hardlinks (default: a temp dir)",
    )
    p.add_argument("--keep", action="store_true", help="keep the workdir (caches, primed envs)")
    p.add_argument("--uv", default=None, help="uv executable (default: beside python, or PATH)")
    p.add_argument(
        "--nbenv-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for every `nbenv create` (repeatable)",
    )
    ns = p.parse_args(argv)
    if ns.runs < 1 or ns.pip_runs < 0 or ns.inproc_calls < 1:
        p.error("--runs and --inproc-calls must be at least 1, --pip-runs at least 0")
    return ns


def version_lines(bench: Bench) -> dict[str, str]:
    lines = {}
    if "nbenv" in bench.tools:
        init = ROOT / "nbenv" / "__init__.py"
        found = re.search(r'__version__ = "([^"]+)"', init.read_text()) if init.exists() else None
        lines["nbenv"] = f"nbenv {found.group(1) if found else '?'} (source tree {ROOT})"
    if "pip" in bench.tools:
        pip = timed_run([sys.executable, "-m", "pip", "--version"], env=bench.env())
        lines["pip"] = " ".join(pip.stdout.split()[:2])
    if "uv" in bench.tools:
        lines["uv"] = timed_run([bench.uv, "--version"], env=bench.env()).stdout.strip()
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse_args(argv)
    made_temp = ns.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="nbenv-bench-create-")) if made_temp else ns.workdir
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    cases = {
        case: tuple(t for t in runners if t in ns.tools)
        for case, runners in CASES.items()
        if not (ns.no_kernel_table and case.startswith("k-"))
    }
    bench = Bench(
        tools=tuple(t for t in TOOLS if t in ns.tools),
        cases={c: r for c, r in cases.items() if r},
        runs=ns.runs,
        pip_runs=ns.pip_runs,
        inproc_calls=ns.inproc_calls,
        workdir=workdir,
        index_url=ns.index_url,
        uv=ns.uv or find_uv(),
        timeout=ns.timeout,
        nbenv_args=tuple(ns.nbenv_arg),
    )
    tool_lines = version_lines(bench)
    meta: dict[str, object] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "index_url": ns.index_url,
        "specs": list(SPECS),
        "kernel_specs": list(KERNEL_SPECS),
        "runs": ns.runs,
        "pip_runs": ns.pip_runs,
        "inproc_calls": ns.inproc_calls,
        "cases": bench.cases,
        "nbenv_args": ns.nbenv_arg,
        "tools": tool_lines,
        "workdir": str(workdir),
        "load_start": load_average(),
    }
    print(
        f"Creating envs of {' '.join(SPECS)} for Python {meta['python']} on "
        f"{meta['platform']} against {ns.index_url}; workdir {workdir}",
        file=sys.stderr,
    )
    for line in tool_lines.values():
        print(f"  {line}", file=sys.stderr)
    try:
        bench.prime()
        bench.measure()
    except KeyboardInterrupt:
        print("\ninterrupted; reporting what was measured", file=sys.stderr)
    meta["load_end"] = load_average()
    try:
        text, raw = build_report(bench, meta, ns)  # while the primed envs still exist
    finally:
        wait_for_compilers(workdir, 60.0)
        if made_temp and not ns.keep:
            shutil.rmtree(workdir, ignore_errors=True)  # the trash too, once all is measured
    print(text)
    if ns.json:
        ns.json.parent.mkdir(parents=True, exist_ok=True)
        ns.json.write_text(json.dumps(raw, indent=2) + "\n")
        print(f"\nRaw figures: {ns.json}")
    if ns.keep or not made_temp:
        print(f"Workdir kept: {workdir}")
    return 0


def build_report(
    bench: Bench, meta: Mapping[str, object], ns: argparse.Namespace
) -> tuple[str, dict[str, object]]:
    """The text report and the raw figures for --json."""
    out = [
        "",
        f"Env creation, {' '.join(SPECS)}: wall time of the whole process(es) "
        f"(venv + install for pip and uv), median [min-max] of {ns.runs} run(s) "
        f"({ns.pip_runs} for pip's cold and warm installs). nbenv's figure is time to a "
        "usable env: it compiles .pyc in a detached process afterwards.",
        f"Python {meta['python']}, {meta['platform']}, {meta['cpus']} CPUs, index {ns.index_url}",
        "; ".join(version_lines_of(meta)),
        load_line(bench, meta),
        "",
        "Plain env, exactly the packages asked for (nbenv --no-kernel):",
        timing_table(bench, MAIN_ROWS, with_pip="pip" in bench.tools),
    ]
    if any(c.startswith("k-") for c in bench.cases):
        out += [
            "",
            f"With kernel packages: nbenv's default (adds {' '.join(KERNEL_SPECS)} and "
            f"writes a kernelspec) vs uv installing {' '.join(SPECS)} {' '.join(KERNEL_SPECS)} "
            "(no kernelspec):",
            timing_table(bench, KERNEL_ROWS, with_pip=False),
        ]
    out += [
        "",
        "CPU time, user + system seconds, worker processes included (nbenv's detached "
        "bytecode compiler is not):",
        cpu_table(bench, with_pip="pip" in bench.tools),
    ]
    out += ["", LEGEND]
    for section in (inproc_report(bench), agreement_report(bench), failures_report(bench)):
        if section:
            out += ["", section]
    out += ["", goals_report(bench)]
    return "\n".join(out), raw_json(bench, meta)


def load_line(bench: Bench, meta: Mapping[str, object]) -> str:
    """The machine's load during the runs: other work on the CPUs skews every figure."""
    seen = [r["load"] for r in bench.records if isinstance(r.get("load"), float)]
    start, end = meta.get("load_start"), meta.get("load_end")
    if not seen or not isinstance(start, float) or not isinstance(end, float):
        return "Load average: unknown"
    cpus = meta.get("cpus") or "?"
    return (
        f"Load average (1 min, {cpus} CPUs): {start:.2f} at the start, {end:.2f} at the end, "
        f"{max(seen):.2f} at most after a run; above the CPU count, other processes "
        "competed for the CPUs"
    )


def version_lines_of(meta: Mapping[str, object]) -> list[str]:
    tools = meta.get("tools")
    return [str(v) for v in tools.values()] if isinstance(tools, dict) else []


if __name__ == "__main__":
    sys.exit(main())
