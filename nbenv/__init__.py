"""nbenv: isolated, locked, reproducible environments for notebooks and cells."""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbenv.errors import NbenvError
    from nbenv.report import NullReporter, Reporter
    from nbenv.spec import EnvRequest, parse_request

# Loaded on first use: every `python -m nbenv.<module>` (the unpacking workers, the kernel
# launcher) imports this package first, and packaging's requirement parser alone is ~25 ms.
_LAZY = {
    "EnvRequest": "nbenv.spec",
    "NbenvError": "nbenv.errors",
    "NullReporter": "nbenv.report",
    "Reporter": "nbenv.report",
    "parse_request": "nbenv.spec",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbenv' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def load_ipython_extension(shell: object) -> None:
    """`%load_ext nbenv`: the %%pypi, %pypi, %%conda and %nbenv magics."""
    from nbenv.magics import load_ipython_extension as load

    load(shell)  # type: ignore[arg-type]


def inspect() -> object:
    """The inspector in the current notebook cell: every env, its packages, actions."""
    from nbenv.inspector import inspect as show

    return show()


def unload_ipython_extension(shell: object) -> None:
    from nbenv.magics import unload_ipython_extension as unload

    unload(shell)  # type: ignore[arg-type]


__all__ = [
    "EnvRequest",
    "NbenvError",
    "NullReporter",
    "Reporter",
    "__version__",
    "inspect",
    "load_ipython_extension",
    "parse_request",
    "unload_ipython_extension",
]
