"""Progress reporting: the core calls a Reporter and never prints.

Calls may come from worker threads, so implementations must be thread-safe.
"""

from __future__ import annotations

import sys
import threading
import time
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


_BYTE_STAGES = frozenset({"downloading"})  # their counts are bytes


def _amount(stage: str, n: int) -> str:
    if stage not in _BYTE_STAGES:
        return str(n)
    value = float(n)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


class TerminalReporter:
    """A one-line progress bar on a terminal stream (the CLI uses stderr); redrawn at most
    every 50 ms so that thousands of small updates cost nothing."""

    def __init__(self, stream: TextIO | None = None, width: int = 24) -> None:
        self._stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._shown = 0
        self._bar = width
        self._last = 0.0

    def _write(self, text: str) -> None:
        pad = max(0, self._shown - len(text))
        self._stream.write("\r" + text + " " * pad)
        self._stream.flush()
        self._shown = len(text)

    def stage(self, name: str) -> None:
        with self._lock:
            self._write(name + " ...")

    def progress(self, name: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last < 0.05 and (total is None or done < total):
                return
            self._last = now
            if total:
                filled = min(self._bar, self._bar * done // total)
                bar = "#" * filled + "-" * (self._bar - filled)
                text = f"{name} [{bar}] {_amount(name, done)}/{_amount(name, total)}"
            else:
                text = f"{name} {_amount(name, done)}"
            self._write(text)

    def note(self, message: str) -> None:
        with self._lock:
            self._write("")
            self._stream.write("\r" + message + "\n")
            self._shown = 0

    def close(self) -> None:
        with self._lock:
            if self._shown:
                self._write("")
                self._stream.write("\r")
                self._stream.flush()
                self._shown = 0
