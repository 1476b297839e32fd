"""Hermetic test support: real wheels and sdists, and a local simple index serving them.

wheels.py        build_wheel / build_sdist (stdlib only, reproducible bytes)
index_server.py  IndexServer: PEP 503/691 pages, ranges, PEP 658, auth, failure knobs
universe.py      the fixed projects the session servers serve
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["IsolatedEnv"]


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
