"""Index pages fetched and summarized for a resolver by a helper process.

A cold resolve keeps its process busy from the first request to the last pin, and every
page costs that process its TLS reads, the JSON parse of thousands of file entries and the
per-target summary of the usable releases (set B: 18 pages, 10.9 MB, ~60 ms of CPU), while
the machine's other core waits for the first pins. A helper forked at the start does that
work there instead: asked for a page, it fetches it into the resolve cache and writes its
summaries, and the resolver then reads both from the cache (nbenv.resolve.index,
nbenv.resolve.candidates: the same code, the same files). The helper only ever warms the
cache: whatever it fails at, the resolver does itself, and reports as it always did.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from nbenv.forking import Forked, send_message, stop
from nbenv.net.http import HttpClient
from nbenv.resolve.target import Target

__all__ = ["PageWarmer", "serve"]

_THREADS = 16  # pages asked at once: a cold resolve asks a dozen within a few ms


class PageWarmer:
    """The resolver's side: `warm(index, name)` is done (never with an error) once the
    helper has put that page and its summaries for `targets` in the cache under
    `resolve_cache`, or could not. The helper runs `serve`: forked, or started as
    `python -m nbenv.resolve.warm` (text pipes). Thread-safe; `close` stops the helper."""

    def __init__(
        self,
        process: Forked | subprocess.Popen[str],
        client: HttpClient,
        resolve_cache: Path,
        targets: Sequence[Target],
    ) -> None:
        self._process = process
        self._lock = threading.Lock()
        self._pending: dict[int, Future[None]] = {}
        self._ids = itertools.count()
        targets_json = [{"python": t.python, "platform": t.platform, "patch": t.patch}
                        for t in targets]  # fmt: skip
        setup = {"client": client.settings(), "cache": str(resolve_cache), "targets": targets_json}
        self._gone = not self._send(setup)
        self._reader = threading.Thread(target=self._read, name="nbenv-pages", daemon=True)
        self._reader.start()

    def warm(self, index: str, name: str) -> Future[None]:
        future: Future[None] = Future()
        with self._lock:
            request_id = next(self._ids)
            if not self._gone:
                self._pending[request_id] = future
                self._gone = not self._send({"id": request_id, "index": index, "name": name})
            if self._gone:
                self._pending.pop(request_id, None)
                future.set_result(None)  # nobody to ask: the resolver fetches it itself
        return future

    def close(self) -> None:
        with self._lock:
            self._gone = True
        stop(self._process)  # its input closed: it leaves (pages under way are dropped)
        self._reader.join()

    def _send(self, message: dict[str, Any]) -> bool:
        """Called with the lock held (or before the reader starts); False: the helper is gone."""
        return send_message(self._process.stdin, message)

    def _read(self) -> None:
        stdout = self._process.stdout
        if stdout is not None:
            with contextlib.suppress(OSError, ValueError):  # closed by `close`
                for line in stdout:
                    with contextlib.suppress(ValueError, AttributeError):
                        request_id = json.loads(line).get("id")
                        with self._lock:
                            future = self._pending.pop(request_id, None)
                        if future is not None:
                            with contextlib.suppress(InvalidStateError):
                                future.set_result(None)
        with self._lock:  # the helper is gone: the resolver asks the rest itself
            self._gone = True
            left = list(self._pending.values())
            self._pending.clear()
        for future in left:
            with contextlib.suppress(InvalidStateError):
                future.set_result(None)


# --- the helper ----------------------------------------------------------------------------


def serve(stdin: IO[str], stdout: IO[str]) -> None:
    """The helper's side, on these pipes (a forked helper's target)."""
    from nbenv.heap import keep_freed_memory
    from nbenv.resolve.cache import CachePolicy, ResolveCache
    from nbenv.resolve.candidates import releases_for_target
    from nbenv.resolve.index import fetch_project_page

    keep_freed_memory()  # a buffer per page read and parsed: reuse them
    setup = json.loads(stdin.readline() or "null")
    if not setup:
        return
    client = HttpClient.from_settings(setup["client"])
    client.prepare()
    cache = ResolveCache(Path(setup["cache"]), CachePolicy.DEFAULT)
    targets = [Target(**target) for target in setup["targets"]]
    out = threading.Lock()

    def warm(request: dict[str, Any]) -> None:
        # a failure is the resolver's to meet again (it asks the index itself), and report
        with contextlib.suppress(Exception):
            page = fetch_project_page(client, cache, request["index"], request["name"])
            if page is not None:
                for target in targets:
                    releases_for_target(page, target, cache)  # kept in the cache: its summary
        with out:
            send_message(stdout, {"id": request["id"]})  # the parent may be gone

    # No clean-up at the end: once the parent closes our input, what is under way is not
    # needed (the cache's writes are atomic), and the process ends with this function.
    pool = ThreadPoolExecutor(_THREADS, thread_name_prefix="nbenv-page")
    with contextlib.suppress(KeyboardInterrupt):
        for line in stdin:
            pool.submit(warm, json.loads(line))


if __name__ == "__main__":
    serve(sys.stdin, sys.stdout)
    os._exit(0)  # nothing to finalise, and pages under way are not waited for
