"""Every test runs with a temporary home and talks only to local index servers."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import IsolatedEnv
from support.index_server import Index, IndexServer
from support.universe import EXTRA, MAIN, PRIVATE, Universe, build_universe

from nbenv.net.http import HttpClient

# Variables that would point pip, uv, jupyter or httpx at the real machine's configuration.
_CLEARED = ("NETRC", "JUPYTER_PATH", "JUPYTER_CONFIG_PATH", "JUPYTER_PREFER_ENV_PATH")
_CLEARED_PREFIXES = ("PIP_", "UV_")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> IsolatedEnv:
    root = tmp_path / "isolated"
    env = IsolatedEnv(
        root=root,
        home=root / "home",
        nbenv_home=root / "nbenv",
        jupyter_data=root / "jupyter" / "data",
        jupyter_config=root / "jupyter" / "config",
        jupyter_runtime=root / "jupyter" / "runtime",
        xdg_config=root / "xdg" / "config",
        xdg_data=root / "xdg" / "data",
        xdg_cache=root / "xdg" / "cache",
    )
    for name in os.environ:
        if name in _CLEARED or name.startswith(_CLEARED_PREFIXES):
            monkeypatch.delenv(name)
    settings = {
        "HOME": env.home,  # ~/.netrc, ~/.config/pip, ~/.ipython all land here
        "USERPROFILE": env.home,
        "NBENV_HOME": env.nbenv_home,
        "JUPYTER_DATA_DIR": env.jupyter_data,
        "JUPYTER_CONFIG_DIR": env.jupyter_config,
        "JUPYTER_RUNTIME_DIR": env.jupyter_runtime,
        "IPYTHONDIR": env.home / ".ipython",
        "XDG_CONFIG_HOME": env.xdg_config,
        "XDG_DATA_HOME": env.xdg_data,
        "XDG_CACHE_HOME": env.xdg_cache,
    }
    for name, path in settings.items():
        path.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(name, str(path))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    # Files a test makes relative to the working directory (a notebook lock found there,
    # a kernel's cwd) land in its temp dir, never in the checkout.
    monkeypatch.chdir(root)
    # A proxy configured on the machine must never see requests to the local servers.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return env


@pytest.fixture(scope="session")
def universe(tmp_path_factory: pytest.TempPathFactory) -> Universe:
    return build_universe(tmp_path_factory.mktemp("universe"))


# Session servers; tests use the function-scoped fixtures below, which reset them first.


@pytest.fixture(scope="session")
def session_index(universe: Universe) -> Iterator[IndexServer]:
    server = universe.serve(MAIN)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def session_extra_index(universe: Universe) -> Iterator[IndexServer]:
    server = universe.serve(EXTRA)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def session_auth_index(universe: Universe) -> Iterator[IndexServer]:
    server = universe.serve(PRIVATE)
    yield server
    server.stop()


@pytest.fixture
def index(session_index: IndexServer) -> IndexServer:
    """The main index (JSON and HTML), reset: empty log, default knobs, original files."""
    session_index.reset()
    return session_index


@pytest.fixture
def extra_index(session_extra_index: IndexServer) -> IndexServer:
    """A second index with `extraonly` 1.0 and `alpha` 3.0, reset."""
    session_extra_index.reset()
    return session_extra_index


@pytest.fixture
def auth_index(session_auth_index: IndexServer) -> IndexServer:
    """An index behind basic auth (alice / s3cret) serving `private` 1.0, reset."""
    session_auth_index.reset()
    return session_auth_index


@pytest.fixture
def client() -> Iterator[HttpClient]:
    """nbenv's HTTP client with quick retries (for downloads from the test indexes)."""
    with HttpClient(backoff=0.01) as http:
        yield http


@pytest.fixture
def cache(isolated_env: IsolatedEnv) -> Path:
    """The download cache inside the test's NBENV_HOME."""
    return isolated_env.nbenv_home / "cache"


