"""What every py-rattler call needs: a way to run its coroutines, a client, and redaction.

- rattler's API is async. A Jupyter kernel already runs an event loop in the main thread
  (`asyncio.run` would refuse), so coroutines run in a worker thread whenever one is running.
- py-rattler's tokio threads can still be settling for a moment after a call returns; a
  process that exits right then crashes in finalization (SIGSEGV / "PyGILState_Release";
  pyo3-async-runtimes#40, measured here about 1 exit in 10). An atexit hook waits up to
  `_SETTLE` seconds after the last call, which long-lived processes never notice.
- Conda channel credentials travel as URL userinfo or as a conda token path segment
  (`/t/<token>/`); rattler masks tokens in some messages but keeps them in record URLs.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import re
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from nbenv.net.auth import redact, strip_userinfo

if TYPE_CHECKING:
    import rattler

__all__ = [
    "clean_url",
    "conda_client",
    "error_summary",
    "redact_channels",
    "run_async",
    "with_credentials",
]

_T = TypeVar("_T")
_SETTLE = 0.2  # seconds; 0.1 already removed every crash in 90 measured exits
_TOKEN = re.compile(r"/t/[^/\s]+(?=/)")
_last_call: float | None = None
_lock = threading.Lock()


def run_async(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run a rattler coroutine to completion from synchronous code, even inside a kernel."""
    global _last_call
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = False
    else:
        running = True
    with _lock:
        if _last_call is None:
            atexit.register(_settle)
        _last_call = time.monotonic()
    try:
        if not running:
            return _run_private(coroutine)
        with ThreadPoolExecutor(1, thread_name_prefix="nbenv-rattler") as pool:
            return pool.submit(_run_private, coroutine).result()
    finally:
        with _lock:
            _last_call = time.monotonic()


def _run_private(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """`asyncio.run` without its side effect on the caller: it leaves the thread with no
    current loop (`set_event_loop(None)`), after which code of the host process that calls
    `asyncio.get_event_loop()` (tornado, older Jupyter code) fails in the main thread."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


def _settle() -> None:
    if _last_call is not None:
        time.sleep(max(0.0, _SETTLE - (time.monotonic() - _last_call)))


def conda_client() -> rattler.Client:
    """rattler's standard client: retries, and credentials from rattler's auth storage
    (RATTLER_AUTH_FILE, ~/.rattler/credentials.json, the keyring). Making one costs ~5 ms
    (TLS roots), so one is kept per process for each place the credentials may come from."""
    import rattler

    key = (os.environ.get("RATTLER_AUTH_FILE"), os.environ.get("HOME"))
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = rattler.Client.default_client()
    return client


_clients: dict[tuple[str | None, str | None], rattler.Client] = {}


def clean_url(url: str) -> str:
    """`https://u:p@host/t/TOKEN/chan/` -> `https://host/chan/`."""
    if "@" not in url and "/t/" not in url:  # the usual case, twice per solved record
        return url
    return _TOKEN.sub("", strip_userinfo(url))


def redact_channels(text: str) -> str:
    """Drop userinfo and conda tokens (also rattler's `/t/********`) from every URL."""
    return _TOKEN.sub("", redact(text))


def with_credentials(url: str, channels: tuple[str, ...]) -> str:
    """Put back the credentials of the channel `url` belongs to (as given in `channels`)."""
    for channel in channels:
        base = clean_url(channel).rstrip("/") + "/"
        if base != channel.rstrip("/") + "/" and url.startswith(base):
            return channel.rstrip("/") + "/" + url[len(base) :]
    return url


def error_summary(exc: BaseException) -> str:
    """rattler's error chain ("A\nCaused by: B\nCaused by: C") as "A: C", redacted: what
    failed and the root cause, without the layers in between."""
    parts = [p.strip() for p in re.split(r"\s*Caused by:\s*", redact_channels(str(exc)))]
    parts = [p.rstrip(".") for p in parts if p]
    if not parts:
        return type(exc).__name__
    return parts[0] if len(parts) == 1 else f"{parts[0]}: {parts[-1]}"
