"""Progress reporting: the core calls a Reporter and never prints.

Calls may come from worker threads, so implementations must be thread-safe. The phases a
build goes through, in order: "resolving" (with "fetching" progress: metadata files),
"downloading" (progress in bytes: see `is_bytes`), "unpacking wheels", "installing wheels"
(progress in packages); conda envs add their own. The CLI draws them as a terminal bar
(TerminalReporter), notebooks as a widget (nbenv.inspector.progress).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Protocol, TextIO

__all__ = [
    "BYTE_STAGES",
    "NullReporter",
    "Reporter",
    "TerminalReporter",
    "format_bytes",
    "is_bytes",
]


class Reporter(Protocol):
    def stage(self, name: str) -> None:
        """A new phase starts ("resolving", "fetching metadata", ...)."""

    def progress(self, name: str, done: int, total: int | None) -> None:
        """Work inside phase `name` advanced; `total` is None while unknown."""

    def note(self, message: str) -> None:
        """Something a person may want to know (a fallback, a build, a cache miss)."""

    def cached(self, name: str, hits: int, total: int) -> None:
        """Of the `total` items phase `name` needed, `hits` were in a local cache already
        (e.g. downloads avoided); said once per phase, before its work starts."""


class NullReporter:
    def stage(self, name: str) -> None:
        pass

    def progress(self, name: str, done: int, total: int | None) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def cached(self, name: str, hits: int, total: int) -> None:
        pass


BYTE_STAGES = frozenset({"downloading"})  # their progress counts bytes, not items


def is_bytes(stage: str) -> bool:
    return stage in BYTE_STAGES


def format_bytes(n: float) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"  # pragma: no cover


def _amount(stage: str, n: int) -> str:
    return format_bytes(n) if is_bytes(stage) else str(n)


class Rate:
    """Bytes per second of a phase, over its last few seconds (a smooth, current figure)."""

    def __init__(self, window: float = 3.0) -> None:
        self._window = window
        self._samples: list[tuple[float, int]] = []

    def add(self, now: float, done: int) -> float | None:
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > self._window:
            self._samples.pop(0)
        (t0, d0) = self._samples[0]
        return (done - d0) / (now - t0) if now - t0 > 0.2 else None


class TerminalReporter:
    """A one-line progress bar on a terminal stream (the CLI uses stderr); redrawn at most
    every 50 ms so that thousands of small updates cost nothing."""

    def __init__(self, stream: TextIO | None = None, width: int = 24) -> None:
        self._stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._shown = 0
        self._bar = width
        self._last = 0.0
        self._started = time.monotonic()
        self._stage_started = self._started
        self._rate = Rate()
        self._hits: dict[str, int] = {}

    def _write(self, text: str) -> None:
        pad = max(0, self._shown - len(text))
        self._stream.write("\r" + text + " " * pad)
        self._stream.flush()
        self._shown = len(text)

    def stage(self, name: str) -> None:
        with self._lock:
            self._stage_started = time.monotonic()
            self._rate = Rate()
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
            if is_bytes(name):
                rate = self._rate.add(now, done)
                text += f" {format_bytes(rate)}/s" if rate is not None else ""
            if self._hits.get(name):
                text += f" ({self._hits[name]} cached)"
            text += f" {now - self._stage_started:.0f}s"
            self._write(text)

    def cached(self, name: str, hits: int, total: int) -> None:
        with self._lock:
            self._hits[name] = hits

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
