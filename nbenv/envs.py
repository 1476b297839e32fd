"""Environments as users see them: create (request or lock -> env + kernel), list, show,
remove, gc. The API behind the CLI and the magics; it never prints (Reporter)."""

from __future__ import annotations

import contextlib
import errno
import gc as collector  # `gc` is the store's garbage collection below
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from packaging.requirements import Requirement

from nbenv.envinfo import lock_packages
from nbenv.errors import DiskFullError, NbenvError, UsageError
from nbenv.files import sha256_file
from nbenv.interpreters import Interpreter, find_interpreter
from nbenv.kernels import (
    KernelSpecInfo,
    broken_kernel_dirs,
    install_kernelspec,
    installed_spec,
    kernel_name,
    nbenv_kernelspecs,
    orphaned_kernelspecs,
    remove_kernelspec,
)
from nbenv.net.auth import Credentials, strip_userinfo
from nbenv.paths import cache_dir
from nbenv.report import NullReporter, Reporter
from nbenv.resolve.cache import CachePolicy
from nbenv.resolve.target import Target
from nbenv.spec import EnvRequest
from nbenv.store import LOCK_FILE, EnvRecord, Store, in_use, stop_compiling

if TYPE_CHECKING:  # imported where used: listing envs must not load the installer's stack
    from concurrent.futures import Future

    from nbenv.fetch import Fetcher
    from nbenv.install import Unpacker
    from nbenv.linking import LinkMode
    from nbenv.lock import Lock
    from nbenv.resolve.model import DistFile
    from nbenv.resolve.pypi import PypiResolver
    from nbenv.unpacking import UnpackWorkers

__all__ = [
    "KERNEL_REQUIREMENTS",
    "BuildOptions",
    "CreateResult",
    "GcReport",
    "build_in_store",
    "create_env",
    "describe_env",
    "describe_envs",
    "ensure_kernel",
    "gc",
    "install_lock",
    "remove_env",
    "reuse_remembered",
    "target_for",
    "with_kernel_requirements",
]

# Every env can run as a Jupyter kernel and show widgets (ipywidgets 7 does not render in
# JupyterLab 4). Resolved together with the user's requirements: a conflict is reported.
KERNEL_REQUIREMENTS = ("ipykernel", "ipywidgets>=8")
_LIKELY_BYTES = 1 << 20  # wheels worth fetching on the resolver's guess (see _big_only)


@dataclass(frozen=True)
class CreateResult:
    record: EnvRecord
    path: Path
    created: bool  # False: the env existed and was reused
    kernel: KernelSpecInfo | None
    seconds: float
    steps: tuple[tuple[str, float], ...] = field(default=())

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


@dataclass(frozen=True)
class BuildOptions:
    """How any env is built and registered, PyPI or conda (the CLI's create options)."""

    python: str | None = None  # an interpreter request ("3.12", a path); None: the default
    policy: CachePolicy = CachePolicy.DEFAULT
    compile_bytecode: bool = True  # .pyc files compiled in the background once it exists
    register_kernel: bool = True
    kernel_prefix: str | None = None  # like `ipykernel install --prefix`
    link_mode: LinkMode = "auto"


def with_kernel_requirements(request: EnvRequest) -> EnvRequest:
    named = {Requirement(str(r)).name.lower() for r in request.requirements}
    extra = tuple(
        Requirement(r) for r in KERNEL_REQUIREMENTS if Requirement(r).name.lower() not in named
    )
    return replace(request, requirements=(*request.requirements, *extra))


def request_key(
    request: EnvRequest, interpreter: Interpreter, indexes: Sequence[str], *, kernel: bool
) -> str:
    """Identifies a request on this machine, to find its env again without the network."""
    data = {
        "kernel": kernel,
        "requirements": sorted(str(r) for r in request.requirements),
        "pre": request.pre,
        "indexes": [strip_userinfo(i) for i in indexes],
        "python": str(interpreter.path),
        "version": list(interpreter.version),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]


def target_for(interpreter: Interpreter) -> Target:
    """The resolver's target for building an env on this machine with `interpreter`."""
    return Target(python=interpreter.short, patch=interpreter.version[2])


