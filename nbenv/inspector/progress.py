"""Progress of an env build in the notebook cell, driven by the core's Reporter calls.

In a kernel whose front end renders widgets: an ipywidgets line (phase, a bar, packages
done/total or bytes and rate, elapsed). Elsewhere (nbconvert, papermill, a front end without
widgets) the same display carries a text/plain line, and in terminal IPython a terminal bar.
When the build ends the display is replaced by a one-line summary (env, Python, packages,
time, cache hits), so a saved notebook keeps the summary, not the progress.

Nothing is displayed until the core reports a phase: a cell whose env is ready shows nothing.
"""

from __future__ import annotations

import html
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from nbenv.net.auth import redact
from nbenv.report import Rate, TerminalReporter, format_bytes, is_bytes

__all__ = ["Mode", "ProgressDisplay", "ProgressState", "choose_mode"]

Mode = Literal["widget", "text", "terminal", "callback"]
_REFRESH = 0.1  # seconds between two redraws of the same phase
_DETAIL_STAGES = {"fetching": "resolving"}  # progress of a sub-step shown under its phase


@dataclass(frozen=True)
class ProgressState:
    """What the display shows; pure data, so tests and both views read the same thing."""

    phase: str = ""
    done: int = 0
    total: int | None = None
    unit: Literal["items", "bytes"] = "items"
    rate: float | None = None  # bytes per second, for byte phases
    detail: str = ""  # progress of a sub-step ("metadata 12/30" while resolving)
    elapsed: float = 0.0
    cache_hits: int = 0
    cache_total: int = 0

    def amount(self) -> str:
        if self.unit == "bytes":
            if not self.done and not self.total:
                return ""
            shown = format_bytes(self.done)
            if self.total:
                shown += f" / {format_bytes(self.total)}"
            if self.rate is not None:
                shown += f", {format_bytes(self.rate)}/s"
            return shown
        if self.total:
            return (
                f"{self.done}/{self.total} packages"
                if "wheels" in self.phase
                else (f"{self.done}/{self.total}")
            )
        return str(self.done) if self.done else ""

    def fraction(self) -> float | None:
        return min(1.0, self.done / self.total) if self.total else None

    def line(self) -> str:
        parts = [f"nbenv: {self.phase or 'starting'}"]
        for extra in (self.amount(), self.detail):
            if extra:
                parts.append(extra)
        return " · ".join(parts) + f" · {self.elapsed:.1f} s"

    def hits_text(self) -> str:
        if not self.cache_total:
            return ""
        return f"{self.cache_hits} of {self.cache_total} downloads cached"


def choose_mode(shell: Any = None) -> Mode:
    """Widgets in a kernel that has ipywidgets; a terminal bar in terminal IPython; text
    otherwise. NBENV_PROGRESS=widget|text|terminal overrides (e.g. text for a front end
    that shows widget outputs as blanks)."""
    forced = os.environ.get("NBENV_PROGRESS", "").strip().lower()
    if forced in ("widget", "text", "terminal"):
        return forced  # type: ignore[return-value]
    if shell is None:
        try:
            from IPython.core.getipython import get_ipython

            shell = get_ipython()
        except ImportError:  # pragma: no cover - magics need IPython
            shell = None
    if shell is None:
        return "terminal"
    if getattr(shell, "kernel", None) is None:  # terminal IPython: no front end, no comms
        return "terminal"
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return "text"
    return "widget"


class ProgressDisplay:
    """A Reporter that draws in the current cell; `finish(summary)` ends it.

    Thread-safe: the core reports from worker threads. Each call updates the state under a
    lock; drawing is throttled to one redraw per phase every 0.1 s (thousands of byte
    updates cost nothing)."""

    def __init__(
        self,
        mode: Mode | None = None,
        *,
        clock: Callable[[], float] = time.perf_counter,
        callback: Callable[[str], None] | None = None,
    ) -> None:
        """`mode="callback"` hands each line (and the summary) to `callback` instead of
        displaying anything: the inspector shows an upgrade's progress in its status line."""
        self.mode: Mode = mode or choose_mode()
        self._callback = callback
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._state = ProgressState()
        self._rate = Rate()
        self._drawn_at = 0.0
        self._view: _View | None = None
        self.notes: list[str] = []
        self.finished: str | None = None

    @property
    def state(self) -> ProgressState:
        with self._lock:
            return replace(self._state, elapsed=self._clock() - self._started)

    # -- the Reporter protocol ---------------------------------------------------------------
    def stage(self, name: str) -> None:
        with self._lock:
            self._rate = Rate()
            hits = (self._state.cache_hits, self._state.cache_total)
            self._state = ProgressState(
                phase=name, unit="bytes" if is_bytes(name) else "items",
                cache_hits=hits[0], cache_total=hits[1],
            )  # fmt: skip
            self._draw(force=True)

    def progress(self, name: str, done: int, total: int | None) -> None:
        with self._lock:
            now = self._clock()
            parent = _DETAIL_STAGES.get(name)
            if parent is not None and parent == self._state.phase:
                amount = f"{done}/{total}" if total else str(done)
                self._state = replace(self._state, detail=f"{name} metadata {amount}")
            elif name == self._state.phase:
                rate = self._rate.add(now, done) if is_bytes(name) else None
                self._state = replace(self._state, done=done, total=total, rate=rate)
            else:
                return
            finished = total is not None and done >= total
            self._draw(force=finished)

    def note(self, message: str) -> None:
        with self._lock:
            self.notes.append(redact(message))

    def cached(self, name: str, hits: int, total: int) -> None:
        with self._lock:
            self._state = replace(
                self._state,
                cache_hits=self._state.cache_hits + hits,
                cache_total=self._state.cache_total + total,
            )

    # -- the end -------------------------------------------------------------------------------
    def finish(self, summary: str | None) -> str | None:
        """Replace the progress with `summary` + time and cache hits (or clear it: None).
        Returns the line shown. Nothing was displayed and nothing is when no phase ran."""
        with self._lock:
            if self._view is None:
                return None
            elapsed = self._clock() - self._started
            line = None
            if summary:
                extra = [f"{elapsed:.1f} s"]
                hits = self._state.hits_text()
                if hits:
                    extra.append(hits)
                line = f"nbenv: {summary} ({', '.join(extra)})"
            self.finished = line
            self._view.finish(line)
            self._view = None
            return line

    # -- drawing (under the lock) --------------------------------------------------------------
    def _draw(self, *, force: bool) -> None:
        now = self._clock()
        if not force and now - self._drawn_at < _REFRESH:
            return
        self._drawn_at = now
        state = replace(self._state, elapsed=now - self._started)
        if self._view is None:
            self._view = _make_view(self.mode, self._callback)
        self._view.show(state)


