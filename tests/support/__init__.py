"""Hermetic test support: real wheels and sdists, and a local simple index serving them.

wheels.py        build_wheel / build_sdist (stdlib only, reproducible bytes)
index_server.py  IndexServer: PEP 503/691 pages, ranges, PEP 658, auth, failure knobs
universe.py      the fixed projects the session servers serve
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["IsolatedEnv", "run_python"]


def run_python(script: str, *args: str, timeout: float = 120) -> str:
    """`script` run by this Python in a process of its own (one thread: it can fork its
    helpers, as `nbenv create` does), with this test's environment; its stdout, once it
    has exited 0."""
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True, text=True, timeout=timeout, env=os.environ.copy(),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


@dataclass(frozen=True)
class IsolatedEnv:
    """The temporary directories that stand in for the user's home and data dirs."""

    root: Path
    home: Path
    nbenv_home: Path
    jupyter_data: Path
    jupyter_config: Path
    jupyter_runtime: Path
    xdg_config: Path
    xdg_data: Path
    xdg_cache: Path
