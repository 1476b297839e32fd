"""Environments from wheels: a venv, then each wheel unpacked once and hardlinked after.

The venv comes from nbenv.venv, the unpacked wheels from nbenv.wheelcache, and the way
their files arrive (hardlinks or copies, through pypa/installer) from nbenv.linking; this
module checks that the wheels fit together and installs them on threads.

A failed install leaves a half-built env behind: the caller builds in a temporary directory
and discards it (see nbenv.store).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from installer.exceptions import InstallerError
from installer.utils import get_launcher_kind

from nbenv.errors import InstallConflictError, InstallError, InvalidWheelError
from nbenv.linking import (
    Linker,
    LinkingDestination,
    LinkMode,
    Tally,
    install_cached,
    join_path,
    placement,
)
from nbenv.report import NullReporter, Reporter
from nbenv.unpacking import Installed, UnpackWorkers, process_budget
from nbenv.venv import Layout, env_python, query_layout
from nbenv.wheelcache import INSTALL_TIME_FILES, UnpackedWheel, WheelCache, WheelToInstall

__all__ = ["InstallReport", "Unpacker", "install_one", "install_wheels", "unpack_processes"]

_INSTALLER = b"nbenv\n"
# Linking is one short syscall per file under the GIL: more threads only contend. Measured
# (8,078 files, 37 wheels, warm cache): 1 thread 0.27 s, 2: 0.25 s, 4: 0.34 s, 8: 0.41 s.
# Unpacking (zlib, hashing, big writes: the GIL is released) uses every worker.
_LINK_WORKERS = 2
# Unpacking threads share one GIL around zlib, hashing and writes that release it: set B
# took 1.9 s on one thread and 1.45 s on two. Big builds use worker processes instead.
_UNPACK_WORKERS = 4
# Worker processes pay an interpreter start (~0.1 s of CPU, overlapping the downloads):
# worth it from a few tens of MB of wheels on.
_PROCESS_THRESHOLD = 24 * 1024 * 1024
_STAGE_UNPACK = "unpacking wheels"
_STAGE_INSTALL = "installing wheels"

_T = TypeVar("_T")
_R = TypeVar("_R")


def unpack_processes(cache_root: Path, wheels: Iterable[tuple[str, int | None]]) -> int:
    """How many worker processes should unpack these (sha256, size) wheels: none (threads)
    for a little work, where starting interpreters costs more than it saves, or on one CPU.
    NBENV_UNPACK_PROCESSES overrides (0: threads)."""
    budget, forced = process_budget()
    if forced or not budget:
        return budget
    cache = WheelCache(cache_root)
    todo = sum(size or 0 for sha, size in wheels if not cache.has(sha))
    return budget if todo >= _PROCESS_THRESHOLD else 0


class Unpacker:
    """Wheels unpacked into the cache as they become available, e.g. from a download
    callback while bigger files still arrive, so unpacking overlaps the network: on
    threads, or in `processes` worker processes (nbenv.unpacking) when there is a lot.
    Each wheel (by sha256) is unpacked once however often it is submitted.

    `adaptive`: the amount is not known yet (the resolver is still choosing); threads
    unpack until `expect` has been told of enough new wheels to be worth worker processes
    (unpack_processes' rule), then processes take the wheels submitted after that."""

    def __init__(
        self,
        cache_root: Path,
        *,
        workers: int = _UNPACK_WORKERS,
        processes: int = 0,
        adaptive: bool = False,
        started: UnpackWorkers | None = None,
    ) -> None:
        self.cache = WheelCache(cache_root)
        self._root = cache_root
        self._workers = max(1, workers)
        self._lock = threading.Lock()
        self._futures: dict[str, Future[tuple[UnpackedWheel, bool]]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._processes: UnpackWorkers | None = None
        self._budget = 0  # processes `expect` may still start
        self._expected: dict[str, int] = {}  # sha256 -> size of new wheels announced
        if adaptive:
            budget, forced = process_budget()
            if forced:
                processes = budget
            else:
                self._budget = budget
        if started is not None:  # the caller's, forked early (nbenv.unpacking.can_fork)
            self._processes = started
        elif processes > 0:
            self._processes = UnpackWorkers(cache_root, processes)

    @property
    def workers(self) -> UnpackWorkers | None:
        """The worker processes, if started (they install wheels too)."""
        with self._lock:
            return self._processes

    @property
    def processes(self) -> int:
        """Worker processes started so far (0: the wheels unpack on threads)."""
        with self._lock:
            return self._processes.size if self._processes is not None else 0

    def expect(self, sha256: str, size: int | None) -> None:
        """A wheel of `size` bytes will probably be submitted soon (adaptive mode)."""
        with self._lock:
            if not self._budget or self._processes is not None or not size:
                return
            if self.cache.has(sha256):
                return  # unpacked already: no work
            self._expected[sha256] = size
            if sum(self._expected.values()) < _PROCESS_THRESHOLD:
                return
            # started before the wheels arrive: their start-up overlaps the downloads
            self._processes = UnpackWorkers(self._root, self._budget)

    def submit(self, wheel: WheelToInstall) -> Future[tuple[UnpackedWheel, bool]]:
        with self._lock:
            future = self._futures.get(wheel.sha256)
            if future is None:
                if self._processes is not None:
                    future = self._processes.submit(wheel)
                else:
                    if self._pool is None:
                        self._pool = ThreadPoolExecutor(self._workers, "nbenv-unpack")
                    future = self._pool.submit(self.cache.get, wheel)
                self._futures[wheel.sha256] = future
            return future

    def close(self, *, cancel: bool = False) -> None:
        """Wait for the unpacks under way (each is atomic); `cancel` drops queued ones."""
        with self._lock:
            processes, pool = self._processes, self._pool
            self._budget = 0
        if processes is not None:
            processes.close(cancel=cancel)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=cancel)

    def __enter__(self) -> Unpacker:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(cancel=kind is not None)


@dataclass(frozen=True)
class InstallReport:
    wheels: int
    unpacked: int  # wheels unpacked into the cache by this call; the rest were cached
    linked: int
    copied: int
    written: int  # scripts and install metadata (INSTALLER, REQUESTED, RECORD)
    bytes: int  # placed into the env, however they got there
    seconds: float


def install_wheels(
    env_dir: Path,
    wheels: Sequence[WheelToInstall],
    *,
    cache_root: Path,
    link_mode: LinkMode = "auto",
    reporter: Reporter | None = None,
    workers: int = 8,
    final_dir: Path | None = None,
    unpacker: Unpacker | None = None,
    link_early: bool = False,
) -> InstallReport:
    """Install `wheels` into the venv at `env_dir`; the env is usable on return.

    Regular files are hardlinks of the unpacked cache (`auto` copies when the filesystems
    differ, `hardlink` raises then, `copy` always copies). `final_dir`, when the caller will
    rename the env, is what scripts' shebangs name. Wheels new to the cache are unpacked by
    `unpacker` (which may have started on them already), else by one made here. Compile
    bytecode after, with `compile_bytecode`, once the env is in its final place.

    Conflicts between wheels are found before anything is written, unless `link_early`
    (with an `unpacker`): then each wheel is linked as soon as it is unpacked, for a caller
    that discards the env on error (nbenv.envs builds in a temporary directory).
    """
    started = time.perf_counter()
    if link_mode not in ("auto", "hardlink", "copy"):
        raise ValueError(f"unknown link mode {link_mode!r}")
    report = reporter or NullReporter()
    env_dir = Path(os.path.abspath(env_dir))
    python = env_python(env_dir)
    layout = query_layout(python, env_dir)
    interpreter = str(Path(os.path.abspath(final_dir or env_dir)) / python.relative_to(env_dir))
    unique = _dedupe(wheels)

    linker = Linker(link_mode, report)
    link_workers = min(workers, _LINK_WORKERS)
    if unpacker is not None and link_early:
        futures = [unpacker.submit(wheel) for wheel in unique]
        got, tallies = _link_as_unpacked(
            unique, futures, layout, interpreter, linker, link_workers, report,
            processes=unpacker.workers, link_mode=link_mode,
        )  # fmt: skip
    else:
        if unpacker is None:
            with Unpacker(cache_root, workers=min(workers, _UNPACK_WORKERS)) as own:
                got = _gather([own.submit(wheel) for wheel in unique], report, _STAGE_UNPACK)
        else:
            got = _gather([unpacker.submit(wheel) for wheel in unique], report, _STAGE_UNPACK)
        unpacked = [wheel for wheel, _ in got]
        shared = _check_conflicts(layout, unpacked)

        def link_one(index: int) -> Tally:
            return install_one(unpacked[index], layout, interpreter, linker, shared,
                               requested=unique[index].requested)  # fmt: skip

        tallies = _parallel(link_one, range(len(unique)), link_workers, report, _STAGE_INSTALL)
    return InstallReport(
        wheels=len(unique),
        unpacked=sum(1 for _, fresh in got if fresh),
        linked=sum(t.linked for t in tallies),
        copied=sum(t.copied for t in tallies),
        written=sum(t.written for t in tallies),
        bytes=sum(t.bytes for t in tallies),
        seconds=time.perf_counter() - started,
    )


def _link_as_unpacked(
    wheels: Sequence[WheelToInstall],
    futures: Sequence[Future[tuple[UnpackedWheel, bool]]],
    layout: Layout,
    interpreter: str,
    linker: Linker,
    workers: int,
    reporter: Reporter,
    *,
    processes: UnpackWorkers | None = None,
    link_mode: LinkMode = "auto",
) -> tuple[list[tuple[UnpackedWheel, bool]], list[Tally]]:
    """Each wheel linked as soon as it is unpacked, checked for conflicts against the
    wheels unpacked before it, so linking the small ones overlaps unpacking the big ones.
    On `processes` when the unpacker has them (a process each, where threads share one
    GIL), else on threads. A conflict found late leaves earlier wheels linked: for builds
    that are discarded on error."""
    reporter.stage(_STAGE_INSTALL)
    position = {id(future): index for index, future in enumerate(futures)}
    got: dict[int, tuple[UnpackedWheel, bool]] = {}
    names: dict[int, str] = {}  # file names of the wheels unpacked so far, for conflicts
    owners: dict[str, tuple[int, str | None]] = {}
    shared: set[str] = set()  # grows while earlier wheels link: read only after EEXIST
    linked = 0
    count = threading.Lock()
    notes: set[str] = set()

    def link(index: int) -> Tally:
        nonlocal linked
        tally = install_one(got[index][0], layout, interpreter, linker, shared,
                            requested=wheels[index].requested)  # fmt: skip
        with count:
            linked += 1
            reporter.progress(_STAGE_INSTALL, linked, len(wheels))
        return tally

    def progressed(future: Future[Installed]) -> None:
        nonlocal linked
        if not future.cancelled() and future.exception() is None:
            with count:
                linked += 1
                reporter.progress(_STAGE_INSTALL, linked, len(wheels))

    def installed(index: int, future: Future[Installed]) -> Tally:
        done = future.result()
        for note in done.notes:
            if note not in notes:
                notes.add(note)
                reporter.note(note)
        # a path found taken is fine if another wheel places it with identical bytes
        # (`shared` has every wheel's claims by now); anything else is a conflict
        for path in done.taken:
            if path not in shared:
                raise InstallConflictError(path, (got[index][0].filename,))
        return done.tally

    with ThreadPoolExecutor(max(1, workers), "nbenv-install") as pool:
        links: list[Future[Tally]] = []
        sent: list[tuple[int, Future[Installed]]] = []
        try:
            for future in as_completed(futures):
                index = position[id(future)]
                got[index] = future.result()
                names[index] = got[index][0].filename
                _claim(layout, got[index][0], index, owners, shared, names)
                if processes is not None:
                    install = processes.install(got[index][0], layout, interpreter, link_mode,
                                                requested=wheels[index].requested)  # fmt: skip
                    install.add_done_callback(progressed)
                    sent.append((index, install))
                else:
                    links.append(pool.submit(link, index))
            tallies = [link_future.result() for link_future in links]
            tallies += [installed(index, future) for index, future in sent]
        except BaseException:
            for link_future in links:
                link_future.cancel()
            for _, install_future in sent:
                install_future.cancel()
            raise
    return [got[index] for index in range(len(wheels))], tallies


def _dedupe(wheels: Sequence[WheelToInstall]) -> list[WheelToInstall]:
    by_hash: dict[str, WheelToInstall] = {}
    for wheel in wheels:
        prior = by_hash.get(wheel.sha256)
        if prior is None or (wheel.requested and not prior.requested):
            by_hash[wheel.sha256] = wheel
    return list(by_hash.values())


def _targets(wheel: UnpackedWheel, schemes: dict[str, str]) -> Iterator[tuple[str, str | None]]:
    """Every path a wheel writes, with the sha256 of its bytes (None: made at install time)."""
    record = f"{wheel.dist_info}/RECORD"
    data_dir = wheel.data_dir + "/"
    for file in wheel.files:
        if file.path != record:
            scheme, path = placement(file.path, data_dir, wheel.root_scheme)
            yield join_path(schemes[scheme], path), file.digest
    root = schemes[wheel.root_scheme]
    for generated in ("RECORD", *INSTALL_TIME_FILES):
        yield join_path(root, f"{wheel.dist_info}/{generated}"), None
    suffix = "" if get_launcher_kind() == "posix" else ".exe"
    for script in wheel.scripts:
        yield join_path(schemes["scripts"], script + suffix), None


def _check_conflicts(layout: Layout, wheels: Sequence[UnpackedWheel]) -> frozenset[str]:
    """Refuse two wheels writing one path, unless with identical bytes (old-style namespace
    `__init__.py` files are the classic case); return those shared paths."""
    owners: dict[str, tuple[int, str | None]] = {}
    shared: set[str] = set()
    names = {index: wheel.filename for index, wheel in enumerate(wheels)}
    for index, wheel in enumerate(wheels):
        _claim(layout, wheel, index, owners, shared, names)
    return frozenset(shared)


def _claim(
    layout: Layout,
    wheel: UnpackedWheel,
    index: int,
    owners: dict[str, tuple[int, str | None]],
    shared: set[str],
    names: Mapping[int, str],
) -> None:
    """Record the paths `wheel` writes in `owners`, adding to `shared` those an earlier
    wheel writes with identical bytes; any other overlap is a conflict."""
    for target, digest in _targets(wheel, layout.schemes(wheel.distribution)):
        prior = owners.setdefault(target, (index, digest))
        if prior[0] == index:
            continue
        if digest is None or prior[1] != digest:
            raise InstallConflictError(target, (names[prior[0]], wheel.filename))
        shared.add(target)


def install_one(
    unpacked: UnpackedWheel,
    layout: Layout,
    interpreter: str,
    linker: Linker,
    shared: AbstractSet[str],
    *,
    requested: bool,
) -> Tally:
    """Install one unpacked wheel into the env of `layout` (its scripts naming
    `interpreter`); a path that exists already is a conflict unless in `shared`."""
    destination = LinkingDestination(
        scheme_dict=layout.schemes(unpacked.distribution),
        interpreter=interpreter,
        script_kind=get_launcher_kind(),
        bytecode_optimization_levels=(),  # compile_bytecode does it, after, in parallel
        linker=linker,
        wheel_name=unpacked.filename,
        shared=shared,
    )
    metadata = {"INSTALLER": _INSTALLER}
    if requested:
        metadata["REQUESTED"] = b""
    try:
        install_cached(unpacked, destination, metadata)
    except (InstallerError, ValueError) as exc:
        raise InvalidWheelError(unpacked.filename, str(exc)) from exc
    except OSError as exc:
        raise InstallError(f"Installing {unpacked.filename} failed: {exc}") from exc
    return destination.tally


def _gather(futures: Sequence[Future[_R]], reporter: Reporter, stage: str) -> list[_R]:
    """The futures' results in order, reporting progress as they complete; the first
    failure is raised (the caller's executor cancels the rest)."""
    reporter.stage(stage)
    for done, future in enumerate(as_completed(futures), start=1):
        future.result()
        reporter.progress(stage, done, len(futures))
    return [future.result() for future in futures]


def _parallel(
    work: Callable[[_T], _R],
    items: Sequence[_T],
    workers: int,
    reporter: Reporter,
    stage: str,
) -> list[_R]:
    """`work` over `items` on a thread pool, results in order; the first failure cancels
    what has not started and is raised once the running ones finish."""
    reporter.stage(stage)
    if not items:
        return []
    results: dict[int, _R] = {}
    with ThreadPoolExecutor(max(1, min(workers, len(items))), "nbenv-install") as pool:
        futures = {pool.submit(work, item): index for index, item in enumerate(items)}
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                reporter.progress(stage, len(results), len(items))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return [results[index] for index in range(len(items))]