def create_env(
    request: EnvRequest,
    options: BuildOptions | None = None,
    *,
    lock_file: Path | None = None,
    lock: Lock | None = None,
    store: Store | None = None,
    reporter: Reporter | None = None,
) -> CreateResult:
    """Build (or find) the env for `request`, or for a given lock (`lock_file` or `lock`:
    no resolution), and register its kernel."""
    from nbenv.settings import effective_indexes, read_pip_settings

    start = time.perf_counter()
    steps: list[tuple[str, float]] = []
    options = options or BuildOptions()
    reporter = reporter or NullReporter()
    store = store or Store()
    policy = options.policy
    if request.platforms:
        raise UsageError("--platform locks for another machine; an env is built for this one")
    if len(request.pythons) > 1:
        raise UsageError("an env has one interpreter: give --python once")
    wanted = options.python or (request.pythons[0] if request.pythons else None)
    interpreter = find_interpreter(wanted)
    settings = read_pip_settings()
    indexes = effective_indexes(request.index_url, request.extra_index_urls, settings)
    key = request_key(request, interpreter, indexes, kernel=options.register_kernel)

    if lock_file is not None:
        from nbenv.lock import load_lock

        lock = load_lock(lock_file)
    given = lock
    if given is None:
        found = reuse_remembered(store, key, request, start, options)
        if found is not None:  # the same request on this machine: no resolution, no network
            return found

    # imported here: finding an existing env (a kernel's every `%%pypi` cell) needs none
    from nbenv.forking import Forked, can_fork
    from nbenv.net.http import HttpClient

    client = HttpClient.for_index_settings(settings, Credentials([*indexes, *settings.find_links]))
    # a resolve runs on this process's threads: downloads get a process of their own
    # (NBENV_DOWNLOAD_PROCESS=0 keeps them here)
    helper = given is None and policy is not CachePolicy.OFFLINE and _download_process_on()
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(client.close)
        resolver: PypiResolver | None = None
        forked: UnpackWorkers | None = None
        downloads: Forked | None = None
        pages: Forked | None = None
        cold = False
        if given is None:
            if policy is not CachePolicy.OFFLINE:
                cold = _new_projects(request, indexes)
                # Helper processes forked now, while this process has one thread: a few ms
                # here, and their work starts on a core the resolve leaves idle.
                if cold and can_fork():
                    client.build()  # the helpers inherit httpx and its TLS set-up
                    # Collections skip every object there is now, until the create ends:
                    # cheaper passes for the rest of it, and the helpers copy no page a
                    # collection would write to. A single-threaded process only (can_fork):
                    # nothing of the caller's can turn to garbage meanwhile.
                    collector.freeze()
                    cleanup.callback(collector.unfreeze)
                    if policy is CachePolicy.DEFAULT:  # fetches and parses the index pages
                        pages = Forked("nbenv.resolve.warm:serve")
                        cleanup.callback(pages.close)  # should the PageWarmer never take it
                    if helper:  # the download process
                        downloads = Forked("nbenv.downloading:serve")
                        cleanup.callback(downloads.close)  # once the Fetcher is done with it
                # Worker processes (they unpack, and link any build's wheels into its env),
                # last: they come with threads to serve them
                forked = _fork_workers()
                if forked is not None:
                    cleanup.callback(forked.close, cancel=True)  # once the Unpacker is done
                client.prepare()  # its TLS set-up overlaps the imports below
            from nbenv.resolve.pypi import PypiResolver

            full = with_kernel_requirements(request) if options.register_kernel else request
            targets = [target_for(interpreter)]
            warmer = None
            if pages is not None:
                from nbenv.resolve.warm import PageWarmer

                warmer = PageWarmer(pages, client, cache_dir() / "resolve", targets)
                cleanup.callback(warmer.close)  # closing twice is harmless
            resolver = PypiResolver(
                full,
                client=client,
                policy=policy,
                reporter=reporter,
                settings=settings,
                targets=targets,
                warm_page=warmer.warm if warmer is not None else None,
            )
            cleanup.callback(resolver.close)  # closing twice is harmless
            # The index is asked from here on; the imports and set-up below (~50 ms)
            # overlap its answers instead of delaying the first request.
            resolver.start()
        from nbenv.fetch import Fetcher
        from nbenv.lock import build_lock

        fetcher = Fetcher(client, cache_dir(), reporter=reporter, helper_process=helper)
        unpacker: Unpacker | None = None

        def stop_fetching() -> None:  # downloads first: a finished one submits an unpack
            fetcher.close()  # downloads begun for pins the lock did not keep
            if unpacker is not None:
                unpacker.close(cancel=True)  # after a failure: what is queued is not needed

        cleanup.callback(stop_fetching)
        if given is None and policy is not CachePolicy.OFFLINE:
            from nbenv.install import Unpacker

            unpacker = Unpacker(cache_dir(), adaptive=True, started=forked)
            if cold:
                # Wheels to download for sure: the download process starts now, while a
                # core is idle (the first ~0.4 s of a cold create), not at the first pins,
                # when both cores are busy. (Started workers wait for the adaptive rule:
                # three interpreter starts at once delayed the first download.)
                fetcher.start_helper(downloads)
        if given is not None:
            lock = given
        else:
            assert resolver is not None
            if unpacker is not None:
                resolver.on_pin = _download_ahead(fetcher, unpacker)
                if cold:  # no stale pages to guess from: the guesses are the likely pins
                    resolver.watch_likely(_big_only(resolver.on_pin))
            with resolver:  # its threads stop here, before the build
                lock = build_lock(resolver.resolve(), request)
            if warmer is not None:
                warmer.close()  # after the resolver's threads: none waits on it any more
        steps.append(("resolve", time.perf_counter() - start))
        locked = lock

        def build(into: Path) -> EnvRecord:
            install_lock(into, store.path(locked.env_id), locked, interpreter, fetcher,
                         reporter, options.link_mode, steps, unpacker=unpacker)  # fmt: skip
            return EnvRecord(
                env_id=locked.env_id,
                name=request.name,
                requirements=request.requirement_strings(),
                python=".".join(map(str, interpreter.version)),
                base_interpreter=str(interpreter.path),
                created=time.time(),
                indexes=tuple(strip_userinfo(i) for i in indexes),
            )

        result = build_in_store(store, locked.env_id, build, request=request, start=start,
                                options=options, remember=key if given is None else None,
                                on_built=client.close)  # fmt: skip
    return replace(result, steps=tuple(steps))


