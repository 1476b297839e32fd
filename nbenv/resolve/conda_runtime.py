"""What every py-rattler call needs: a way to run its coroutines, a client, and redaction.

- rattler's API is async. A Jupyter kernel already runs an event loop in the main thread
  (`asyncio.run` would refuse), so coroutines run in a worker thread whenever one is running.
- py-rattler's tokio threads can still be settling for a moment after a call returns; a
  process that exits right then crashes in finalization (SIGSEGV / "PyGILState_Release";
  pyo3-async-runtimes#40, measured here about 1 exit in 10). An atexit hook waits up to
  `_SETTLE` seconds after the last call, which long-lived processes never notice.
- Conda channel credentials travel as URL userinfo or as a conda token path segment
  (`/t/<token>/`); rattler masks tokens in some messages but keeps them in record URLs and
  in its repodata cache. So rattler never sees them in a URL: `channel_client` strips them
  and hands them over through rattler's own credential storage, a private auth file that
  exists only while the call runs.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit

from nbenv.errors import UsageError
from nbenv.net.auth import redact, split_credentials, strip_userinfo

if TYPE_CHECKING:
    import rattler

__all__ = [
    "channel_client",
    "clean_url",
    "conda_client",
    "error_summary",
    "redact_channels",
    "run_async",
]

_T = TypeVar("_T")
_SETTLE = 0.2  # seconds; 0.1 already removed every crash in 90 measured exits
_TOKEN = re.compile(r"/t/[^/\s]+(?=/)")
_TOKEN_VALUE = re.compile(r"/t/([^/\s]+)/")
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


@contextmanager
def channel_client(channels: Iterable[str]) -> Iterator[rattler.Client]:
    """A client for `channels`, which may carry credentials: pass them to rattler with
    `clean_url` applied and use this client, which sends each host's credentials from a
    private auth file (0600 in a 0700 temp dir), removed when the block ends. The user's
    own rattler auth file (RATTLER_AUTH_FILE or ~/.rattler/credentials.json) is merged in,
    since an override file replaces it for this client."""
    import rattler

    entries = _channel_credentials(channels)
    if not entries:
        yield conda_client()
        return
    folder = Path(tempfile.mkdtemp(prefix="nbenv-auth-"))
    try:
        path = folder / "credentials.json"
        merged = {**_user_auth_file(), **entries}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(merged, stream)
        # a JSON string is a valid TOML basic string
        config = rattler.Config.from_toml(f"authentication-override-file = {json.dumps(str(path))}")
        yield rattler.Client.from_config(config)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _channel_credentials(channels: Iterable[str]) -> dict[str, object]:
    """host -> a rattler auth entry, from the channels' userinfo or `/t/<token>/`.
    rattler looks credentials up by host alone, so one host holds one credential."""
    found: dict[str, object] = {}
    for channel in channels:
        clean, userinfo = split_credentials(channel)
        token = _TOKEN_VALUE.search(clean)
        host = urlsplit(clean).hostname
        if host is None or (userinfo is None and token is None):
            continue
        entry: object
        if token is not None:
            entry = {"CondaToken": unquote(token.group(1))}
        else:
            assert userinfo is not None
            entry = {"BasicHTTP": {"username": userinfo[0], "password": userinfo[1]}}
        if found.setdefault(host, entry) != entry:
            raise UsageError(
                f"Two conda channels on {host} carry different credentials; rattler keeps one "
                "per host. Give the channels one token, or put it in rattler's auth file "
                "(RATTLER_AUTH_FILE) and the channels without credentials."
            )
    return found


def _user_auth_file() -> dict[str, object]:
    given = os.environ.get("RATTLER_AUTH_FILE")
    path = Path(given) if given else Path.home() / ".rattler" / "credentials.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def clean_url(url: str) -> str:
    """`https://u:p@host/t/TOKEN/chan/` -> `https://host/chan/`."""
    if "@" not in url and "/t/" not in url:  # the usual case, twice per solved record
        return url
    return _TOKEN.sub("", strip_userinfo(url))


def redact_channels(text: str) -> str:
    """Drop userinfo and conda tokens (also rattler's `/t/********`) from every URL."""
    return _TOKEN.sub("", redact(text))


def error_summary(exc: BaseException) -> str:
    """rattler's error chain ("A\nCaused by: B\nCaused by: C") as "A: C", redacted: what
    failed and the root cause, without the layers in between."""
    parts = [p.strip() for p in re.split(r"\s*Caused by:\s*", redact_channels(str(exc)))]
    parts = [p.rstrip(".") for p in parts if p]
    if not parts:
        return type(exc).__name__
    return parts[0] if len(parts) == 1 else f"{parts[0]}: {parts[-1]}"
