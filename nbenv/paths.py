"""Where nbenv keeps its data: NBENV_HOME or the platform's user data dir."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = ["cache_dir", "nbenv_home"]


def nbenv_home() -> Path:
    configured = os.environ.get("NBENV_HOME")
    if configured:
        return Path(configured).expanduser().resolve()
    return Path(platformdirs.user_data_dir("nbenv", appauthor=False))


def cache_dir(home: Path | None = None) -> Path:
    """Downloads, unpacked wheels, metadata. NBENV_CACHE_DIR moves it (e.g. to share one
    cache between several homes, or to put it on the same filesystem as the envs)."""
    configured = os.environ.get("NBENV_CACHE_DIR")
    if configured and home is None:
        return Path(configured).expanduser().resolve()
    return (home or nbenv_home()) / "cache"