def reuse_remembered(
    store: Store, key: str, request: EnvRequest, start: float, options: BuildOptions
) -> CreateResult | None:
    """The env this request (by `key`) made before on this machine, if it is still there:
    found with no resolution and no network (a kernel's every `%%pypi` cell asks this)."""
    if options.policy is not CachePolicy.DEFAULT:
        return None  # --refresh and --offline resolve again
    known = store.remembered(key)
    if known is None:
        return None
    with store.holding(known):
        if not store.exists(known):  # gc may have taken it just now: then build again
            return None
        return _existing(store, known, request, start, options.register_kernel,
                         options.kernel_prefix)  # fmt: skip


def build_in_store(
    store: Store,
    env_id: str,
    build: Callable[[Path], EnvRecord],
    *,
    request: EnvRequest,
    start: float,
    options: BuildOptions,
    remember: str | None,
    runs_python: bool = True,
    on_built: Callable[[], None] | None = None,
) -> CreateResult:
    """`build(temp dir) -> record` under the store's lock for `env_id`, unless another
    process built it first; then bytecode in the background, `remember` (a request key)
    pointing at it, and its kernel. `runs_python`: the env has Python packages of ours (a
    bare conda prefix has none: no bytecode, no kernel). `on_built` runs once the files
    are in place (e.g. closing network connections before the kernel step)."""
    created = False
    # held until the kernel is registered: gc cannot take the env from under us
    with store.holding(env_id):
        with _disk_full_is_an_error(), store.building(env_id) as into:
            if into is not None:
                store.commit(into, build(into))
                created = True
        if on_built is not None:
            on_built()
        path = store.path(env_id)
        runs_python = runs_python and (path / "bin" / "python").exists()
        if created and options.compile_bytecode and runs_python:
            from nbenv.venv import compile_bytecode as compile_in_background

            store.compiling(env_id, compile_in_background(path).pid)
        if remember is not None:
            store.remember(remember, env_id)
        kernel = options.register_kernel and runs_python
        result = _existing(store, env_id, request, start, kernel, options.kernel_prefix)
    return replace(result, created=created)


