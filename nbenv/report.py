"""Progress reporting: the core calls a Reporter and never prints.

Calls may come from worker threads, so implementations must be thread-safe.
"""

from __future__ import annotations

import sys
import threading
from typing import Protocol, TextIO

__all__ = ["NullReporter", "Reporter", "TerminalReporter"]


class Reporter(Protocol):
    def stage(self, name: str) -> None:
        """A new phase starts ("resolving", "fetching metadata", ...)."""

    def progress(self, name: str, done: int, total: int | None) -> None:
        """Work inside phase `name` advanced; `total` is None while unknown."""

    def note(self, message: str) -> None:
        """Something a person may want to know (a fallback, a build, a cache miss)."""


class NullReporter:
    def stage(self, name: str) -> None:
        pass

    def progress(self, name: str, done: int, total: int | None) -> None:
        pass

    def note(self, message: str) -> None:
        pass


class TerminalReporter:
    """A one-line status on a terminal stream (the CLI uses stderr)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._width = 0

    def _write(self, text: str) -> None:
        pad = max(0, self._width - len(text))
        self._stream.write("\r" + text + " " * pad)
        self._stream.flush()
        self._width = len(text)

    def stage(self, name: str) -> None:
        with self._lock:
            self._write(name + " ...")

    def progress(self, name: str, done: int, total: int | None) -> None:
        with self._lock:
            count = f"{done}/{total}" if total else str(done)
            self._write(f"{name} {count}")

    def note(self, message: str) -> None:
        with self._lock:
            self._write("")
            self._stream.write("\r" + message + "\n")
            self._width = 0

    def close(self) -> None:
        with self._lock:
            if self._width:
                self._write("")
                self._stream.write("\r")
                self._stream.flush()
