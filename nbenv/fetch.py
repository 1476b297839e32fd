"""Downloads for building environments: parallel, hash-verified, content-addressed.

    cache_root/files/<sha[:2]>/<sha>/<filename>        verified files only (moved in by rename)
    cache_root/files/<sha[:2]>/<sha>/<filename>.part   a download under way, or a killed one's
    cache_root/files/<sha[:2]>/<sha>/.lock             one downloader per file, across threads
                                                       and processes

A file enters the cache only after its sha256 matched the lock, so a cached file is trusted
by name and size and never re-hashed. A `.part` left by a killed process is continued with
an HTTP range request (after re-hashing what it holds), or restarted when the server does not
do ranges. The lock is an OS file lock, so a dead holder never blocks anyone.

`start` begins a download before anyone asks for it (the resolver pinned that wheel, so the
lock will most likely name it): building an env then overlaps resolution with downloads. A
later `fetch` of the same file waits for that download instead of starting another; what
the lock does not name is stopped by `discard` (its `.part` stays, resumable).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import os
import re
import threading
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import filelock

from nbenv.errors import (
    DownloadError,
    HashMismatchError,
    IndexAccessError,
    NbenvError,
    OfflineFetchError,
)
from nbenv.net.auth import redact
from nbenv.net.http import HttpClient
from nbenv.report import NullReporter, Reporter

if TYPE_CHECKING:
    from nbenv.downloading import DownloadProcess
    from nbenv.forking import Forked

__all__ = ["Artifact", "Fetcher"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_READ = 1024 * 1024
_STAGE = "downloading"
# Big files are bound by CPU (TLS, hashing, page-cache writes, all under one GIL), small
# ones by round trips. Set B cold with N threads for every file: 16 -> 1.90-2.03 s, 4 ->
# 1.86, 3 -> 1.72-1.81, 2 -> 1.71 (medians of 5 each, this 2-CPU machine, a mirror giving
# 350 MB/s to one connection): many big streams at once only contend. So files of _BIG
# bytes or more get a few threads of their own (3: a slower link still has parallelism);
# the small ones keep many.
_BIG = 2 * 1024 * 1024
_BIG_WORKERS = 3
# ...and those wait their turn biggest first: the resolver pins set B's wheels in its own
# order (scipy, 33 MB, came 16th of 18), and the biggest wheel's download and unpack are the
# tail of the whole build.


@dataclass(frozen=True)
class Artifact:
    """One file a lock names. The URL comes from the lock and carries no credentials;
    they come from the client's Credentials (index URLs, netrc)."""

    filename: str
    url: str
    sha256: str
    size: int | None = None

    def __post_init__(self) -> None:
        # Locks travel with notebooks: a crafted name must not write outside the cache.
        name = self.filename
        if name in ("", ".", "..") or name != Path(name).name or "\\" in name:
            raise NbenvError(f"Refusing to download {self.filename!r}: not a plain file name")
        if not _SHA256.fullmatch(self.sha256.lower()):
            raise NbenvError(f"{self.filename}: {self.sha256!r} is not a sha256 hex digest")
        object.__setattr__(self, "sha256", self.sha256.lower())


class DownloadCancelled(Exception):
    """Another download failed or the caller was interrupted; the `.part` stays resumable."""


class StopSignal(threading.Event):
    """A download's stop signal; `on_set` also passes it on (to nbenv.downloading's helper
    process, when that process does the download)."""

    def __init__(self) -> None:
        super().__init__()
        self.on_set: Callable[[], None] | None = None

    def set(self) -> None:
        super().set()
        if self.on_set is not None:
            self.on_set()


class _Stop(Exception):
    """A download of this fetch failed: stop the others, then report it."""


class _Progress:
    """Bytes done per file, from the download threads. What a `fetch` waits for is reported
    (its total, its files' bytes); a download started ahead of any fetch counts silently
    until a fetch takes it over."""

    def __init__(self, listener: Callable[[str, int], None] | None = None) -> None:
        self._listener = listener
        self._per_file: dict[str, int] = {}
        self._lock = threading.Lock()
        self._reporter: Reporter = NullReporter()
        self._watched: frozenset[str] = frozenset()
        self._total: int | None = None

    def watch(self, reporter: Reporter, shas: frozenset[str], total: int | None) -> None:
        with self._lock:
            self._reporter, self._watched, self._total = reporter, shas, total
            if any(self._per_file.get(sha) for sha in shas):  # downloads begun before
                self._report()

    def set(self, sha256: str, done: int) -> None:
        with self._lock:
            self._per_file[sha256] = done
            if sha256 in self._watched:
                self._report()
            if self._listener is not None:
                self._listener(sha256, done)

    def _report(self) -> None:
        """Called with the lock held: reports reach the reporter in order."""
        done = sum(self._per_file.get(sha, 0) for sha in self._watched)
        self._reporter.progress(_STAGE, done, self._total)