def _fork_workers() -> UnpackWorkers | None:
    """Worker processes forked from this process, if it can fork them (nbenv.unpacking)."""
    from nbenv.forking import can_fork
    from nbenv.unpacking import UnpackWorkers, process_budget

    budget, _ = process_budget()
    if not budget or not can_fork():
        return None
    return UnpackWorkers(cache_dir(), budget, fork=True)


def _new_projects(request: EnvRequest, indexes: Sequence[str]) -> bool:
    from nbenv.resolve.cache import ResolveCache
    from nbenv.resolve.index import never_asked

    names = [requirement.name for requirement in request.requirements]
    return never_asked(ResolveCache(cache_dir() / "resolve"), indexes, names)


def _download_process_on() -> bool:
    value = os.environ.get("NBENV_DOWNLOAD_PROCESS", "").strip().lower()
    if value in ("", "1", "yes", "true", "on"):
        return True
    if value in ("0", "no", "false", "off"):
        return False
    raise UsageError(f"NBENV_DOWNLOAD_PROCESS={value!r}: give 1 (a download process) or 0")


def _download_ahead(fetcher: Fetcher, unpacker: Unpacker) -> Callable[[DistFile], None]:
    """The resolver's pins, downloaded and unpacked while it goes on: a cold build then
    overlaps resolution with the downloads and unpacking instead of following it."""
    from nbenv.fetch import Artifact
    from nbenv.wheelcache import WheelToInstall

    def on_pin(file: DistFile) -> None:
        sha = file.sha256
        if not file.is_wheel or sha is None:
            return  # sdists are built from the resolver's own copy
        try:
            artifact = Artifact(file.filename, file.url, sha, file.size)
        except NbenvError:
            return  # a bad name or hash: the lock's own fetch reports it
        unpacker.expect(artifact.sha256, artifact.size)
        future = fetcher.start(artifact)
        if future is not None:
            future.add_done_callback(lambda f: unpack(artifact, f))

    def unpack(artifact: Artifact, future: Future[Path]) -> None:
        if not future.cancelled() and future.exception() is None:
            unpacker.submit(WheelToInstall(future.result(), artifact.sha256, verified=True))

    return on_pin


def _big_only(start: Callable[[DistFile], None]) -> Callable[[DistFile], None]:
    """`start` for the wheels of _LIKELY_BYTES or more only. The prefetcher guesses a
    project's pin as soon as its page is in, well before the resolver pins it (set B:
    scipy ~0.15 s earlier): the long downloads and unpacks then begin while the resolve
    leaves a core idle. A wrong guess costs a download the lock discards (and an unpack
    kept in the cache); small wheels are not worth that risk."""

    def likely(file: DistFile) -> None:
        if file.size is not None and file.size >= _LIKELY_BYTES:
            start(file)

    return likely


@contextlib.contextmanager
def _disk_full_is_an_error() -> Iterator[None]:
    # a full disk can strike in any writer (download, unpack, link, record); the build dir
    # is removed by `store.building` on the way out, so the message can promise that
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(str(exc.filename or "the environment store")) from None
        raise


def _existing(
    store: Store,
    env_id: str,
    request: EnvRequest,
    start: float,
    register_kernel: bool,
    kernel_prefix: str | None,
) -> CreateResult:
    record = store.record(env_id)
    if request.name:
        store.set_alias(request.name, env_id)
    store.touch(env_id)
    path = store.path(env_id)
    kernel = None
    if register_kernel:
        kernel = ensure_kernel(store, env_id, name=request.name or record.name,
                               prefix=kernel_prefix)  # fmt: skip
    return CreateResult(record, path, False, kernel, time.perf_counter() - start)


