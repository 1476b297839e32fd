"""What a kernel's first `%%pypi` / `%%conda` cell needs, imported in the background as
soon as `%load_ext nbenv` runs, while the user reads or types the next cell.

The cell path imports nbenv's store, lock and build modules, and filelock 4 alone costs
~11 ms to import: a first cell paid ~100 ms of imports before finding an env that exists
in ~2 ms. When the cell comes right after the `%load_ext` cell, it waits for the imports
still under way (each module is imported once, by whichever thread gets there first), so
it is never slower than without the preload.

A thread is safe here because nbenv's modules do not import each other in a cycle at
module level (tests/test_preload.py checks it): two threads importing them at once wait
on each other's module locks and cannot deadlock. A failure is ignored: the cell imports
the same module itself and reports the error where the user sees it.
"""

from __future__ import annotations

import importlib
import threading

__all__ = ["MODULES", "start"]

# the existing-env path of a cell first (what an already-built env needs), then the rest
MODULES = (
    "filelock",
    "nbenv.settings",
    "nbenv.spec",
    "nbenv.store",
    "nbenv.lock",
    "nbenv.kernels",
    "nbenv.notebook_lock",
    "nbenv.notebook",
    "nbenv.envs",
)


def start() -> threading.Thread:
    """Begin importing MODULES on a daemon thread (it never holds up the kernel's exit)."""
    thread = threading.Thread(target=_import_all, name="nbenv-preload", daemon=True)
    thread.start()
    return thread


def _import_all() -> None:
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # the cell meets the same error and reports it
            return