@pytest.fixture
def make_index() -> Iterator[Callable[..., IndexServer]]:
    """Start a throwaway server: `make_index(Index | None, **knobs)`; stopped after the test."""
    started: list[IndexServer] = []

    def make(index: Index | None = None, **knobs: Any) -> IndexServer:
        server = IndexServer(index, **knobs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


# -- environments: the kernel packages every env gets, served without any network ---------


@pytest.fixture(scope="session")
def kernel_wheels(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """ipykernel + ipywidgets and their closure, repacked from this interpreter."""
    from support.repack import closure, repack

    out = tmp_path_factory.mktemp("kernel-wheels")
    return [repack(dist, out) for dist in closure(["ipykernel", "ipywidgets"])]


@pytest.fixture(scope="session")
def session_env_index(universe: Universe, kernel_wheels: list[Path]) -> Iterator[IndexServer]:
    listing = universe.make_index(MAIN)
    for wheel in kernel_wheels:
        listing.add(wheel, pep658=True)
    server = IndexServer(listing).start()
    yield server
    server.stop()


@pytest.fixture
def env_index(session_env_index: IndexServer) -> IndexServer:
    """The main index plus the kernel packages: enough to build envs that run kernels."""
    session_env_index.reset()
    return session_env_index


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One download/unpack cache for tests that build envs but do not test caching."""
    return tmp_path_factory.mktemp("shared-cache")


# What may be shared between tests: content-addressed, so never stale. Index pages and
# resolution summaries stay per test (a test that adds a release must not leak it).
_SHAREABLE = ("files", "unpacked", "built", "sdists")


@pytest.fixture
def fast_cache(shared_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """NBENV_CACHE_DIR whose downloads and unpacked wheels are shared across the session."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in _SHAREABLE:
        (shared_cache / name).mkdir(exist_ok=True)
        (cache / name).symlink_to(shared_cache / name, target_is_directory=True)
    monkeypatch.setenv("NBENV_CACHE_DIR", str(cache))
    return cache


# -- envs that run kernels, built once per session (child kernels, nbenv.subkernel) -------


@pytest.fixture(scope="session")
def kernel_env(
    session_env_index: IndexServer, shared_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Any]:
    """`kernel_env("alpha")`: a CreateResult for an env of those requirements plus the kernel
    packages, built once per session with bytecode compiled (kernels start as fast as they
    would for a user), in a home of its own so that each test's isolated home stays empty."""
    from nbenv.envs import BuildOptions, CreateResult, create_env
    from nbenv.spec import parse_request
    from nbenv.venv import compile_bytecode

    root = tmp_path_factory.mktemp("kernel-envs")
    built: dict[tuple[str, ...], CreateResult] = {}

    def build(*requirements: str) -> CreateResult:
        if requirements not in built:
            with pytest.MonkeyPatch.context() as patch:
                for name in os.environ:
                    if name in _CLEARED or name.startswith(_CLEARED_PREFIXES):
                        patch.delenv(name)
                for name in ("NBENV_HOME", "JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR", "HOME"):
                    patch.setenv(name, str(root / name.lower()))
                patch.setenv("NBENV_CACHE_DIR", str(shared_cache))
                patch.setenv("PIP_CONFIG_FILE", os.devnull)
                patch.setenv("NO_PROXY", "127.0.0.1,localhost")
                patch.setenv("no_proxy", "127.0.0.1,localhost")
                request = parse_request(["--index-url", session_env_index.url, *requirements])
                result = create_env(request, BuildOptions(compile_bytecode=False))
                compile_bytecode(result.path, wait=True)
            built[requirements] = result
        return built[requirements]

    return build


# -- conda: a local channel of real packages (tests/support/conda_channel.py) -------------


@pytest.fixture
def no_machine_conda_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Virtual-package overrides, rattler auth files and an active conda env of the
    machine stay out of conda tests (modules use it with `pytestmark`)."""
    for name in list(os.environ):
        if name.startswith(("CONDA_OVERRIDE_", "RATTLER_")) or name == "CONDA_PREFIX":
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def conda_channel(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The fixed conda universe, built and indexed by rattler once per session: a
    CondaChannel with `.path`, `.url` (file://) and `.subdir` (this machine's)."""
    from support.conda_channel import CondaChannel, build_channel, native_subdir

    root = build_channel(tmp_path_factory.mktemp("conda-channel"))
    return CondaChannel(path=root, url=root.as_uri() + "/", subdir=native_subdir())