@dataclass
class _Job:
    """One download under way for this fetcher (at most one per sha256)."""

    artifact: Artifact
    future: Future[Path]
    cancel: StopSignal


class Fetcher:
    """Thread-safe; several fetchers (and processes) may share one cache root. Close it (or
    use it as a context manager) to stop downloads still under way."""

    def __init__(
        self,
        client: HttpClient,
        cache_root: Path,
        *,
        workers: int = 16,
        big_workers: int = _BIG_WORKERS,
        reporter: Reporter | None = None,
        offline: bool = False,
        lock_timeout: float = 3600.0,
        helper_process: bool = False,
        on_progress: Callable[[str, int], None] | None = None,
    ) -> None:
        """`helper_process`: download in a process of its own (nbenv.downloading), for a
        caller whose threads need this process's GIL meanwhile (a resolver); it starts at
        the first download. `on_progress(sha256, bytes)`: every file's progress."""
        self.client = client
        self.root = cache_root / "files"
        self.workers = max(1, workers)
        self.big_workers = max(1, min(big_workers, self.workers))
        self.reporter = reporter or NullReporter()
        self.offline = offline
        self.lock_timeout = lock_timeout  # how long to wait for another process's download
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}  # sha256 -> the download under way or done
        self._pool: ThreadPoolExecutor | None = None
        self._big_pool: ThreadPoolExecutor | None = None
        self._big_queue: list[tuple[int, int, _Job]] = []  # a heap: biggest first
        self._order = itertools.count()
        self._progress = _Progress(on_progress)
        self._helper_wanted = helper_process
        self._helper: DownloadProcess | None = None
        self._closed = False

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every download still under way (at its next chunk) and wait for it."""
        with self._lock:
            self._closed = True
            pools = [self._pool, self._big_pool]
            self._pool = self._big_pool = None
            helper, self._helper = self._helper, None
            for job in self._jobs.values():
                job.cancel.set()
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            queued, self._big_queue = self._big_queue, []
        for _, _, job in queued:  # never started: their turn was cancelled with the pool
            job.future.cancel()
        if helper is not None:
            helper.close()

    def path_for(self, artifact: Artifact) -> Path:
        """Where the verified file lives once fetched."""
        sha = artifact.sha256
        return self.root / sha[:2] / sha / artifact.filename

    def cached(self, artifact: Artifact) -> Path | None:
        path = self.path_for(artifact)
        try:
            size = path.stat().st_size
        except OSError:
            return None
        return path if artifact.size is None or size == artifact.size else None

    def start(self, artifact: Artifact) -> Future[Path] | None:
        """Begin downloading `artifact` in the background unless it is cached (None) or
        under way. A failure is kept for a `fetch` of the same file, which retries it."""
        if self.offline or self.cached(artifact) is not None:
            return None
        with self._lock:
            if self._closed:
                return None
            job = self._jobs.get(artifact.sha256)
            if job is None:
                job = self._jobs[artifact.sha256] = self._submit(artifact)
            return job.future

    def discard(self, keep: Collection[str]) -> None:
        """Stop the downloads `start` began whose sha256 is not in `keep` (the lock did not
        name them); their `.part` stays, resumable."""
        with self._lock:
            for sha in [sha for sha in self._jobs if sha not in keep]:
                self._jobs.pop(sha).cancel.set()

    def cancel(self, sha256: str) -> None:
        """Stop the download of `sha256` that `start` began, if any (as `discard` does)."""
        with self._lock:
            job = self._jobs.pop(sha256, None)
        if job is not None:
            job.cancel.set()

    def _forget(self, shas: Collection[str]) -> None:
        """Drop the finished jobs of `shas`: a later fetch checks the cache afresh (the file
        may have been removed since) and retries a failure."""
        with self._lock:
            for sha in shas:
                job = self._jobs.get(sha)
                if job is not None and job.future.done():
                    del self._jobs[sha]

    def start_helper(self, process: Forked | None = None) -> None:
        """Start the download process now rather than at the first download (its start-up
        then overlaps work that leaves a core idle); `process`: one forked already
        (running nbenv.downloading.serve), which this fetcher then owns."""
        with self._lock:
            if self._helper_wanted and not self._closed:
                self._start_helper(process)

    def _start_helper(self, process: Forked | None = None) -> DownloadProcess:
        """Called with self._lock held."""
        if self._helper is None:
            from nbenv.downloading import DownloadProcess

            self._helper = DownloadProcess(
                self.root.parent, self.client, progress=self._progress.set,
                note=self.reporter.note, local=self._obtain, process=process,
            )  # fmt: skip
        return self._helper

    def _submit(self, artifact: Artifact) -> _Job:
        """Called with self._lock held."""
        cancel = StopSignal()
        if self._helper_wanted:
            return _Job(artifact, self._start_helper().submit(artifact, cancel), cancel)
        if artifact.size is not None and artifact.size >= _BIG:
            if self._big_pool is None:
                self._big_pool = ThreadPoolExecutor(self.big_workers, "nbenv-fetch-big")
            job = _Job(artifact, Future(), cancel)
            heapq.heappush(self._big_queue, (-artifact.size, next(self._order), job))
            self._big_pool.submit(self._next_big)  # one turn per job: each runs once
            return job
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, "nbenv-fetch")
        return _Job(artifact, self._pool.submit(self._obtain, artifact, cancel), cancel)

    def _next_big(self) -> None:
        """A big-file thread's turn: download the biggest file waiting now."""
        with self._lock:
            if not self._big_queue:
                return  # close() cancelled them
            job = heapq.heappop(self._big_queue)[2]
        if job.cancel.is_set():  # discarded, or its fetch failed, before its turn came
            job.future.cancel()
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            job.future.set_result(self._obtain(job.artifact, job.cancel))
        except BaseException as exc:
            job.future.set_exception(exc)

    def fetch(
        self,
        artifacts: Sequence[Artifact],
        *,
        on_ready: Callable[[Artifact, Path], None] | None = None,
    ) -> dict[str, Path]:
        """sha256 -> verified local path for every artifact, downloading what is missing.

        `on_ready(artifact, path)` is called once per file as soon as it is verified (cached
        files first, then as downloads end, from the calling thread), so the caller can
        start using early files while the big ones still arrive."""
        ready = on_ready or (lambda artifact, path: None)
        unique: dict[str, Artifact] = {}
        for artifact in artifacts:
            unique.setdefault(artifact.sha256, artifact)  # same bytes: one file, one download
        found: dict[str, Path] = {}
        missing: list[Artifact] = []
        early = 0  # done by a download `start` began: not a cache hit
        for sha, artifact in unique.items():
            with self._lock:
                job = self._jobs.get(sha)
            if job is not None and not job.future.done():
                missing.append(artifact)  # under way: waited for below
                continue
            path = self.cached(artifact)
            if path is None:
                missing.append(artifact)
            else:
                early += job is not None and not _failed(job.future)
                found[sha] = path
                ready(artifact, path)
        self.reporter.cached(_STAGE, len(found) - early, len(unique))
        self._forget(unique)
        if not missing:
            return found
        if self.offline:
            raise OfflineFetchError([f"{a.filename} ({redact(a.url)})" for a in missing])
        self.reporter.stage(_STAGE)
        sizes = [a.size for a in missing]
        total = None if None in sizes else sum(s for s in sizes if s is not None)
        self._progress.watch(self.reporter, frozenset(a.sha256 for a in missing), total)
        # Largest first: the long downloads start at once instead of trailing at the end.
        order = sorted(missing, key=lambda a: -(a.size or 0))
        jobs: dict[Future[Path], _Job] = {}
        with self._lock:
            if self._closed:
                raise NbenvError("the download cache was closed")  # a programming error
            for artifact in order:
                job = self._jobs.get(artifact.sha256)  # one still under way, or none
                if job is None:
                    job = self._jobs[artifact.sha256] = self._submit(artifact)
                jobs[job.future] = job
        try:
            pending = set(jobs)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    if _failed(future):
                        raise _Stop
                    ready(jobs[future].artifact, future.result())
        except BaseException as exc:  # a failure, a failing on_ready, Ctrl-C: stop the others
            for job in jobs.values():
                job.cancel.set()
            wait(jobs)
            if not isinstance(exc, _Stop):
                raise
            errors = {j.artifact.sha256: f.exception() for f, j in jobs.items() if _failed(f)
                      and not f.cancelled()}  # fmt: skip
            for artifact in missing:  # report the first failure in the caller's order
                error = errors.get(artifact.sha256)
                if error is not None and not isinstance(error, DownloadCancelled):
                    raise error from None
            raise NbenvError("the downloads were stopped before they ended") from None
        finally:
            self._forget(unique)
        for future, job in jobs.items():
            found[job.artifact.sha256] = future.result()
        return {sha: found[sha] for sha in unique}

    # -- one file --------------------------------------------------------------------------

    def _obtain(self, artifact: Artifact, cancel: threading.Event) -> Path:
        progress = self._progress
        final = self.path_for(artifact)
        final.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(final.parent / ".lock"))
        self._acquire(lock, artifact, cancel)
        try:
            path = self.cached(artifact)  # downloaded by whoever held the lock before us
            if path is not None:
                progress.set(artifact.sha256, artifact.size or 0)
                return path
            final.unlink(missing_ok=True)  # a cached file of the wrong size
            return self._download(artifact, final, progress, cancel)
        except OSError as exc:
            raise NbenvError(
                f"Could not store {artifact.filename} in the download cache {final.parent}: "
                f"{exc.strerror or exc}"
            ) from None
        finally:
            lock.release()

    def _acquire(
        self, lock: filelock.BaseFileLock, artifact: Artifact, cancel: threading.Event
    ) -> None:
        try:
            lock.acquire(timeout=0)
            return
        except filelock.Timeout:
            self.reporter.note(f"waiting for another download of {artifact.filename}")
        waited = 0.0
        while waited < self.lock_timeout:  # in steps, so a failure elsewhere stops the wait
            if cancel.is_set():
                raise DownloadCancelled
            try:
                lock.acquire(timeout=min(1.0, self.lock_timeout - waited))
                return
            except filelock.Timeout:
                waited += 1.0
        raise DownloadError(
            artifact.filename,
            redact(artifact.url),
            f"another process has been downloading it for over {self.lock_timeout:.0f} s "
            f"(lock: {lock.lock_file})",
        )

    def _download(
        self, artifact: Artifact, final: Path, progress: _Progress, cancel: threading.Event
    ) -> Path:
        part = final.with_name(final.name + ".part")
        digest = hashlib.sha256()
        hashed = 0
        if part.exists():
            if artifact.size is not None and part.stat().st_size > artifact.size:
                part.unlink()
            else:
                digest, hashed = _hash_file(part)
                progress.set(artifact.sha256, hashed)
                if hashed == artifact.size and digest.hexdigest() == artifact.sha256:
                    os.replace(part, final)  # finished before its process died
                    return final

        def on_chunk(offset: int, data: bytes) -> None:
            nonlocal digest, hashed
            if cancel.is_set():
                raise DownloadCancelled
            if offset == 0 and hashed:  # the server ignored the range: it starts over
                digest, hashed = hashlib.sha256(), 0
            digest.update(data)
            hashed += len(data)
            progress.set(artifact.sha256, hashed)

        url = redact(artifact.url)
        for fresh in (False, True):
            if fresh:  # a resumed file failed the check: the old bytes may be the bad ones
                part.unlink(missing_ok=True)
                digest, hashed = hashlib.sha256(), 0
                progress.set(artifact.sha256, 0)
            if cancel.is_set():
                raise DownloadCancelled
            try:
                result = self.client.download(artifact.url, part, on_chunk=on_chunk)
            except IndexAccessError as exc:
                raise DownloadError(artifact.filename, exc.url, exc.reason) from None
            if result.status not in (200, 206):
                raise DownloadError(artifact.filename, result.url, _explain(result.status))
            if hashed != result.size:  # a restart with an empty body: on_chunk never ran
                digest, hashed = _hash_file(part)
            actual = digest.hexdigest()
            if actual == artifact.sha256:
                os.replace(part, final)
                return final
            if not result.resumed_from or fresh:
                part.unlink(missing_ok=True)
                raise HashMismatchError(artifact.filename, url, artifact.sha256, actual)
        raise AssertionError("unreachable")


def _failed(future: Future[Path]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)


def _hash_file(path: Path) -> tuple[hashlib._Hash, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(_READ):
            digest.update(chunk)
            size += len(chunk)
    return digest, size


def _explain(status: int) -> str:
    if status in (401, 403):
        return (
            f"HTTP {status}: the index refused access; put credentials in the index URL "
            "(https://user:token@host/simple) or in ~/.netrc"
        )
    if status in (404, 410):
        return (
            f"HTTP {status}: the index no longer serves this file; if the release was "
            "removed, re-lock with `nbenv lock --refresh`"
        )
    return f"HTTP {status}"
