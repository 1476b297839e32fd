#!/usr/bin/env python3
"""Conda benchmark: nbenv's conda path vs py-rattler used directly (the floor), warm.

    .venv/bin/python benchmarks/conda.py [--runs 5] [--solves 10] [--packages 40] [--files 30]
                                         [--json OUT]

Unlike the other benchmarks this one runs in-process, in the project venv (it needs
py-rattler and nbenv): the question is nbenv's own overhead on top of rattler, and a
process start would only add the same constant to both sides. Nothing touches the network:
a local conda channel in the real formats is built with tests/support/conda_channel.py (the
test fixture's packages plus a `bench-meta` package depending on `--packages` generated
packages of `--files` files each), and the mixed env's PyPI side comes from a local index
(tests/support) holding `alpha` and the kernel packages (ipykernel, ipywidgets and their
closure, repacked from this interpreter).

Rows (all warm: repodata, packages and wheels are in the caches from an untimed run; each
timed run builds a new env):
- solve:   rattler.solve vs nbenv's solve (which also turns the records into nbenv's model
           for the lock, and reads which Python dists the packages install, from its cache
           on a warm run); each sample is `--solves` solves in a row (a solve takes a few
           ms: single ones are mostly timer and scheduler noise), reported per solve;
- solve, new records: the same with nbenv's per-process table of converted records
           emptied before each solve, as for the first solve in a process or after the
           channel's repodata changed;
- create:  rattler.solve + rattler.install into a new prefix vs `create_conda_env` (solve,
           install into a temp dir renamed into the store, record, lock), no kernel;
- mixed:   `create_conda_env` of `foo-app hello-tool bench-meta` + PyPI `alpha`, with the
           kernel packages and a kernelspec (a venv layered over the conda prefix).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _harness import Summary, fmt_ratio, fmt_summary, format_table, progress, ratio, summarize

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def build_channel(root: Path, packages: int, files: int) -> Path:
    from support.conda_channel import build_channel as build_fixture
    from support.conda_channel import build_conda_package, index_channel, native_subdir

    build_fixture(root)
    subdir = native_subdir()
    names = []
    for i in range(packages):
        name = f"bench-{i:03d}"
        payload = {f"share/{name}/file-{j:03d}.txt": f"{name} {j}\n" * 40 for j in range(files)}
        payload[f"lib/lib{name}.so"] = f"library {name}\n"
        build_conda_package(root, name, "1.0", subdir=subdir, files=payload,
                            fmt="conda" if i % 2 else "tar.bz2")  # fmt: skip
        names.append(name)
    build_conda_package(root, "bench-meta", "1.0", subdir=subdir, depends=names)
    index_channel(root)
    return root


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--solves", type=int, default=10, help="solves per solve sample")
    parser.add_argument("--packages", type=int, default=40)
    parser.add_argument("--files", type=int, default=30)
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    ns = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nbenv-bench-conda-"))
    for name, sub in (("NBENV_HOME", "home"), ("NBENV_CACHE_DIR", "cache"),
                      ("JUPYTER_DATA_DIR", "jupyter"), ("HOME", "user")):  # fmt: skip
        (work / sub).mkdir()
        os.environ[name] = str(work / sub)
    os.environ["PIP_CONFIG_FILE"] = os.devnull
    for name in list(os.environ):
        if name.startswith(("CONDA_OVERRIDE_", "RATTLER_", "PIP_INDEX", "PIP_EXTRA")):
            del os.environ[name]
    try:
        return run(ns, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(ns: argparse.Namespace, work: Path) -> int:
    import rattler
    from support.index_server import IndexServer
    from support.repack import closure, repack
    from support.universe import MAIN, build_universe

    import nbenv.resolve.conda
    from nbenv.conda_envs import create_conda_env
    from nbenv.envs import BuildOptions, remove_env
    from nbenv.paths import cache_dir
    from nbenv.resolve.conda import parse_conda_args, solve, virtual_packages
    from nbenv.spec import EnvRequest, parse_request
    from nbenv.store import Store

    progress("building the channel and the index ... ")
    channel = build_channel(work / "channel", ns.packages, ns.files)
    url = channel.as_uri() + "/"
    universe = build_universe(work / "universe")
    listing = universe.make_index(MAIN)
    (work / "kernel-wheels").mkdir()
    for dist in closure(["ipykernel", "ipywidgets"]):
        listing.add(repack(dist, work / "kernel-wheels"), pep658=True)
    index = IndexServer(listing).start()
    progress("done\n")

    specs = ["foo-app", "hello-tool", "bench-meta"]
    conda = parse_conda_args(["-c", url, *specs])
    rattler_cache = cache_dir() / "conda"
    virtual = virtual_packages(conda)
    client = rattler.Client.default_client()

    def rattler_solve() -> list[Any]:
        # a new gateway per solve, as nbenv makes (a kept one answers from memory), over one
        # client kept for the process, as nbenv keeps it
        gateway = rattler.Gateway(cache_dir=rattler_cache / "repodata", client=client)
        return asyncio.run(rattler.solve(
            sources=[url], specs=specs, gateway=gateway,
            platforms=[rattler.Subdir(conda.subdir), rattler.Subdir("noarch")],
            virtual_packages=virtual, channel_relations="disabled",
        ))  # fmt: skip

    counter = iter(range(10**6))

    def rattler_create() -> None:
        records = rattler_solve()
        prefix = work / "rattler-envs" / str(next(counter))
        asyncio.run(rattler.install(records, target_prefix=prefix,
                                    cache_dir=rattler_cache / "pkgs", show_progress=False,
                                    client=client,
                                    execute_link_scripts=False))  # fmt: skip

    store = Store()

    built: list[str] = []  # removed after each timing: removal is not creation

    def nbenv_create() -> None:
        result = create_conda_env(
            conda, EnvRequest(), BuildOptions(register_kernel=False), store=store
        )
        assert result.created
        built.append(result.record.env_id)

    mixed_request = parse_request(["--index-url", index.url, "alpha"])

    steps: list[tuple[tuple[str, float], ...]] = []

    def nbenv_mixed() -> None:
        result = create_conda_env(
            conda, mixed_request, BuildOptions(compile_bytecode=False), store=store
        )
        assert result.created and result.kernel is not None
        steps.append((*result.steps, ("total", result.seconds)))
        built.append(result.record.env_id)

    def clean() -> None:
        while built:
            remove_env(store, built.pop(), force=True)
        shutil.rmtree(work / "rattler-envs", ignore_errors=True)

    def nbenv_solve_new() -> None:
        nbenv.resolve.conda._packages.clear()  # its records as if new
        solve(conda)

    def repeated(fn: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(ns.solves):
                fn()

        return run

    # row -> (nbenv, floor, calls per sample)
    rows: dict[str, tuple[Callable[[], Any], Callable[[], Any] | None, int]] = {
        "solve": (repeated(lambda: solve(conda)), repeated(rattler_solve), ns.solves),
        "solve, new records": (repeated(nbenv_solve_new), repeated(rattler_solve), ns.solves),
        "create (no kernel)": (nbenv_create, rattler_create, 1),
        "mixed env + kernel": (nbenv_mixed, None, 1),
    }
    progress("warming the caches ... ")
    for nbenv_fn, floor_fn, _ in rows.values():
        nbenv_fn()
        if floor_fn is not None:
            floor_fn()
        clean()
    progress("done\n")
    samples: dict[str, dict[str, list[float]]] = {k: {"nbenv": [], "rattler": []} for k in rows}
    for i in range(ns.runs):
        progress(f"round {i + 1}/{ns.runs}\n")
        for name, (nbenv_fn, floor_fn, calls) in rows.items():
            # alternate which goes first, so neither always gets the warmer page cache
            order = [("nbenv", nbenv_fn), ("rattler", floor_fn)]
            for tool, fn in order if i % 2 == 0 else order[::-1]:
                if fn is not None:
                    samples[name][tool].append(timed(fn) / calls)
                    clean()
    index.stop()

    table = []
    for name, by_tool in samples.items():
        ours: Summary | None = summarize(by_tool["nbenv"])
        floor = summarize(by_tool["rattler"])
        over = ratio(ours, floor)
        digits = 2 if name.startswith("solve") else 0
        table.append([
            name, fmt_summary(ours, scale=1000, digits=digits),
            fmt_summary(floor, scale=1000, digits=digits),
            fmt_ratio(over), "-" if over is None else f"{(over - 1) * 100:+.0f}%",
        ])  # fmt: skip
    print(f"Conda, warm caches, {ns.runs} runs ({ns.solves} solves a solve sample); channel: "
          f"fixture + {ns.packages} packages x {ns.files} files; Python "
          f"{sys.version.split()[0]}, py-rattler {_version('py-rattler')}")  # fmt: skip
    print(format_table(["", "nbenv ms", "rattler ms", "ratio", "overhead"], table))
    last = steps[-1] if steps else ()
    print("mixed env, last run (s): "
          + ", ".join(f"{name} {seconds:.2f}" for name, seconds in last))  # fmt: skip
    if ns.json is not None:
        ns.json.write_text(json.dumps(samples, indent=1))
    return 0


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
