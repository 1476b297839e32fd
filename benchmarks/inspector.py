"""Opening the inspector with 50 envs in the store: time to first display. Goal: < 300 ms.

The store: 50 real envs built by nbenv in a temporary NBENV_HOME, offline. Each env holds
the kernel packages every nbenv env gets (ipykernel, ipywidgets and their closure: about 30
distributions, repacked from this venv's installed files by tests/support/repack.py and
served by the tests' local PEP 691 index) plus one small package of its own (bench-NN, a
module of 10-500 KB), so the 50 locks and env ids differ. Files are hardlinked from one
unpacked-wheel cache, as for users. Every env has its kernelspec registered (50 specs in a
temporary JUPYTER_DATA_DIR), and half are used by a notebook lock (the store's notebook
index). Bytecode is not compiled (it would only make the envs bigger; the inspector reads
cached sizes, never the files).

Measured:
1. model: `nbenv.inspector.model.overview()` in this process (every env's row: name,
   kind, python, packages, sizes, kernel, notebooks), first call with no size cached (every
   env walked once), then warm (sizes read from `.nbenv-size.json`).
2. kernel: a real python3 kernel (jupyter_client) with `%load_ext nbenv` done; the time
   from sending `%nbenv inspect` to receiving its display_data (the widget view plus its
   static HTML). "fresh kernel": the first inspect in a new kernel (nbenv's inspector
   modules and ipywidgets imported then), one new kernel per run; "again": later inspects
   in the same kernel; "no size cached yet": a fresh kernel right after the envs were built
   (sizes show as "…" and are measured after the display, in a background thread).

    .venv/bin/python benchmarks/inspector.py [--envs 50] [--runs 5] [--json OUT]

(The issue calls this script benchmarks/inspect.py; a script of that name in this folder
shadows the stdlib's `inspect` for every other benchmark run from here, so it is named for
the module it measures.)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import format_table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' wheel builder, repacker and index

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def isolate(root: Path) -> dict[str, str]:
    env = {
        "NBENV_HOME": str(root / "nbenv"),
        "JUPYTER_DATA_DIR": str(root / "jupyter-data"),
        "JUPYTER_CONFIG_DIR": str(root / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(root / "jupyter-runtime"),
        "IPYTHONDIR": str(root / "ipython"),
        "PIP_CONFIG_FILE": os.devnull,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "NBENV_CACHE_DIR"):
        os.environ.pop(key, None)
    os.environ.update(env)
    for value in env.values():
        if value != os.devnull and "," not in value:
            Path(value).mkdir(parents=True, exist_ok=True)
    return env


def build_store(root: Path, count: int) -> float:
    """`count` envs as described above; returns the seconds it took."""
    from support.index_server import Index, IndexServer
    from support.repack import closure, repack
    from support.wheels import build_wheel

    from nbenv.envs import BuildOptions, create_env
    from nbenv.notebook_index import record_lock
    from nbenv.spec import parse_request

    started = time.perf_counter()
    wheels = root / "wheels"
    wheels.mkdir()
    index = Index()
    for dist in closure(["ipykernel", "ipywidgets"]):
        index.add(repack(dist, wheels), pep658=True)
    rng = random.Random(7)
    for i in range(count):
        size = rng.randint(10, 500) * 1024
        body = "DATA = " + repr("x" * size) + "\n"
        index.add(build_wheel(wheels, f"bench-{i:02d}", "1.0",
                              modules={f"bench_{i:02d}": body}), pep658=True)  # fmt: skip
    server = IndexServer(index).start()
    notebooks = root / "notebooks"
    notebooks.mkdir()
    try:
        for i in range(count):
            name = ["--name", f"project-{i:02d}"] if i % 3 == 0 else []
            request = parse_request(["--index-url", server.url, *name, f"bench-{i:02d}"])
            result = create_env(request, BuildOptions(compile_bytecode=False))
            if i % 2 == 0:
                lock = notebooks / f"analysis-{i:02d}.nbenv.lock"
                lock.write_text("version = 1\n")
                (notebooks / f"analysis-{i:02d}.ipynb").write_text("{}")
                record_lock(lock, [result.record.env_id])
            print(f"\rbuilding envs: {i + 1}/{count}", end="", file=sys.stderr, flush=True)
    finally:
        server.stop()
    print(file=sys.stderr)
    return time.perf_counter() - started


def drop_sizes(root: Path) -> None:
    for cached in (root / "nbenv" / "envs").glob("*/.nbenv-size.json"):
        cached.unlink()


def time_model(runs: int) -> tuple[float, list[float], int]:
    from nbenv.inspector.model import overview

    start = time.perf_counter()
    rows = overview().rows
    cold = time.perf_counter() - start
    warm = []
    for _ in range(runs * 2):
        start = time.perf_counter()
        overview()
        warm.append(time.perf_counter() - start)
    return cold, warm, len(rows)


class Kernel:
    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        import subprocess

        from jupyter_client.manager import KernelManager

        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env={**os.environ, **env}, cwd=str(cwd),
                             stderr=subprocess.DEVNULL)  # fmt: skip
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.first_display(["%load_ext nbenv"], want_display=False)

    def first_display(self, code: list[str], *, want_display: bool = True) -> float:
        """Seconds from sending the cell to its first widget display (or to its reply)."""
        shown: list[float] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "display_data" and WIDGET_VIEW in msg["content"]["data"]:
                shown.append(time.perf_counter())

        start = time.perf_counter()
        reply = self.kc.execute_interactive("\n".join(code), timeout=300, output_hook=hook)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"{code}: {reply['content'].get('evalue')}")
        if not want_display:
            return time.perf_counter() - start
        if not shown:
            raise RuntimeError("%nbenv inspect displayed no widget")
        return shown[0] - start

    def stop(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    parser.add_argument("--store", type=Path, help="build the store here and keep it; "
                        "reused when it exists (its size caches are dropped first)")  # fmt: skip
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nbenv-bench-inspect-") as tmp:
        root = ns.store.resolve() if ns.store else Path(tmp)
        reuse = (root / "nbenv" / "envs").is_dir()
        env = isolate(root)
        built = 0.0 if reuse else build_store(root, ns.envs)
        drop_sizes(root)  # the first overview walks every env, as after a fresh build
        cold, warm, rows = time_model(ns.runs)
        fresh, again, unmeasured = [], [], []
        for _ in range(ns.runs):
            kernel = Kernel(env, root)
            try:
                fresh.append(kernel.first_display(["%nbenv inspect"]))
                for _ in range(2):
                    again.append(kernel.first_display(["%nbenv inspect"]))
            finally:
                kernel.stop()
        for _ in range(ns.runs):
            drop_sizes(root)  # as right after building 50 envs: no size known
            kernel = Kernel(env, root)
            try:
                unmeasured.append(kernel.first_display(["%nbenv inspect"]))
            finally:
                kernel.stop()

    def ms(values: list[float]) -> str:
        if len(values) == 1:
            return f"{values[0] * 1000:.0f} ms"
        return (f"{statistics.median(values) * 1000:.0f} ms (min {min(values) * 1000:.0f}, "
                f"max {max(values) * 1000:.0f}, n={len(values)})")  # fmt: skip

    goal = 0.300
    table = [
        ("model: overview(), no size cached yet", ms([cold]), "-"),
        ("model: overview(), sizes cached", ms(warm), "-"),
        ("kernel: %nbenv inspect, fresh kernel", ms(fresh),
         f"{statistics.median(fresh) / goal:.2f}x goal"),
        ("kernel: %nbenv inspect, again", ms(again),
         f"{statistics.median(again) / goal:.2f}x goal"),
        ("kernel: fresh kernel, no size cached yet", ms(unmeasured),
         f"{statistics.median(unmeasured) / goal:.2f}x goal"),
    ]  # fmt: skip
    print(f"Inspector with {rows} envs in the store (built in {built:.0f} s); goal: first "
          f"display under {goal * 1000:.0f} ms")  # fmt: skip
    print(format_table(("measure", "time to first display", "vs goal"), table))
    if ns.json:
        ns.json.parent.mkdir(parents=True, exist_ok=True)
        ns.json.write_text(json.dumps({"envs": rows, "model_cold": cold, "model_warm": warm,
                                       "kernel_fresh": fresh, "kernel_again": again,
                                       "kernel_no_sizes": unmeasured}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
