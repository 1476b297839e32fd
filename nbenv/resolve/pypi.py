"""Resolve an EnvRequest's PyPI requirements into one Resolution per target."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path

from packaging.utils import NormalizedName
from resolvelib import BaseReporter, ResolutionImpossible, ResolutionTooDeep, Resolver

from nbenv.errors import NbenvError, OfflineMissingError, ProjectNotFoundError, UsageError
from nbenv.files import atomic_write
from nbenv.net.auth import Credentials, strip_userinfo
from nbenv.net.http import HttpClient
from nbenv.paths import cache_dir
from nbenv.report import NullReporter, Reporter
from nbenv.resolve.cache import CachePolicy, ResolveCache
from nbenv.resolve.flat import FlatLinks
from nbenv.resolve.index import ACCEPT, PageSource, ProjectPage, fetch_project_page, project_url
from nbenv.resolve.metadata import MetadataFetcher
from nbenv.resolve.model import DistFile, ProvidedDist, Resolution, ResolvedPackage
from nbenv.resolve.prefetch import Prefetcher
from nbenv.resolve.provider import PYTHON, Candidate, PypiProvider, Req, UnknownProject
from nbenv.resolve.target import Target
from nbenv.settings import IndexSettings, effective_indexes, read_pip_settings
from nbenv.spec import EnvRequest

__all__ = ["PypiResolver", "resolve"]


class PypiResolver:
    """One resolver session: shared client, cache and prefetcher across targets."""

    def __init__(
        self,
        request: EnvRequest,
        *,
        client: HttpClient | None = None,
        cache_root: Path | None = None,
        policy: CachePolicy = CachePolicy.DEFAULT,
        reporter: Reporter | None = None,
        settings: IndexSettings | None = None,
        workers: int = 24,
        targets: Sequence[Target] | None = None,
        provided: Mapping[str, ProvidedDist] | None = None,
        on_pin: Callable[[DistFile], None] | None = None,
        warm_page: Callable[[str, NormalizedName], Future[None]] | None = None,
    ) -> None:
        """`warm_page(index, name)`: has a helper put that page (and its summaries for
        `targets`) in the resolve cache, to be read from there (nbenv.resolve.warm)."""
        self.request = request
        self.on_pin = on_pin
        self._warm_page = warm_page if policy is CachePolicy.DEFAULT else None
        self.provided = dict(provided or {})
        # an env build knows its interpreter exactly; a lock names X.Y only
        self.targets = tuple(targets) if targets else request.targets
        self.reporter = reporter or NullReporter()
        settings = settings if settings is not None else read_pip_settings()
        self.indexes = effective_indexes(request.index_url, request.extra_index_urls, settings)
        self.find_links = settings.find_links
        self._own_client = client is None
        self.client = client or HttpClient.for_index_settings(settings, Credentials(self.indexes))
        if policy is not CachePolicy.OFFLINE:
            self.client.prepare()  # the first page is asked for soon: TLS set-up starts now
        self.cache_root = cache_root or cache_dir()
        self.cache = ResolveCache(self.cache_root / "resolve", policy)
        self.metadata = MetadataFetcher(self.client, self.cache, self._build_sdist)
        self.flat = FlatLinks(self.client, self.cache, self.find_links)
        if not self.indexes and not self.find_links:
            raise UsageError(
                "No package index to search: pip's configuration says no-index and gives no "
                "find-links; pass --index-url URL"
            )
        self.prefetcher = Prefetcher(
            self._fetch_page,
            (*self.indexes, *self.find_links),
            self.metadata,
            workers=workers,
            reporter=self.reporter,
            allow_pre=request.pre,
            stale_page=None if policy is CachePolicy.OFFLINE else self._stale_page,
            skip=self.provided,
        )

    def close(self) -> None:
        self.prefetcher.close()
        self.metadata.close()
        if self._own_client:
            self.client.close()

    def __enter__(self) -> PypiResolver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fetch_page(self, index: str, name: NormalizedName) -> ProjectPage | None:
        if index in self.find_links:
            return self.flat.page(index, name)
        if self._warm_page is not None:
            self._warm_page(index, name).result()  # never an error: a miss is fetched here
        return fetch_project_page(self.client, self.cache, index, name)

    def _stale_page(self, name: NormalizedName) -> ProjectPage | None:
        """The project's pages from any earlier run, however old (a guess to walk ahead)."""
        sources = []
        for index in self.indexes:  # find-links are local or cheap: they are not guessed
            cached = self.cache.get_page(project_url(strip_userinfo(index), name), stale_ok=True)
            if cached is None or cached.fresh or cached.content_type == "not-found":
                return None  # fresh: the real answer is as quick as this guess
            source = PageSource(
                strip_userinfo(index), cached.url, cached.content_type, cached.body, cached.sha256
            )
            sources.append(source)
        return ProjectPage(name, tuple(sources))

    def _build_sdist(self, file: DistFile, content: bytes) -> Path:
        from nbenv.resolve.sdist import build_wheel_from_sdist  # rarely needed: lazily

        digest = file.sha256 or hashlib.sha256(content).hexdigest()
        path = self.cache_root / "sdists" / digest / file.filename
        if not path.exists():  # a temp name of its own: processes resolving at once race here
            atomic_write(path, content)
        return build_wheel_from_sdist(
            path, self.cache_root, sdist_sha256=digest, indexes=self.indexes, reporter=self.reporter
        )

    def watch_likely(self, callback: Callable[[DistFile], None]) -> None:
        """`callback(file)` for each file the prefetcher expects a pin on, as soon as it
        does (the guesses so far first): a caller can start on the files that take long
        before the pins come (nbenv.resolve.prefetch)."""
        self.prefetcher.watch_likely(callback)

    # -- resolution ----------------------------------------------------------------------
    def start(self) -> None:
        """Begin asking the index (pages, then the likely dependencies' metadata) on the
        prefetcher's threads; `resolve` does it too. A caller with more to set up first
        starts here, so that work overlaps the network."""
        for target in self.targets:
            for requirement in self.request.requirements:
                self.prefetcher.speculate(requirement, target)  # each once, however asked

    def resolve(self) -> list[Resolution]:
        requirements = [Req.from_requirement(r) for r in self.request.requirements]
        self.start()
        self.reporter.stage("resolving")
        return [self._resolve_target(target, requirements) for target in self.targets]

    def _resolve_target(self, target: Target, requirements: Sequence[Req]) -> Resolution:
        provider = PypiProvider(target, self.prefetcher, requirements, allow_pre=self.request.pre,
                                provided=self.provided, on_pin=self.on_pin)  # fmt: skip
        resolver: Resolver[Req, Candidate, str] = Resolver(provider, BaseReporter())
        try:
            result = resolver.resolve(requirements, max_rounds=5000)
        except ResolutionImpossible as exc:
            from nbenv.resolve.explain import explain_impossible  # the error path only

            causes = [(c.requirement, c.parent) for c in exc.causes]
            raise explain_impossible(provider, causes) from None
        except ResolutionTooDeep:
            raise NbenvError(
                "The resolver gave up after too many rounds of backtracking; pin a few of the "
                "requirements (e.g. name==version) to narrow the search."
            ) from None
        except UnknownProject as exc:
            raise self._not_found(exc.name) from None
        except OfflineMissingError as exc:
            raise OfflineMissingError(self._offline_misses(exc)) from None
        packages = []
        for key, candidate in sorted(result.mapping.items()):
            if key == PYTHON or candidate.extras or candidate.release is None:
                continue
            release = candidate.release
            packages.append(
                ResolvedPackage(
                    name=release.name,
                    version=release.version,
                    file=release.file,
                    requires_python=self.prefetcher.metadata(release.file).result().requires_python,
                    dependencies=provider.dependencies.get((candidate.name, candidate.version), ()),
                )
            )
        return Resolution(target, tuple(self.request.requirements), tuple(packages))

    def _offline_misses(self, first: OfflineMissingError) -> list[str]:
        missing = list(first.missing)
        for future in self.prefetcher.futures():
            exc = future.exception() if future.done() else None
            if isinstance(exc, OfflineMissingError):
                missing.extend(exc.missing)
        return sorted(dict.fromkeys(missing))

    def _not_found(self, name: str) -> ProjectNotFoundError:
        from nbenv.resolve.suggest import close_names

        known: list[str] = []
        for index in self.indexes:
            try:
                known += self._project_list(index)
            except NbenvError:
                continue  # suggestions are a courtesy; never fail the error path on them
        shown = [strip_userinfo(i) for i in self.indexes]
        return ProjectNotFoundError(name, shown, close_names(name, known))

    def _project_list(self, index: str) -> list[str]:
        from nbenv.resolve.suggest import parse_project_list

        url = strip_userinfo(index)
        cached = self.cache.get_page(url)
        if cached is not None:
            return parse_project_list(cached.body, cached.content_type)
        if self.cache.policy is CachePolicy.OFFLINE:
            return []
        response = self.client.get_ok(index, headers={"Accept": ACCEPT})
        self.cache.put_page(url, response.content_type, response.content)
        return parse_project_list(response.content, response.content_type)


def resolve(
    request: EnvRequest,
    *,
    client: HttpClient | None = None,
    cache_root: Path | None = None,
    policy: CachePolicy = CachePolicy.DEFAULT,
    reporter: Reporter | None = None,
    settings: IndexSettings | None = None,
    targets: Sequence[Target] | None = None,
    provided: Mapping[str, ProvidedDist] | None = None,
    on_pin: Callable[[DistFile], None] | None = None,
) -> list[Resolution]:
    """Resolve every target of `request` (or `targets`); raises NbenvError subclasses.
    `provided`: dists the env already holds (a conda pass installed them), fixed as given.
    `on_pin(file)`: called (from the resolving thread) with each file the resolver pins;
    a pin may later be undone by backtracking."""
    with PypiResolver(
        request,
        client=client,
        cache_root=cache_root,
        policy=policy,
        reporter=reporter,
        settings=settings,
        targets=targets,
        provided=provided,
        on_pin=on_pin,
    ) as session:
        return session.resolve()
