"""Downloads in a helper process, for a build that resolves while it downloads.

A cold build resolves on threads (index pages, metadata, JSON parsing) while the wheels the
resolver pins download. In one process they share one GIL: every 16 KB TLS record of a
download waits for it behind the parsing, and handing it to and fro costs CPU of its own.
A helper process downloads under its own GIL. Set B cold, 10 interleaved runs: 2.31 ->
2.15 s median and 3.51 -> 3.00 s of CPU; uv 1.51 s and 1.95 s.

The helper is `python -m nbenv.downloading`. The first line on its stdin sets it up: the
cache root and the HTTP client's settings, credentials included (sent over the pipe, never
on a command line). Then one request per line: {"id", "sha256", "filename", "url", "size"}
to download, {"cancel": id, "sha256"} to stop one. It downloads with nbenv.fetch's Fetcher, so the
cache's guarantees hold as they do in-process: the hash checked before a file enters the
cache, atomic renames, one download of a file at a time across processes. Its answers,
one per line: {"sha256", "done"} as bytes arrive, {"note"}, and at the end {"id", "path"}
or {"id", "error"}. Requests have ids because a file may be asked for again after a
failure or a cancel, while the answer to the earlier request is still on its way.

The helper only saves time: if it cannot start or dies, the downloads it had not finished
go on in this process (their `.part` files resume).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from pathlib import Path
from typing import IO, Any

from nbenv.errors import DownloadError, HashMismatchError, NbenvError
from nbenv.fetch import Artifact, DownloadCancelled, Fetcher, StopSignal
from nbenv.forking import Forked, send_message
from nbenv.heap import keep_freed_memory
from nbenv.net.http import HttpClient
from nbenv.report import NullReporter

__all__ = ["DownloadProcess", "serve"]

_Local = Callable[[Artifact, StopSignal], Path]
_COMMAND = [sys.executable, "-m", "nbenv.downloading"]  # the helper


class DownloadProcess:
    """Runs a Fetcher's downloads in a helper process (started here). Thread-safe."""

    def __init__(
        self,
        cache_root: Path,
        client: HttpClient,
        *,
        progress: Callable[[str, int], None],
        note: Callable[[str], None],
        local: _Local,
        process: Forked | None = None,
    ) -> None:
        """`progress(sha256, bytes)` and `note(text)` relay the helper's reports; `local`
        downloads one file in this process, should the helper be gone. `process`: the
        helper, forked already (`serve`), else one is started here."""
        self._progress = progress
        self._note = note
        self._local = local
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[Artifact, StopSignal, Future[Path]]] = {}
        self._ids = itertools.count()
        self._gone = False
        self._closing = False
        self._proc: subprocess.Popen[str] | Forked | None = process
        try:
            if self._proc is None:
                self._proc = subprocess.Popen(
                    _COMMAND,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    encoding="utf-8",
                    close_fds=True,
                )
            self._send({"cache": str(cache_root), "client": client.settings()})
        except OSError:
            self._gone = True  # every download then runs here
        self._reader = threading.Thread(target=self._read, name="nbenv-download", daemon=True)
        if self._proc is not None:
            self._reader.start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def submit(self, artifact: Artifact, cancel: StopSignal) -> Future[Path]:
        """Download `artifact` in the helper; setting `cancel` stops it there."""
        future: Future[Path] = Future()
        request_id = next(self._ids)
        cancel.on_set = lambda: self._cancel(request_id)
        with self._lock:
            gone = self._gone
            if not gone:
                self._pending[request_id] = (artifact, cancel, future)
                request = {"id": request_id, "sha256": artifact.sha256, "url": artifact.url,
                           "filename": artifact.filename, "size": artifact.size}  # fmt: skip
                gone = not self._send(request)
        if gone:
            self._run_here(artifact, cancel, future)
        return future

    def close(self) -> None:
        """Stop the helper; what it still downloads is cancelled (its `.part` stays, to
        resume), as a killed process leaves it."""
        proc = self._proc
        if proc is None:
            return
        with self._lock:
            self._gone = self._closing = True
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if threading.current_thread() is not self._reader:
            self._reader.join()

    # -- this side of the pipe -------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> bool:
        """Called with the lock held (or before the reader starts); False: the helper is gone."""
        return send_message(self._proc.stdin if self._proc is not None else None, message)

    def _cancel(self, request_id: int) -> None:
        with self._lock:
            entry = None if self._gone else self._pending.get(request_id)
            if entry is not None:
                self._send({"cancel": request_id, "sha256": entry[0].sha256})

    def _read(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        for line in proc.stdout:
            try:
                answer = json.loads(line)
            except ValueError:
                continue  # not ours (a stray print in the helper): ignore it
            if "note" in answer:
                self._note(str(answer["note"]))
                continue
            if "done" in answer:
                self._progress(str(answer["sha256"]), int(answer["done"]))
                continue
            with self._lock:
                entry = self._pending.pop(answer.get("id"), None)
            if entry is None:
                continue
            future = entry[2]
            with contextlib.suppress(InvalidStateError):  # cancelled by its caller meanwhile
                if "path" in answer:
                    future.set_result(Path(answer["path"]))
                else:
                    future.set_exception(_rebuild(answer.get("error") or {}))
        with self._lock:  # the helper ended: whatever it had not finished goes on here
            self._gone = True
            left = list(self._pending.values())
            self._pending.clear()
            closing = self._closing
        if closing:  # ...unless we stopped it: then nobody wants those files any more
            for _artifact, _cancel, future in left:
                with contextlib.suppress(InvalidStateError):
                    future.set_exception(DownloadCancelled())
            return
        if left:
            code = proc.poll()
            self._note(
                "the download process ended"
                + (f" (exit status {code})" if code else "")
                + f"; downloading {len(left)} file(s) in this process"
            )
        for artifact, cancel, future in left:
            self._run_here(artifact, cancel, future)

    def _run_here(self, artifact: Artifact, cancel: StopSignal, future: Future[Path]) -> None:
        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(self._local(artifact, cancel))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=run, name="nbenv-download-here", daemon=True).start()