def ensure_kernel(
    store: Store, env_id: str, *, name: str | None = None, prefix: str | None = None
) -> KernelSpecInfo:
    """Install the env's kernelspec unless an identical one is there already."""
    record = store.record(env_id)
    path = store.path(env_id)
    kname = kernel_name(env_id, name or record.name)

    def current() -> KernelSpecInfo | None:
        spec = installed_spec(kname, prefix=prefix)
        ok = spec is not None and spec.env_id == env_id and spec.python == path / "bin" / "python"
        return spec if ok else None

    found = current()
    if found is not None:
        return found  # the common case, checked in a millisecond: nothing to do
    # Two processes creating the same env both get here: one installs, the other reuses it
    # (KernelSpecManager's copy fails when another process writes the same directory).
    store.home.mkdir(parents=True, exist_ok=True)
    import filelock  # here: listing envs never needs it

    with filelock.FileLock(str(store.home / f".kernel-{kname}.lock")):
        found = current()
        if found is not None:
            return found
        env = None
        if record.kind != "pypi":  # the kernel runs with the conda prefix active
            from nbenv.conda import kernelspec_env

            env = kernelspec_env(path)
        return install_kernelspec(
            env=env,
            env_dir=path,
            python=path / "bin" / "python",
            env_id=env_id,
            name=name or record.name,
            python_version=".".join(record.python.split(".")[:2]),
            requirements=record.requirements,
            lock_path=path / LOCK_FILE,
            prefix=prefix,
        )


def install_lock(
    build: Path,
    final: Path,
    lock: Lock,
    interpreter: Interpreter,
    fetcher: Fetcher,
    reporter: Reporter,
    link_mode: LinkMode,
    steps: list[tuple[str, float]],
    *,
    make_venv: bool = True,
    unpacker: Unpacker | None = None,
) -> None:
    """Fetch the lock's files and install them into `build`: a new venv from `interpreter`
    (`make_venv`), or the python `build` already holds (a conda prefix with its own)."""
    from packaging.markers import Environment
    from packaging.pylock import PackageSdist, PackageWheel
    from packaging.tags import Tag

    from nbenv.fetch import Artifact
    from nbenv.install import Unpacker, install_wheels, unpack_processes
    from nbenv.venv import create_venv
    from nbenv.wheelcache import WheelToInstall

    t0 = time.perf_counter()
    cache = cache_dir()
    target = target_for(interpreter)
    tags = [Tag(*t.split("-")) for t in target.tag_rank]
    environment = cast(Environment, dict(target.markers))
    selected = list(lock.pylock.select(environment=environment, tags=tags))
    artifacts = []
    for package, dist in selected:
        if not isinstance(dist, PackageWheel | PackageSdist) or dist.url is None:
            raise NbenvError(f"{package.name}: only wheels and sdists with URLs can be installed")
        sha = (dist.hashes or {}).get("sha256")
        if not sha:
            raise NbenvError(f"{package.name}: the lock has no sha256 for {dist.name}")
        artifacts.append(Artifact(dist.name or dist.url.rsplit("/", 1)[-1], dist.url, sha,
                                  dist.size))  # fmt: skip
    # Unpacking workers first (their start-up overlaps the rest), then the venv (quick),
    # then every wheel unpacked as soon as it is downloaded: the small ones unpack while
    # the big ones still arrive.
    wheels_to_get = [(a.sha256, a.size) for a in artifacts if a.filename.endswith(".whl")]
    with contextlib.ExitStack() as stack:
        if unpacker is None:
            unpacker = stack.enter_context(
                Unpacker(cache, processes=unpack_processes(cache, wheels_to_get))
            )
        else:  # the caller's, at work already on what the resolver pinned
            for sha, size in wheels_to_get:
                unpacker.expect(sha, size)
        if make_venv:
            create_venv(interpreter.path, build, final_dir=final)

        def unpack_early(artifact: Artifact, path: Path) -> None:
            if artifact.filename.endswith(".whl"):
                unpacker.submit(WheelToInstall(path, artifact.sha256, verified=True))

        reporter.stage("downloading")
        fetcher.discard(keep={a.sha256 for a in artifacts})  # pins the lock did not keep
        paths = fetcher.fetch(artifacts, on_ready=unpack_early)
        steps.append(("fetch", time.perf_counter() - t0))
        wheels = []
        for artifact in artifacts:
            path = paths[artifact.sha256]
            if artifact.filename.endswith(".whl"):
                wheels.append(WheelToInstall(path, artifact.sha256, verified=True))
                continue
            from nbenv.resolve.sdist import build_wheel_from_sdist  # rarely needed: lazily

            built = build_wheel_from_sdist(
                path, cache, sdist_sha256=artifact.sha256, indexes=(),
                python=str(interpreter.path), reporter=reporter,
            )  # fmt: skip
            wheels.append(WheelToInstall(built, sha256_file(built), verified=True))
        t1 = time.perf_counter()
        reporter.stage("creating environment")
        install_wheels(
            build,
            wheels,
            cache_root=cache,
            link_mode=link_mode,
            reporter=reporter,
            final_dir=final,
            unpacker=unpacker,
            link_early=True,  # a build dir: discarded on error
        )
    (build / LOCK_FILE).write_text(lock.dumps())
    steps.append(("install", time.perf_counter() - t1))


