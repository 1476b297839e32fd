"""nbenv: isolated, locked, reproducible environments for notebooks and cells."""

from __future__ import annotations

__version__ = "0.1.0"

from nbenv.errors import NbenvError
from nbenv.report import NullReporter, Reporter
from nbenv.spec import EnvRequest, parse_request

__all__ = [
    "EnvRequest",
    "NbenvError",
    "NullReporter",
    "Reporter",
    "__version__",
    "parse_request",
]