# --- errors across the pipe -------------------------------------------------------------------


def _describe(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, HashMismatchError):
        return {"kind": "hash", "filename": exc.filename, "url": exc.url,
                "expected": exc.expected, "actual": exc.actual}  # fmt: skip
    if isinstance(exc, DownloadError):
        return {"kind": "download", "filename": exc.filename, "url": exc.url,
                "reason": exc.reason}  # fmt: skip
    if isinstance(exc, DownloadCancelled):
        return {"kind": "cancelled"}
    if isinstance(exc, NbenvError):
        return {"kind": "nbenv", "message": str(exc)}
    return {"kind": "other", "message": f"{type(exc).__name__}: {exc}"}


def _rebuild(error: dict[str, Any]) -> BaseException:
    """The helper's error as the same exception an in-process download raises."""
    kind = error.get("kind")
    if kind == "hash":
        return HashMismatchError(error["filename"], error["url"], error["expected"],
                                 error["actual"])  # fmt: skip
    if kind == "download":
        return DownloadError(error["filename"], error["url"], error["reason"])
    if kind == "cancelled":
        return DownloadCancelled()
    return NbenvError(str(error.get("message") or "the download process failed"))


# --- the helper -------------------------------------------------------------------------------


class _Notes(NullReporter):
    """The helper's reporter: notes go back over the pipe (progress goes by `on_progress`;
    stages are the parent's)."""

    def __init__(self, send: Callable[[dict[str, Any]], None]) -> None:
        self._send = send

    def note(self, message: str) -> None:
        self._send({"note": message})


def _work(stdin: IO[str], stdout: IO[str]) -> None:
    out = threading.Lock()

    def send(message: dict[str, Any]) -> None:
        with out:
            send_message(stdout, message)  # the parent may be gone: nothing to tell then

    setup = json.loads(stdin.readline() or "null")
    if not setup:
        return
    client = HttpClient.from_settings(setup["client"])
    client.prepare()  # the parent asks once its resolver pins a file: be ready by then
    fetcher = Fetcher(client, Path(setup["cache"]),
                      reporter=_Notes(send), on_progress=lambda sha, done: send(
                          {"sha256": sha, "done": done}))  # fmt: skip
    # No clean-up at the end: the parent is done or gone. Downloads still under way are
    # dropped where they are, as a kill leaves them (their `.part` resumes; the file
    # locks go with the process), instead of waiting for a stalled server.
    current: dict[str, int] = {}  # sha256 -> the id of the request its job serves
    for line in stdin:
        request = json.loads(line)
        if "cancel" in request:
            if current.get(request["sha256"]) == request["cancel"]:  # not a newer request's
                fetcher.cancel(request["sha256"])
            continue
        request_id, sha = request["id"], request["sha256"]
        # Asked again (the parent has no job for this file any more): the earlier job
        # failed, ended or was cancelled; its answer must not serve this request.
        fetcher.cancel(sha)
        current[sha] = request_id
        try:
            artifact = Artifact(request["filename"], request["url"], sha, request["size"])
            future = fetcher.start(artifact)
        except Exception as exc:
            send({"id": request_id, "error": _describe(exc)})
            continue
        if future is None:  # in the cache already (another process put it there)
            send({"id": request_id, "path": str(fetcher.path_for(artifact))})
            continue
        future.add_done_callback(_answering(request_id, send))


def _answering(
    request_id: int, send: Callable[[dict[str, Any]], None]
) -> Callable[[Future[Path]], None]:
    def answer(future: Future[Path]) -> None:
        if future.cancelled():
            send({"id": request_id, "error": {"kind": "cancelled"}})
        elif (error := future.exception()) is not None:
            send({"id": request_id, "error": _describe(error)})
        else:
            send({"id": request_id, "path": str(future.result())})

    return answer


def serve(stdin: IO[str], stdout: IO[str]) -> None:
    """The helper's side, on these pipes (a forked helper's target)."""
    keep_freed_memory()  # a buffer per MB written: reuse them, not new pages
    with contextlib.suppress(KeyboardInterrupt):
        _work(stdin, stdout)
    stdout.flush()


if __name__ == "__main__":
    serve(sys.stdin, sys.stdout)
    os._exit(0)  # nothing to finalise; skips the interpreter's teardown
