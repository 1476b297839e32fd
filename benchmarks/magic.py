"""Cost of running a cell through `%%pypi`: nbenv vs the same code run directly.

Measures, in one run, with real kernels (jupyter_client) against the configured PyPI:

1. overhead: a trivial `%%pypi requests` cell on an env whose child kernel is already up,
   vs the same code run directly in the parent kernel (round trip seen by the client:
   execute_request to execute_reply). Goal: under 20 ms added per cell.
2. first cell, locked and existing env: a new parent kernel, the env and the notebook lock
   exist, time of the first `%%pypi requests` cell, child kernel start included.
   Goal: under 1 s.
3. cold: `%%pypi six` with an empty nbenv home and cache (resolve, download, install,
   child start), vs `%pip install six` in the parent kernel (not isolated) as the peer.

    .venv/bin/python benchmarks/magic.py [--runs 20] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _harness import base_env, fmt_summary, format_table, source_tree_env, summarize

ROOT = Path(__file__).resolve().parent.parent
INDEX = "https://pypi.org/simple"


class Parent:
    """A parent kernel (this venv's ipykernel) with nbenv loaded, driven as a front end."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        from jupyter_client.manager import KernelManager

        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env=env, cwd=str(cwd), stderr=subprocess.DEVNULL)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.run("%load_ext nbenv")

    def run(self, code: str) -> float:
        start = time.perf_counter()
        reply = self.kc.execute_interactive(code, timeout=600, output_hook=lambda m: None)
        elapsed = time.perf_counter() - start
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"cell failed: {code!r}: {reply['content'].get('evalue')}")
        return elapsed

    def stop(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="cells per overhead figure")
    parser.add_argument("--starts", type=int, default=5, help="runs of the first-cell figure")
    parser.add_argument("--json", type=Path, help="save raw figures here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nbenv-bench-magic-"))
    env = source_tree_env(base_env(work), ROOT, work / "pycache")
    env["NBENV_HOME"] = str(work / "home")
    env["NBENV_LOCK"] = str(work / "bench.nbenv.lock")
    os.environ.update({k: v for k, v in env.items() if k.startswith(("JUPYTER_",))})
    cell = f"%%pypi --index-url {INDEX} requests\n"
    figures: dict[str, Any] = {}
    try:
        # prime: build the env, lock it, start its child once
        parent = Parent(env, work)
        parent.run(cell + "import requests")
        direct = [parent.run("x = 1 + 1") for _ in range(args.runs)]
        through = [parent.run(cell + "x = 1 + 1") for _ in range(args.runs)]
        parent.stop()
        figures["direct"] = direct
        figures["pypi"] = through

        starts = []
        for _ in range(args.starts):
            parent = Parent(env, work)
            starts.append(parent.run(cell + "x = 1"))
            parent.stop()
        figures["first_cell_locked"] = starts

        cold, pip = [], []
        for i in range(3):
            cold_env = dict(env)
            cold_env["NBENV_HOME"] = str(work / f"cold-{i}")
            cold_env["NBENV_LOCK"] = str(work / f"cold-{i}.nbenv.lock")
            parent = Parent(cold_env, work)
            cold.append(parent.run(f"%%pypi --index-url {INDEX} six\nimport six"))
            parent.stop()
            target = work / f"pip-{i}"
            parent = Parent(env, work)
            pip.append(parent.run(f"%pip install -q --no-cache-dir --target {target} six"))
            parent.stop()
        figures["cold_six"] = cold
        figures["pip_six"] = pip
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ms = 1000.0
    d, p = summarize(figures["direct"]), summarize(figures["pypi"])
    added = statistics.median(figures["pypi"]) - statistics.median(figures["direct"])
    rows = [
        ("trivial cell, direct", fmt_summary(d, scale=ms, digits=1) + " ms"),
        ("trivial cell, %%pypi (child up)", fmt_summary(p, scale=ms, digits=1) + " ms"),
        ("added per cell (median difference)", f"{added * ms:.1f} ms"),
        ("first %%pypi cell, locked existing env", fmt_summary(summarize(starts)) + " s"),
        ("cold %%pypi six (resolve+build+start)", fmt_summary(summarize(cold)) + " s"),
        ("%pip install six (peer, not isolated)", fmt_summary(summarize(pip)) + " s"),
    ]
    print(format_table(("figure", "median [min-max]"), rows))
    first = statistics.median(starts)
    print()
    print(f"Goal: under 20 ms added per cell: {added * ms:.1f} ms "
          f"{'met' if added < 0.020 else 'MISSED'}")  # fmt: skip
    print(f"Goal: first cell of a locked existing env under 1 s: {first:.2f} s "
          f"{'met' if first < 1.0 else 'MISSED'}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
