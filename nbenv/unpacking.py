"""Wheels unpacked into the cache, and installed from it, by worker processes.

Unpacking is Python code around zlib and a file write per member: on threads, one GIL
serialises it (set B, 330 MB in 7,263 files: 2.5 s on one thread, 2.2 s on four). Worker
processes each have their own, and page-cache writes scale with cores. Installing an
unpacked wheel (a link per file, then its scripts and RECORD) is the same kind of work:
set B linked in 0.09 s on two workers against 0.17-0.22 s on two threads.

A worker is a fork of the caller when it can be (nbenv.forking: no interpreter start, at a
lower priority), else `python -m nbenv.unpacking`: one job per line on stdin (JSON), one
answer per line on stdout, nothing else. It unpacks through `nbenv.wheelcache.WheelCache`, so the
cache's guarantees (checks before writing, atomic rename, one unpacker per wheel across
processes) hold as they do on threads; the parent reads the manifest the worker left. It
installs through nbenv.install's own code; the parent has checked the wheels for conflicts,
and a path found taken is sent back for the parent to judge (`Installed.taken`).

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
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from concurrent.futures import Future
from dataclasses import asdict, astuple, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from nbenv.errors import (
    InstallConflictError,
    InstallError,
    InvalidWheelError,
    UnsafeWheelError,
    UsageError,
)
from nbenv.forking import Forked, can_fork, stop

if TYPE_CHECKING:  # imported where used: forking workers early needs only this module
    from nbenv.linking import Tally
    from nbenv.venv import Layout
    from nbenv.wheelcache import UnpackedWheel, WheelCache, WheelToInstall

__all__ = ["Installed", "UnpackWorkers", "can_fork", "process_budget"]

_Result = tuple["UnpackedWheel", bool]
# one line of work for a worker: the job, the future to settle, how an answer settles it
_Task = tuple[dict[str, Any], "Future[Any]", Callable[[dict[str, Any]], Any], str]
_Job = tuple[int, int, "_Task | None"]
_MAX_PROCESSES = 4
# The queue's order: unpacks first, biggest first (the last big unpack ends the build:
# it must not wait behind installs), then installs, then the workers' stop signals.
_INSTALLS = 1 << 40
_STOP = 1 << 62
_NICE = 10  # added to the workers' nice value (see _lower_priority)


@dataclass(frozen=True)
class Installed:
    """What a worker's install of one wheel did."""

    tally: Tally
    taken: tuple[str, ...]  # paths that existed already: the parent says if it was shared
    notes: tuple[str, ...]  # the linker's notes (e.g. "cannot hardlink ... copying files")