class _View:
    def show(self, state: ProgressState) -> None:
        raise NotImplementedError

    def finish(self, line: str | None) -> None:
        raise NotImplementedError


def _make_view(mode: Mode, callback: Callable[[str], None] | None = None) -> _View:
    if mode == "callback":
        if callback is None:
            raise ValueError("mode='callback' needs a callback")
        return _CallbackView(callback)
    if mode == "widget":
        return _WidgetView()
    if mode == "terminal":
        return _TerminalView()
    return _TextView()


def _summary_bundle(line: str | None) -> dict[str, str]:
    if not line:
        return {"text/plain": ""}
    return {
        "text/plain": line,
        "text/html": f"<pre class='nbenv-summary'>{html.escape(line)}</pre>",
    }


class _CallbackView(_View):
    def __init__(self, callback: Callable[[str], None]) -> None:
        self._callback = callback

    def show(self, state: ProgressState) -> None:
        self._callback(state.line())

    def finish(self, line: str | None) -> None:
        self._callback(line or "")


class _TextView(_View):
    """A display with an id, updated in place: front ends without widgets (and nbconvert's
    saved notebook) see one line that becomes the summary."""

    def __init__(self) -> None:
        self._handle: Any = None

    def _put(self, bundle: dict[str, str]) -> None:
        from IPython.display import display

        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)  # type: ignore[no-untyped-call]
        else:
            self._handle.update(bundle, raw=True)

    def show(self, state: ProgressState) -> None:
        self._put({"text/plain": state.line()})

    def finish(self, line: str | None) -> None:
        self._put(_summary_bundle(line))


class _TerminalView(_View):
    """Terminal IPython: the CLI's bar on stderr, then the summary on stdout."""

    def __init__(self) -> None:
        self._bar = TerminalReporter(sys.stderr)
        self._phase = ""

    def show(self, state: ProgressState) -> None:
        if state.phase != self._phase:
            self._phase = state.phase
            self._bar.stage(state.phase)
        if state.total is not None or state.done:
            self._bar.progress(state.phase, state.done, state.total)

    def finish(self, line: str | None) -> None:
        self._bar.close()
        if line:
            print(line)


class _WidgetView(_View):
    """phase | bar | amount, rate, elapsed: one ipywidgets line whose display (with a
    text/plain fallback) is replaced by the summary at the end and its comms closed."""

    def __init__(self) -> None:
        import ipywidgets as w
        from IPython.display import display

        self.phase = w.HTML(layout=w.Layout(min_width="12em"))
        self.bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, bar_style="info",
                                   layout=w.Layout(width="14em"))  # fmt: skip
        self.detail = w.HTML()
        self.box = w.HBox([self.phase, self.bar, self.detail])
        self.box.add_class("nbenv-progress")
        bundle = dict(self.box._repr_mimebundle_() or {})
        bundle["text/plain"] = "nbenv: building the environment…"  # front ends without widgets
        self._handle: Any = display(bundle, raw=True, display_id=True)  # type: ignore[no-untyped-call]

    def show(self, state: ProgressState) -> None:
        self.phase.value = f"<b>nbenv</b>: {html.escape(state.phase)}"
        fraction = state.fraction()
        self.bar.bar_style = "info" if fraction is None else ""
        self.bar.value = 1.0 if fraction is None else fraction
        parts = [p for p in (state.amount(), state.detail, f"{state.elapsed:.1f} s") if p]
        self.detail.value = html.escape(" · ".join(parts))

    def finish(self, line: str | None) -> None:
        self._handle.update(_summary_bundle(line), raw=True)
        self.box.close()
        for widget in (self.phase, self.bar, self.detail):
            widget.close()