# -- removal and garbage collection -------------------------------------------------------


def remove_env(store: Store, env_id: str, *, force: bool = False) -> list[str]:
    """Remove an env and its kernelspecs; refuses while a kernel runs from it."""
    pids = in_use(store.path(env_id))
    if pids and not force:
        raise NbenvError(
            f"Environment {env_id} is in use by running processes ({', '.join(map(str, pids))});"
            " shut its kernels down first"
        )
    stop_compiling(store.path(env_id))
    removed = []
    for spec in nbenv_kernelspecs():
        if spec.env_id == env_id:
            remove_kernelspec(spec)
            removed.append(spec.name)
    store.remove(env_id)
    return removed


@dataclass(frozen=True)
class GcReport:
    envs: tuple[str, ...]
    kernels: tuple[str, ...]
    leftovers: tuple[str, ...]
    kept_in_use: tuple[str, ...]
    dry_run: bool


def gc(store: Store, *, older_than_days: float | None = None, dry_run: bool = False) -> GcReport:
    """Orphaned kernelspecs and killed builds always go; unnamed envs unused for
    `older_than_days` go too. Envs with a running process are never removed."""
    kernels = tuple(spec.name for spec in orphaned_kernelspecs())
    leftovers = tuple(str(p) for p in store.leftovers())
    named = set(store.aliases().values())
    envs, kept = [], []
    cutoff = 0.0
    if older_than_days is not None:
        cutoff = time.time() - older_than_days * 86400
        for env_id in store.env_ids():
            if env_id in named or store.last_used(env_id) > cutoff:
                continue
            if in_use(store.path(env_id)):
                kept.append(env_id)
            else:
                envs.append(env_id)
    broken = broken_kernel_dirs()
    kernels += tuple(path.name for path in broken)
    if not dry_run:
        for spec in orphaned_kernelspecs():
            remove_kernelspec(spec)
        import filelock

        for path in broken:
            # a registration under way holds this lock (ensure_kernel): leave it be
            lock = filelock.FileLock(str(store.home / f".kernel-{path.name}.lock"))
            try:
                lock.acquire(timeout=0)
            except filelock.Timeout:
                continue
            try:
                shutil.rmtree(path, ignore_errors=True)
            finally:
                lock.release()
        for path in store.leftovers():
            shutil.rmtree(path, ignore_errors=True)
        removed = []
        for env_id in envs:
            # a create holds the env's lock until its kernel is registered (and touches it)
            with store.try_holding(env_id) as held:
                if held and store.last_used(env_id) <= cutoff and not in_use(store.path(env_id)):
                    remove_env(store, env_id)
                    removed.append(env_id)
                else:
                    kept.append(env_id)
        envs = removed
    return GcReport(tuple(envs), kernels, leftovers, tuple(kept), dry_run)