class UnpackWorkers:
    """`processes` worker processes fed from one queue: unpacks first, biggest wheel
    first, so the long unpacks start early and the small ones fill the gaps; installs
    after them. Thread-safe."""

    def __init__(self, cache_root: Path, processes: int, *, fork: bool = False) -> None:
        """`fork`: fork the workers (the caller checked `can_fork`), else start them."""
        self._cache: WheelCache | None = None
        self._root = cache_root
        self._jobs: queue.PriorityQueue[_Job] = queue.PriorityQueue()
        self._order = itertools.count()
        self._closed = False
        self._lock = threading.Lock()
        self._futures: dict[str, Future[_Result]] = {}
        # started now: their interpreter start-up overlaps the downloads
        self._procs = [_start(fork) for _ in range(max(1, processes))]
        self._threads = [
            threading.Thread(target=self._serve, args=(proc,), name="nbenv-unpack", daemon=True)
            for proc in self._procs
        ]
        for thread in self._threads:
            thread.start()

    @property
    def size(self) -> int:
        return len(self._procs)

    @property
    def cache(self) -> WheelCache:
        if self._cache is None:
            from nbenv.wheelcache import WheelCache

            self._cache = WheelCache(self._root)
        return self._cache

    def submit(self, wheel: WheelToInstall) -> Future[_Result]:
        with self._lock:
            future = self._futures.get(wheel.sha256)
            if future is None:
                future = Future()
                self._futures[wheel.sha256] = future
                job = {"op": "unpack", "cache": str(self._root), "path": str(wheel.path),
                       "sha256": wheel.sha256, "verified": wheel.verified}  # fmt: skip

                def settle(answer: dict[str, Any]) -> _Result:
                    unpacked, _ = self.cache.get(wheel)  # the worker's manifest, now on disk
                    return unpacked, bool(answer["fresh"])

                task = (job, future, settle, f"unpacking {wheel.path.name}")
                self._put(-_size(wheel.path), task)
            return future

    def install(
        self,
        wheel: UnpackedWheel,
        schemes: Layout,
        interpreter: str,
        link_mode: str,
        *,
        requested: bool,
    ) -> Future[Installed]:
        """Install the unpacked `wheel` into the env of `schemes` (conflicts checked by
        the caller), its scripts naming `interpreter`."""
        job = {"op": "install", "home": str(wheel.home), "layout": asdict(schemes),
               "interpreter": interpreter, "mode": link_mode, "requested": requested}  # fmt: skip

        def settle(answer: dict[str, Any]) -> Installed:
            from nbenv.linking import Tally

            return Installed(Tally(*answer["tally"]), tuple(answer["taken"]),
                             tuple(answer["notes"]))  # fmt: skip

        future: Future[Installed] = Future()
        with self._lock:
            self._put(_INSTALLS - len(wheel.files),
                      (job, future, settle, f"installing {wheel.filename}"))  # fmt: skip
        return future

    def _put(self, priority: int, task: _Task) -> None:
        """Called with the lock held."""
        if self._closed:
            task[1].set_exception(InstallError("the unpacking workers were shut down"))
        else:
            self._jobs.put((priority, next(self._order), task))

    def close(self, *, cancel: bool = False) -> None:
        """Wait for the queued jobs (`cancel`: drop them and stop the workers now; an
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
            self._jobs.put((_STOP, next(self._order), None))  # after every real job
        for thread in self._threads:
            thread.join()
        for proc in self._procs:
            stop(proc)

    def _drain(self) -> None:
        while True:
            try:
                _, _, task = self._jobs.get_nowait()
            except queue.Empty:
                return
            if task is not None:
                task[1].cancel()

    def _serve(self, proc: _Worker) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        while True:
            _, _, task = self._jobs.get()
            if task is None:
                return
            job, future, settle, what = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(settle(self._ask(proc, proc.stdin, proc.stdout, job, what)))
            except BaseException as exc:
                future.set_exception(exc)

    def _ask(
        self,
        proc: _Worker,
        stdin: IO[str],
        stdout: IO[str],
        job: dict[str, Any],
        what: str,
    ) -> dict[str, Any]:
        try:
            stdin.write(json.dumps(job) + "\n")
            stdin.flush()
            line = stdout.readline()
        except (OSError, ValueError):
            line = ""
        if not line:
            code = proc.poll()
            status = f" (exit status {code})" if code is not None else ""
            if job["op"] == "unpack":
                raise InstallError(f"The process {what} died{status}; nothing of it entered "
                                   "the cache. Run the command again.")  # fmt: skip
            raise InstallError(f"The process {what} died{status}. Run the command again.")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise _rebuild(answer["error"], Path(job.get("path") or job["home"]).name)
        return answer


def process_budget() -> tuple[int, bool]:
    """(processes a big unpack may use, whether NBENV_UNPACK_PROCESSES forces that many)."""
    forced = os.environ.get("NBENV_UNPACK_PROCESSES", "").strip()
    if forced:
        try:
            return max(0, int(forced)), True
        except ValueError:
            raise UsageError(
                f"NBENV_UNPACK_PROCESSES={forced!r}: give a number of processes (0: threads)"
            ) from None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (0 if not cpus or cpus < 2 else min(cpus, _MAX_PROCESSES)), False


def _start(fork: bool) -> _Worker:
    if fork and can_fork():
        return Forked(_work, nice=_NICE)
    return subprocess.Popen(
        [sys.executable, "-m", "nbenv.unpacking"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        close_fds=True,
    )


_Worker = subprocess.Popen[str] | Forked


def _lower_priority() -> None:
    """A started worker's `_NICE` (a forked one gets it from `Forked`): workers run at a
    lower priority than the command that started them. While wheels still download, the
    download process (and the resolver) come first, and they are what the build waits
    for; a wheel unpacked sooner is not (set B cold: 2.14 s at the same priority, 1.98 s
    at nice 10, 8 alternating runs each). With more CPUs than work, nothing changes."""
    with contextlib.suppress(OSError):
        os.nice(_NICE)


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
    if isinstance(exc, InstallConflictError):
        return {"kind": "conflict", "path": exc.path, "wheels": list(exc.wheels)}
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
    if kind == "conflict":
        return InstallConflictError(error["path"], error["wheels"])
    if kind == "install":
        return InstallError(error["message"])
    if kind == "os" and error.get("errno") is not None:
        return OSError(error["errno"], error["strerror"], error["filename"])
    return InstallError(f"Unpacking {filename} failed: {error.get('message')}")


# --- the worker ----------------------------------------------------------------------------


def _work(stdin: IO[str], stdout: IO[str]) -> None:
    from nbenv.heap import keep_freed_memory
    from nbenv.wheelcache import WheelCache, WheelToInstall

    keep_freed_memory()  # a buffer per member read and inflated: reuse them, not new pages

    caches: dict[str, WheelCache] = {}
    for line in stdin:
        job = json.loads(line)
        try:
            if job.get("op") == "install":
                answer = _install(job)
            else:
                cache = caches.setdefault(job["cache"], WheelCache(Path(job["cache"])))
                wheel = WheelToInstall(Path(job["path"]), job["sha256"],
                                       verified=bool(job["verified"]))  # fmt: skip
                _, fresh = cache.get(wheel)
                answer = {"fresh": fresh}
        except Exception as exc:
            answer = {"error": _describe(exc)}
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()


def _install(job: dict[str, Any]) -> dict[str, Any]:
    from nbenv.install import install_one
    from nbenv.linking import Linker
    from nbenv.venv import Layout
    from nbenv.wheelcache import load_unpacked

    unpacked = load_unpacked(Path(job["home"]))
    taken: list[str] = []
    notes: list[str] = []
    linker = Linker(job["mode"], _Notes(notes))
    tally = install_one(unpacked, Layout(**job["layout"]), job["interpreter"], linker,
                        _Taken(taken), requested=bool(job["requested"]))  # fmt: skip
    return {"tally": astuple(tally), "taken": taken, "notes": notes}


class _Taken(AbstractSet[str]):
    """The paths found existing, each taken to be shared for now: the parent, which knows
    every wheel's paths, judges them."""

    def __init__(self, seen: list[str]) -> None:
        self._seen = seen

    def __contains__(self, path: object) -> bool:
        self._seen.append(str(path))
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class _Notes:  # a Reporter that keeps the notes, to send them back
    def __init__(self, notes: list[str]) -> None:
        self._notes = notes

    def stage(self, name: str) -> None:
        pass

    def progress(self, name: str, done: int, total: int | None) -> None:
        pass

    def note(self, message: str) -> None:
        self._notes.append(message)

    def cached(self, name: str, hits: int, total: int) -> None:
        pass


if __name__ == "__main__":
    _lower_priority()
    with contextlib.suppress(KeyboardInterrupt):
        _work(sys.stdin, sys.stdout)
    os._exit(0)  # nothing to finalise; skips the interpreter's teardown
