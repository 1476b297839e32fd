"""Parallel, speculative fetching of index pages and metadata ahead of the resolver.

The resolver asks one question at a time; answering each with a round trip is what makes a
naive resolver slow. As soon as a requirement is known, its project page is fetched; as
soon as the page arrives, the metadata of the release the resolver will most likely pick is
fetched; as soon as that arrives, its dependencies are walked the same way. By the time the
resolver asks, most answers are already here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

from nbenv.report import NullReporter, Reporter
from nbenv.resolve.candidates import TargetReleases, releases_for_target
from nbenv.resolve.index import ProjectPage
from nbenv.resolve.metadata import CoreMetadata, MetadataFetcher
from nbenv.resolve.model import DistFile
from nbenv.resolve.target import Target

__all__ = ["Prefetcher", "active_dependencies"]


def active_dependencies(
    metadata: CoreMetadata, extras: frozenset[str], target: Target
) -> list[Requirement]:
    """Requires-Dist entries that apply on `target` with `extras` requested."""
    out = []
    for requirement in metadata.requires_dist:
        if requirement.marker is None:
            out.append(requirement)
            continue
        for extra in ("", *sorted(extras)):
            if requirement.marker.evaluate({**target.markers, "extra": extra}):
                out.append(requirement)
                break
    return out


class Prefetcher:
    """Memoized futures for pages (merged over indexes) and metadata. Thread-safe."""

    def __init__(
        self,
        fetch_page: Callable[[str, NormalizedName], ProjectPage | None],
        indexes: Sequence[str],
        metadata: MetadataFetcher,
        *,
        workers: int = 24,
        reporter: Reporter | None = None,
        allow_pre: bool = False,
        stale_page: Callable[[NormalizedName], ProjectPage | None] | None = None,
        skip: Iterable[str] = (),
    ) -> None:
        self._stale_page = stale_page
        self._skip = frozenset(skip)  # projects the env already holds: never walked
        self._fetch_page = fetch_page
        self.indexes = tuple(indexes)
        self._metadata = metadata
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nbenv-fetch")
        self._lock = threading.Lock()
        self._pages: dict[NormalizedName, Future[ProjectPage | None]] = {}
        self._index_pages: dict[tuple[str, NormalizedName], Future[ProjectPage | None]] = {}
        self._meta: dict[str, Future[CoreMetadata]] = {}
        self._releases: dict[tuple[NormalizedName, Target], Future[TargetReleases]] = {}
        self._walked: set[tuple[Target, NormalizedName, str]] = set()
        self._reporter = reporter or NullReporter()
        self._allow_pre = allow_pre
        self._likely: list[DistFile] = []  # the walk's picks, in order
        self._on_likely: Callable[[DistFile], None] | None = None
        self._closed = False
        self._done = 0
        self._total = 0

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _count(self, _future: Future[CoreMetadata]) -> None:
        with self._lock:
            self._done += 1
            done, total = self._done, self._total
        self._reporter.progress("fetching", done, total)

    def futures(self) -> list[Future[object]]:
        """Every page and metadata future so far (to gather offline misses)."""
        with self._lock:
            return [*self._index_pages.values(), *self._meta.values()]  # type: ignore[list-item]

    # -- pages ---------------------------------------------------------------------------
    def page(self, name: str) -> Future[ProjectPage | None]:
        key = canonicalize_name(name)
        with self._lock:
            future = self._pages.get(key)
            if future is not None or self._closed:
                return future or _failed(RuntimeError("prefetcher closed"))
            parts = []
            for index in self.indexes:
                part = self._index_pages.get((index, key))
                if part is None:
                    part = self._pool.submit(self._fetch_page, index, key)
                    self._index_pages[(index, key)] = part
                parts.append(part)
            future = Future()
            self._pages[key] = future
        _merge_when_done(future, key, parts)
        return future

    def releases(self, name: NormalizedName, target: Target) -> TargetReleases | None:
        """Blocking: the usable releases of a project on `target`; None if unknown."""
        page = self.page(name).result()
        if page is None:
            return None
        key = (page.name, target)
        with self._lock:
            future = self._releases.get(key)
            mine = future is None
            if future is None:  # computed once: the walk and the resolver ask at once
                future = self._releases[key] = Future()
        if mine:
            try:
                future.set_result(releases_for_target(page, target, self._metadata.cache))
            except BaseException as exc:
                future.set_exception(exc)
        return future.result()

    # -- metadata ------------------------------------------------------------------------
    def metadata(self, file: DistFile) -> Future[CoreMetadata]:
        with self._lock:
            future = self._meta.get(file.url)
            if future is not None:
                return future
            future = self._pool.submit(self._metadata.get, file)
            self._meta[file.url] = future
            self._total += 1
        future.add_done_callback(self._count)  # outside the lock: it may run right here
        return future

    def watch_likely(self, callback: Callable[[DistFile], None]) -> None:
        """`callback(file)` for every file the walk expects the resolver to pin (the
        picks so far first), on the thread that picked it."""
        with self._lock:
            self._on_likely = callback
            picked = list(self._likely)
        for file in picked:
            callback(file)

    # -- speculation ---------------------------------------------------------------------
    def speculate(self, requirement: Requirement, target: Target) -> None:
        """Walk the likely dependency tree of `requirement` in the background."""
        name = canonicalize_name(requirement.name)
        if name in self._skip:
            return
        key = (target, name, str(requirement.specifier) + str(sorted(requirement.extras)))
        with self._lock:
            if key in self._walked or self._closed:
                return
            self._walked.add(key)
        page = self.page(name)
        if not page.done() and self._stale_page is not None:
            # Walk on with the copy from an earlier run while the fresh page is on its way:
            # the dependencies' pages are then requested at once instead of level by level.
            stale = self._stale_page(name)
            if stale is not None:
                self._walk(releases_for_target(stale, target, self._metadata.cache),
                           requirement, target)  # fmt: skip
        page.add_done_callback(lambda _f: self._after_page(requirement, target))

    def _after_page(self, requirement: Requirement, target: Target) -> None:
        try:
            releases = self.releases(canonicalize_name(requirement.name), target)
        except Exception:
            return  # the resolver will meet the same failure and report it properly
        if releases is not None:
            self._walk(releases, requirement, target)

    def _walk(self, releases: TargetReleases, requirement: Requirement, target: Target) -> None:
        spec = requirement.specifier
        pick = next(
            (
                r
                for r in releases.usable
                if not r.yanked and spec.contains(r.version, prereleases=self._allow_pre)
            ),
            None,
        )
        if pick is None:
            return
        with self._lock:
            self._likely.append(pick.file)
            callback = self._on_likely
        if callback is not None:
            callback(pick.file)
        extras = frozenset(canonicalize_name(e) for e in requirement.extras)
        try:
            future = self.metadata(pick.file)
        except RuntimeError:
            return  # closed while we were walking
        future.add_done_callback(lambda f: self._after_metadata(f, extras, target))

    def _after_metadata(
        self, future: Future[CoreMetadata], extras: frozenset[str], target: Target
    ) -> None:
        if future.cancelled() or future.exception() is not None:
            return  # cancelled: the resolve is over (it failed or finished first)
        for dependency in active_dependencies(future.result(), extras, target):
            self.speculate(dependency, target)


def _failed(exc: BaseException) -> Future[ProjectPage | None]:
    future: Future[ProjectPage | None] = Future()
    future.set_exception(exc)
    return future


def _merge_when_done(
    out: Future[ProjectPage | None],
    name: NormalizedName,
    parts: list[Future[ProjectPage | None]],
) -> None:
    """Merge one project's pages from every index (pip's semantics: all indexes count)."""
    remaining = [len(parts)]
    lock = threading.Lock()

    def finish(_f: Future[ProjectPage | None]) -> None:
        with lock:
            remaining[0] -= 1
            if remaining[0]:
                return
        if any(p.cancelled() for p in parts):
            out.cancel()  # the pool shut down under it: nobody waits for this page
            return
        errors = [e for e in (p.exception() for p in parts) if e is not None]
        if errors:  # an index that fails must not silently narrow the choice
            out.set_exception(errors[0])
            return
        pages = [page for page in (p.result() for p in parts) if page is not None]
        if not pages:
            out.set_result(None)
            return
        out.set_result(ProjectPage(name, tuple(s for page in pages for s in page.sources)))

    for part in parts:
        part.add_done_callback(finish)