# -- listing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Known:
    """What every env's description needs, read once for a whole listing."""

    names: dict[str, list[str]]  # env id -> its names
    kernels: dict[str, list[KernelSpecInfo]]
    notebooks: dict[str, list[str]]  # env id -> notebooks (or lock files) that use it

    @classmethod
    def read(cls, store: Store) -> _Known:
        from nbenv.notebook_index import notebooks_by_env

        names: dict[str, list[str]] = {}
        for name, env_id in store.aliases().items():
            names.setdefault(env_id, []).append(name)
        kernels: dict[str, list[KernelSpecInfo]] = {}
        for spec in nbenv_kernelspecs():
            kernels.setdefault(spec.env_id, []).append(spec)
        uses = notebooks_by_env(store.home)
        notebooks = {env_id: sorted({u.label for u in found}) for env_id, found in uses.items()}
        return cls(names, kernels, notebooks)


def describe_env(
    store: Store, env_id: str, *, known: _Known | None = None, walk: bool = True
) -> dict[str, Any]:
    """What `nbenv show` prints: a JSON-able summary of one env. Sizes come from the
    store's size cache (walked once, then again only when the env changed); `walk=False`
    gives None for a size not cached yet (the inspector measures those after showing)."""
    known = known or _Known.read(store)
    record = store.record(env_id)
    path = store.path(env_id)
    names = sorted(known.names.get(env_id, ()))
    kernels = known.kernels.get(env_id, [])
    lock_path: Path | None = path / LOCK_FILE
    packages: list[dict[str, str]] = []
    if record.kind != "pypi":  # conda packages first, then what the PyPI pass added
        from nbenv.conda_envs import load_env_lock
        from nbenv.resolve.mixed import CONDA_LOCK_FILE

        try:
            mixed = load_env_lock(path)
        except NbenvError:
            mixed = None
        if mixed is not None:
            packages = [{"name": p.name, "version": p.version, "build": p.build,
                         "source": "conda"} for p in mixed.conda.packages]  # fmt: skip
            lock_path = path / CONDA_LOCK_FILE
    pypi = lock_packages(path / LOCK_FILE)  # cached beside the lock: listings stay cheap
    if pypi is not None:
        packages += [{**p, "source": "pypi"} for p in pypi]
    elif record.kind == "pypi":
        lock_path = None
    size = store.cached_size(env_id, walk=walk)
    return {
        "env_id": env_id,
        "name": ", ".join(names) or None,  # aliases move; the record's name may be stale
        "path": str(path),
        "kind": record.kind,
        "python": record.python,
        "base_interpreter": record.base_interpreter,
        "kernel": ", ".join(k.name for k in kernels) or None,
        "kernels": [k.name for k in kernels],
        "kernel_display_name": ", ".join(k.display_name for k in kernels) or None,
        "lock": str(lock_path) if lock_path else None,
        "requirements": list(record.requirements),
        "indexes": list(record.indexes),
        "packages": packages,
        "size": size.total if size else None,
        "size_unique": size.unique if size else None,
        "created": record.created,
        "last_used": store.last_used(env_id),
        "notebooks": known.notebooks.get(env_id, []),
        "startup_files": _startup_files(path),
    }


def _startup_files(env: Path) -> list[str]:
    """`.pth` files in the env's site-packages: Python runs their `import` lines at every
    start. Packages may ship them (editable installs, coverage), so they are allowed, and
    shown, since code that runs before the user's is worth knowing about."""
    found = {p.name for p in env.glob("lib/python*/site-packages/*.pth")}
    found |= {p.name for p in env.glob("Lib/site-packages/*.pth")}
    return sorted(found)


def describe_envs(store: Store | None = None, *, walk: bool = True) -> list[dict[str, Any]]:
    """Every env, most recently used first (`nbenv list`, the inspector)."""
    store = store or Store()
    known = _Known.read(store)
    rows = []
    for env_id in store.env_ids():
        try:
            info = describe_env(store, env_id, known=known, walk=walk)
        except NbenvError:
            continue  # removed while we listed
        info["packages"] = len(info["packages"])
        rows.append(info)
    return sorted(rows, key=lambda r: -float(r["last_used"]))
