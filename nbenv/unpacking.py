"""Wheels unpacked into the cache by worker processes, for builds with a lot to unpack.

Unpacking is Python code around zlib and a file write per member: on threads, one GIL
serialises it (set B, 330 MB in 7,263 files: 2.5 s on one thread, 2.2 s on four). Worker
processes each have their own, and page-cache writes scale with cores. A worker is
`python -m nbenv.unpacking`: one job per line on stdin (JSON: cache root, wheel path,
sha256), one answer per line on stdout, nothing else. It unpacks through
`nbenv.wheelcache.WheelCache`, so the cache's guarantees (checks before writing, atomic
rename, one unpacker per wheel across processes) hold as they do on threads; the parent
reads the manifest the worker left.

A worker whose parent dies sees its stdin close after the wheel at hand and exits.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any

from nbenv.errors import InstallError, InvalidWheelError, UnsafeWheelError
from nbenv.wheelcache import UnpackedWheel, WheelCache, WheelToInstall

__all__ = ["UnpackWorkers"]

_Result = tuple[UnpackedWheel, bool]
_Job = tuple[int, int, WheelToInstall, "Future[_Result]"]


class UnpackWorkers:
    """`processes` worker processes fed from one queue, biggest wheel first, so the long
    unpacks start early and the small ones fill the gaps. Thread-safe."""

    def __init__(self, cache_root: Path, processes: int) -> None:
        self.cache = WheelCache(cache_root)
        self._root = cache_root
        self._jobs: queue.PriorityQueue[_Job | tuple[int, int, None, None]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._closed = False
        self._lock = threading.Lock()
        self._futures: dict[str, Future[_Result]] = {}
        # started now: their interpreter start-up overlaps the downloads
        self._procs = [_start() for _ in range(max(1, processes))]
        self._threads = [
            threading.Thread(target=self._serve, args=(proc,), name="nbenv-unpack", daemon=True)
            for proc in self._procs
        ]
        for thread in self._threads:
            thread.start()

    @property
    def size(self) -> int:
        return len(self._procs)

    def submit(self, wheel: WheelToInstall) -> Future[_Result]:
        with self._lock:
            future = self._futures.get(wheel.sha256)
            if future is None:
                future = Future()
                self._futures[wheel.sha256] = future
                if self._closed:
                    future.set_exception(InstallError("the unpacking workers were shut down"))
                else:
                    size = _size(wheel.path)
                    self._jobs.put((-size, next(self._order), wheel, future))
            return future

    def close(self, *, cancel: bool = False) -> None:
        """Wait for the queued unpacks (`cancel`: drop them and stop the workers now; an
        unpack cut short leaves only a temp dir the next unpacker of that wheel removes)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if cancel:
            self._drain()
            for proc in self._procs:
                proc.kill()
        for _ in self._threads:
            self._jobs.put((1, next(self._order), None, None))  # after every real job
        for thread in self._threads:
            thread.join()
        for proc in self._procs:
            _stop(proc)

    def _drain(self) -> None:
        while True:
            try:
                _, _, _, future = self._jobs.get_nowait()
            except queue.Empty:
                return
            if future is not None:
                future.cancel()

    def _serve(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        while True:
            _, _, wheel, future = self._jobs.get()
            if wheel is None or future is None:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self._ask(proc, proc.stdin, proc.stdout, wheel))
            except BaseException as exc:
                future.set_exception(exc)

    def _ask(
        self, proc: subprocess.Popen[str], stdin: IO[str], stdout: IO[str], wheel: WheelToInstall
    ) -> _Result:
        job = {"cache": str(self._root), "path": str(wheel.path), "sha256": wheel.sha256,
               "verified": wheel.verified}  # fmt: skip
        try:
            stdin.write(json.dumps(job) + "\n")
            stdin.flush()
            line = stdout.readline()
        except (OSError, ValueError):
            line = ""
        if not line:
            code = proc.poll()
            raise InstallError(
                f"The process unpacking {wheel.path.name} died"
                + (f" (exit status {code})" if code is not None else "")
                + "; nothing of it entered the cache. Run the command again."
            )
        answer = json.loads(line)
        if "error" in answer:
            raise _rebuild(answer["error"], wheel.path.name)
        unpacked, _ = self.cache.get(wheel)  # the worker's manifest, now on disk
        return unpacked, bool(answer["fresh"])


def _start() -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "nbenv.unpacking"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        close_fds=True,
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# --- errors across the pipe ----------------------------------------------------------------


def _describe(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, UnsafeWheelError):
        return {"kind": "unsafe", "wheel": exc.wheel, "member": exc.member}
    if isinstance(exc, InvalidWheelError):
        return {"kind": "invalid", "wheel": exc.wheel, "reason": exc.reason}
    if isinstance(exc, InstallError):
        return {"kind": "install", "message": str(exc)}
    if isinstance(exc, OSError):
        return {"kind": "os", "errno": exc.errno, "strerror": exc.strerror,
                "filename": exc.filename, "message": str(exc)}  # fmt: skip
    return {"kind": "other", "message": f"{type(exc).__name__}: {exc}"}


def _rebuild(error: dict[str, Any], filename: str) -> BaseException:
    """The worker's error as the same exception the thread path raises."""
    kind = error.get("kind")
    if kind == "unsafe":
        return UnsafeWheelError(error["wheel"], error["member"])
    if kind == "invalid":
        return InvalidWheelError(error["wheel"], error["reason"])
    if kind == "install":
        return InstallError(error["message"])
    if kind == "os" and error.get("errno") is not None:
        return OSError(error["errno"], error["strerror"], error["filename"])
    return InstallError(f"Unpacking {filename} failed: {error.get('message')}")


# --- the worker ----------------------------------------------------------------------------


def _work(stdin: IO[str], stdout: IO[str]) -> None:
    caches: dict[str, WheelCache] = {}
    for line in stdin:
        job = json.loads(line)
        cache = caches.setdefault(job["cache"], WheelCache(Path(job["cache"])))
        wheel = WheelToInstall(Path(job["path"]), job["sha256"], verified=bool(job["verified"]))
        try:
            _, fresh = cache.get(wheel)
            answer: dict[str, Any] = {"fresh": fresh}
        except Exception as exc:
            answer = {"error": _describe(exc)}
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        _work(sys.stdin, sys.stdout)
    os._exit(0)  # nothing to finalise; skips the interpreter's teardown
