"""Downloads in a helper process (nbenv.downloading): the same cache guarantees and errors as
in-process downloads, credentials kept off its command line, and this process taking over
when the helper dies."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from support import IsolatedEnv
from support.index_server import Fault, IndexServer
from support.universe import PRIVATE, Universe
from support.wheels import sha256_file

from nbenv.errors import DownloadError, HashMismatchError, UsageError
from nbenv.fetch import Artifact, DownloadCancelled, Fetcher
from nbenv.net.auth import Credentials
from nbenv.net.http import HttpClient

BETA = "beta-1.0-py3-none-any.whl"
GAMMA = "gamma-1.1-py3-none-any.whl"
PRIVATE_WHEEL = "private-1.0-py3-none-any.whl"


class Notes:
    def __init__(self) -> None:
        self.notes: list[str] = []
        self.progress_calls: list[tuple[int, int | None]] = []

    def stage(self, name: str) -> None:
        pass

    def progress(self, name: str, done: int, total: int | None) -> None:
        self.progress_calls.append((done, total))

    def note(self, message: str) -> None:
        self.notes.append(message)

    def cached(self, name: str, hits: int, total: int) -> None:
        pass


@pytest.fixture
def no_download_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process cannot download: what arrives came from the helper process."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("downloaded in the parent process")

    monkeypatch.setattr(HttpClient, "download", refuse)


def artifact(server: IndexServer, universe: Universe, filename: str, sha256: str = "") -> Artifact:
    path = universe.path(filename)
    digest = sha256 or sha256_file(path)
    return Artifact(filename, server.file_url(filename), digest, path.stat().st_size)


def helper_pid(fetcher: Fetcher) -> int:
    helper = fetcher._helper
    assert helper is not None and helper.pid is not None
    return helper.pid


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie until reaped counts as gone too
    return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")


def test_the_helper_downloads_into_the_verified_cache(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path, no_download_here: None
) -> None:
    wanted = [artifact(index, universe, name) for name in (BETA, GAMMA)]
    reporter = Notes()
    fetcher = Fetcher(client, cache, reporter=reporter, helper_process=True)

    paths = fetcher.fetch(wanted)

    pid = helper_pid(fetcher)
    assert pid != os.getpid()
    for item in wanted:
        path = paths[item.sha256]
        assert path == fetcher.path_for(item)
        assert sha256_file(path) == item.sha256
        assert sorted(p.name for p in path.parent.iterdir()) == [".lock", item.filename]
    total = sum(item.size or 0 for item in wanted)
    assert reporter.progress_calls[-1] == (total, total)  # the helper's progress, relayed
    fetcher.close()
    assert gone(pid)


def test_the_helper_reports_a_hash_mismatch_as_this_process_would(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path, no_download_here: None
) -> None:
    lying = artifact(index, universe, BETA, sha256="1" * 64)
    with (
        Fetcher(client, cache, helper_process=True) as fetcher,
        pytest.raises(HashMismatchError) as caught,
    ):
        fetcher.fetch([lying])
    error = caught.value
    assert (error.filename, error.url) == (BETA, index.file_url(BETA))
    assert (error.expected, error.actual) == ("1" * 64, sha256_file(universe.path(BETA)))
    assert "re-lock with `nbenv lock --refresh`" in str(error)
    assert not fetcher.path_for(lying).parent.joinpath(BETA).exists()
    assert not fetcher.path_for(lying).parent.joinpath(BETA + ".part").exists()


def test_the_helper_reports_a_missing_file_by_name(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    real = artifact(index, universe, BETA)
    missing = Artifact(
        "nope-1.0-py3-none-any.whl", real.url.replace(BETA, "nope-1.0-py3-none-any.whl"), "2" * 64
    )
    with (
        Fetcher(client, cache, helper_process=True) as fetcher,
        pytest.raises(DownloadError) as caught,
    ):
        fetcher.fetch([missing])
    assert caught.value.filename == "nope-1.0-py3-none-any.whl"
    assert "HTTP 404" in str(caught.value)


def test_credentials_reach_the_helper_but_never_its_command_line(
    auth_index: IndexServer, universe: Universe, cache: Path, no_download_here: None
) -> None:
    assert universe.entry(PRIVATE_WHEEL).index == PRIVATE
    wanted = artifact(auth_index, universe, PRIVATE_WHEEL)
    with HttpClient(credentials=Credentials([auth_index.url_with_auth()])) as client:
        fetcher = Fetcher(client, cache, helper_process=True)
        path = fetcher.fetch([wanted])[wanted.sha256]
        pid = helper_pid(fetcher)
        seen = Path(f"/proc/{pid}/cmdline").read_bytes() + Path(f"/proc/{pid}/environ").read_bytes()
        fetcher.close()
    assert sha256_file(path) == wanted.sha256
    assert b"s3cret" not in seen and b"alice" not in seen
    assert all(r.authorization for r in auth_index.requests("/files/", "GET") if r.status == 200)


def test_when_the_helper_dies_this_process_finishes_its_downloads(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    wanted = artifact(index, universe, BETA)
    index.latency = 1.0  # each answer waits: the helper's request is in flight a while
    reporter = Notes()
    fetcher = Fetcher(client, cache, reporter=reporter, helper_process=True)
    started = fetcher.start(wanted)
    assert started is not None
    pid = helper_pid(fetcher)
    deadline = time.monotonic() + 10
    while index.max_in_flight < 1 and time.monotonic() < deadline:
        time.sleep(0.01)  # the helper has asked for the file; the server holds the answer
    assert index.max_in_flight == 1
    os.kill(pid, 9)

    path = fetcher.fetch([wanted])[wanted.sha256]

    assert sha256_file(path) == wanted.sha256
    assert started.result() == path
    assert any("the download process ended" in n and "in this process" in n for n in reporter.notes)
    fetcher.close()


def test_closing_stops_the_helper_at_once_and_cancels_its_downloads(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    wanted = artifact(index, universe, BETA)
    index.inject(f"/files/{BETA}", Fault("stall", seconds=30))
    reporter = Notes()
    fetcher = Fetcher(client, cache, reporter=reporter, helper_process=True)
    started = fetcher.start(wanted)
    assert started is not None
    pid = helper_pid(fetcher)
    begun = time.monotonic()
    fetcher.close()
    assert time.monotonic() - begun < 5  # not waiting for the stalled server's 30 s
    assert gone(pid)
    with pytest.raises(DownloadCancelled):
        started.result(timeout=5)
    assert not fetcher.path_for(wanted).exists()
    assert reporter.notes == []  # stopped on purpose: nothing taken over by this process


def test_a_discarded_download_is_stopped_in_the_helper(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    wanted = artifact(index, universe, BETA)
    index.inject(f"/files/{BETA}", Fault("stall", seconds=1.5))  # then it would complete
    with Fetcher(client, cache, helper_process=True) as fetcher:
        started = fetcher.start(wanted)
        assert started is not None
        fetcher.discard(keep=())
        with pytest.raises(DownloadCancelled):  # seen at its first chunk, after the stall
            started.result(timeout=20)
        assert not fetcher.path_for(wanted).exists()


def test_a_create_downloads_in_the_helper_unless_told_not_to(
    env_index: IndexServer, isolated_env: IsolatedEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # isolated_env: a fresh download cache, so every wheel here is downloaded
    from nbenv.envs import BuildOptions, create_env
    from nbenv.spec import parse_request

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("downloaded in the parent process")

    monkeypatch.setattr(HttpClient, "download", refuse)
    options = BuildOptions(register_kernel=False, compile_bytecode=False)
    request = parse_request(["alpha", "--index-url", env_index.url])
    result = create_env(request, options)  # downloads in the helper: this process cannot
    assert result.created
    monkeypatch.setenv("NBENV_DOWNLOAD_PROCESS", "maybe")
    with pytest.raises(UsageError, match="NBENV_DOWNLOAD_PROCESS='maybe'"):
        create_env(parse_request(["gamma", "--index-url", env_index.url]), options)
    monkeypatch.setenv("NBENV_DOWNLOAD_PROCESS", "0")
    with pytest.raises(AssertionError, match="downloaded in the parent process"):
        create_env(parse_request(["gamma", "--index-url", env_index.url]), options)


def test_a_failed_early_download_is_tried_again_by_fetch_in_the_helper(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    wanted = artifact(index, universe, BETA)
    index.fail(f"/files/{BETA}", 404)
    with Fetcher(client, cache, helper_process=True) as fetcher:
        started = fetcher.start(wanted)
        assert started is not None
        with pytest.raises(DownloadError):
            started.result(timeout=30)

        path = fetcher.fetch([wanted])[wanted.sha256]  # a fresh try, not the old failure

    tries = [(r.range, r.status) for r in index.requests(f"/files/{BETA}", "GET")]
    assert tries == [(None, 404), (None, 200)]
    assert sha256_file(path) == wanted.sha256


def test_a_file_discarded_then_fetched_at_once_gets_a_fresh_download_in_the_helper(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    wanted = artifact(index, universe, BETA)
    index.inject(f"/files/{BETA}", Fault("stall", seconds=1.0))
    with Fetcher(client, cache, helper_process=True) as fetcher:
        first = fetcher.start(wanted)
        assert first is not None
        fetcher.discard(keep=())
        # asked again before the discarded job has seen its cancel: the cancel of the old
        # request must not be taken for the answer to this one
        path = fetcher.fetch([wanted])[wanted.sha256]
        with pytest.raises(DownloadCancelled):
            first.result(timeout=20)
    assert sha256_file(path) == wanted.sha256
