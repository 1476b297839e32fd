"""Downloads from a lock: parallel, verified, cached by hash, resumable, one per file.

Everything runs against the local index server; its request log is what proves how many
downloads happened and with which Range headers.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from support.index_server import Fault, IndexServer
from support.universe import MAIN, PRIVATE, Universe
from support.wheels import sha256_file

from nbenv.errors import (
    DownloadError,
    HashMismatchError,
    NbenvError,
    OfflineFetchError,
    OfflineMissingError,
)
from nbenv.fetch import Artifact, Fetcher
from nbenv.net.auth import Credentials
from nbenv.net.http import HttpClient

BETA = "beta-1.0-py3-none-any.whl"  # ~300 KB: big enough to resume in the middle
ALPHA = "alpha-1.0-py3-none-any.whl"
PRIVATE_WHEEL = "private-1.0-py3-none-any.whl"


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []
        self.progress_calls: list[tuple[int, int | None]] = []
        self.cached_calls: list[tuple[str, int, int]] = []
        self._lock = threading.Lock()

    def stage(self, name: str) -> None:
        with self._lock:
            self.events.append(("stage", name))

    def progress(self, name: str, done: int, total: int | None) -> None:
        assert name == "downloading"
        with self._lock:
            self.progress_calls.append((done, total))

    def note(self, message: str) -> None:
        with self._lock:
            self.events.append(("note", message))

    def cached(self, name: str, hits: int, total: int) -> None:
        with self._lock:
            self.cached_calls.append((name, hits, total))


def artifact(
    server: IndexServer, universe: Universe, filename: str, *, sha256: str | None = None
) -> Artifact:
    """The lock's record of one universe file served by `server` (`sha256` to lie)."""
    path = universe.path(filename)
    digest = sha256 or sha256_file(path)
    return Artifact(filename, server.file_url(filename), digest, path.stat().st_size)


def file_requests(server: IndexServer, filename: str) -> list[tuple[str | None, int]]:
    return [(r.range, r.status) for r in server.requests(f"/files/{filename}", "GET")]


def test_fetch_verifies_and_stores_by_hash(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    wanted = artifact(index, universe, BETA)
    reporter = Recorder()
    fetcher = Fetcher(client, cache, reporter=reporter)

    paths = fetcher.fetch([wanted])

    path = paths[wanted.sha256]
    assert path == cache / "files" / wanted.sha256[:2] / wanted.sha256 / BETA
    assert path == fetcher.path_for(wanted)
    assert path.read_bytes() == universe.path(BETA).read_bytes()
    assert sorted(p.name for p in path.parent.iterdir()) == [".lock", BETA]  # no .part left
    assert reporter.events == [("stage", "downloading")]
    assert reporter.cached_calls == [("downloading", 0, 1)]
    assert reporter.progress_calls[-1] == (wanted.size, wanted.size)
    done = [d for d, _ in reporter.progress_calls]
    assert done == sorted(done)


def test_downloads_run_in_parallel(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    names = [f.filename for f in universe.entries(MAIN) if f.filename.endswith(".whl")][:8]
    wanted = [artifact(index, universe, name) for name in names]
    index.latency = 0.5

    paths = Fetcher(client, cache).fetch(wanted)

    assert len(names) == 8
    # seen by the server, so a busy machine cannot fake or hide it: one after another
    # would never have two requests in flight
    assert index.max_in_flight >= 4, index.max_in_flight
    for item in wanted:
        assert sha256_file(paths[item.sha256]) == item.sha256
    assert index.count("/files/") == 8


def test_big_files_download_on_a_few_threads_of_their_own(
    index: IndexServer,
    universe: Universe,
    client: HttpClient,
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import nbenv.fetch

    names = [f.filename for f in universe.entries(MAIN) if f.filename.endswith(".whl")][:8]
    wanted = [artifact(index, universe, name) for name in names]
    sizes = sorted(a.size or 0 for a in wanted)
    monkeypatch.setattr(nbenv.fetch, "_BIG", sizes[4])  # the 4 biggest count as big
    index.latency = 0.3

    paths = Fetcher(client, cache, big_workers=2).fetch(wanted)

    assert all(sha256_file(paths[a.sha256]) == a.sha256 for a in wanted)
    # in flight at once: the 4 small ones and at most 2 of the 4 big ones (8 on one pool)
    assert 4 <= index.max_in_flight <= 2 + 4, index.max_in_flight


def test_big_files_waiting_for_a_thread_go_biggest_first(
    index: IndexServer,
    universe: Universe,
    client: HttpClient,
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import nbenv.fetch

    names = [f.filename for f in universe.entries(MAIN) if f.filename.endswith(".whl")]
    wheels = sorted((artifact(index, universe, n) for n in names), key=lambda a: a.size or 0)
    first, *waiting = wheels[-4:]  # 4 big ones, smallest first
    assert len({a.size for a in waiting}) == 3
    monkeypatch.setattr(nbenv.fetch, "_BIG", first.size)
    index.inject(f"/files/{first.filename}", Fault("stall", seconds=0.5))  # holds the thread

    with Fetcher(client, cache, big_workers=1) as fetcher:
        fetcher.start(first)
        time.sleep(0.1)  # the only big thread is busy with it
        for queued in waiting:  # started smallest first, as a resolver may pin them
            fetcher.start(queued)
        paths = fetcher.fetch([first, *waiting])

    assert all(sha256_file(paths[a.sha256]) == a.sha256 for a in [first, *waiting])
    served = [r.path.rsplit("/", 1)[-1] for r in index.log if r.path.startswith("/files/")]
    assert served == [first.filename, *[a.filename for a in reversed(waiting)]]


def test_cached_files_are_not_downloaded_again(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    wanted = [artifact(index, universe, ALPHA), artifact(index, universe, BETA)]
    first = Fetcher(client, cache).fetch(wanted)
    index.clear_log()
    reporter = Recorder()

    again = Fetcher(client, cache, reporter=reporter).fetch([*wanted, wanted[0]])

    assert again == first
    assert list(again) == [w.sha256 for w in wanted]
    assert index.count() == 0
    assert reporter.events == []  # nothing to download: no stage shown
    assert reporter.cached_calls == [("downloading", 2, 2)]  # the same file twice: one item


def test_each_file_is_handed_over_as_soon_as_it_is_ready(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    cached, slow = artifact(index, universe, ALPHA), artifact(index, universe, BETA)
    Fetcher(client, cache).fetch([cached])
    index.latency = 0.5
    seen: list[tuple[str, Path, float]] = []
    started = time.monotonic()

    def ready(item: Artifact, path: Path) -> None:
        seen.append((item.filename, path, time.monotonic() - started))

    paths = Fetcher(client, cache).fetch([slow, cached], on_ready=ready)

    assert [(name, path) for name, path, _ in seen] == [
        (ALPHA, paths[cached.sha256]),  # cached: at once, before the download starts
        (BETA, paths[slow.sha256]),
    ]
    assert seen[0][2] < 0.25 <= seen[1][2]


def test_a_cached_file_of_the_wrong_size_is_fetched_again(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    wanted = artifact(index, universe, BETA)
    fetcher = Fetcher(client, cache)
    path = fetcher.fetch([wanted])[wanted.sha256]
    path.write_bytes(path.read_bytes()[:1000])  # truncated behind our back
    index.clear_log()

    fetcher.fetch([wanted])

    assert file_requests(index, BETA) == [(None, 200)]
    assert sha256_file(path) == wanted.sha256


def test_hash_mismatch_refuses_deletes_and_says_what_to_do(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    wrong = "0" * 64
    wanted = artifact(index, universe, ALPHA, sha256=wrong)
    fetcher = Fetcher(client, cache)

    with pytest.raises(HashMismatchError) as caught:
        fetcher.fetch([wanted])

    actual = sha256_file(universe.path(ALPHA))
    assert str(caught.value) == (
        f"{ALPHA} downloaded from {index.file_url(ALPHA)} does not match the lock:\n"
        f"  expected sha256 {wrong}\n"
        f"  got      sha256 {actual}\n"
        "The download was deleted. The index served different bytes than the lock records; "
        "re-lock with `nbenv lock --refresh` if the release was replaced, otherwise report "
        "it to the index."
    )
    assert (caught.value.filename, caught.value.expected, caught.value.actual) == (
        ALPHA,
        wrong,
        actual,
    )
    home = fetcher.path_for(wanted).parent
    assert [p.name for p in home.iterdir()] == [".lock"]  # neither the file nor a .part


def test_transient_errors_are_retried(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    wanted = artifact(index, universe, ALPHA)
    index.fail(f"/files/{ALPHA}", 503, 429)

    path = Fetcher(client, cache).fetch([wanted])[wanted.sha256]

    assert file_requests(index, ALPHA) == [(None, 503), (None, 429), (None, 200)]
    assert sha256_file(path) == wanted.sha256


def test_transient_errors_give_up_after_the_retries(
    index: IndexServer, universe: Universe, cache: Path
) -> None:
    wanted = artifact(index, universe, ALPHA)
    index.fail(f"/files/{ALPHA}", 503, 503, 503)

    with HttpClient(retries=2, backoff=0.01) as client, pytest.raises(DownloadError) as caught:
        Fetcher(client, cache).fetch([wanted])

    assert str(caught.value) == (
        f"Could not download {ALPHA} from {index.file_url(ALPHA)}: HTTP 503 after 3 tries"
    )


def test_missing_file_names_it(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    gone_name = "gone-1.0-py3-none-any.whl"
    gone = Artifact(gone_name, index.file_url(gone_name), "5" * 64, 1234)
    fine = artifact(index, universe, BETA)

    with pytest.raises(DownloadError) as caught:
        Fetcher(client, cache).fetch([fine, gone])

    assert str(caught.value) == (
        f"Could not download gone-1.0-py3-none-any.whl from {gone.url}: HTTP 404: the index "
        "no longer serves this file; if the release was removed, re-lock with "
        "`nbenv lock --refresh`"
    )
    assert caught.value.filename == "gone-1.0-py3-none-any.whl"


def test_a_killed_download_is_resumed_with_a_range_request(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    wanted = artifact(index, universe, BETA)
    fetcher = Fetcher(client, cache)
    final = fetcher.path_for(wanted)
    final.parent.mkdir(parents=True)
    data = universe.path(BETA).read_bytes()
    half = len(data) // 2
    Path(f"{final}.part").write_bytes(data[:half])
    reporter = Recorder()

    Fetcher(client, cache, reporter=reporter).fetch([wanted])

    assert file_requests(index, BETA) == [(f"bytes={half}-", 206)]
    assert final.read_bytes() == data
    assert not Path(f"{final}.part").exists()
    assert reporter.progress_calls[0] == (half, len(data))  # the kept bytes count as done


def test_a_connection_broken_mid_body_continues_from_the_bytes_that_arrived(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    """Bytes are gathered before they are written: those that arrived before the
    connection broke must still reach the file, so the retry asks only for the rest."""
    wanted = artifact(index, universe, BETA)
    data = universe.path(BETA).read_bytes()
    half = len(data) // 2  # what the fault sends before its TCP reset
    index.inject(f"/files/{BETA}", Fault("reset", seconds=0.5))
    reporter = Recorder()

    path = Fetcher(client, cache, reporter=reporter).fetch([wanted])[wanted.sha256]

    assert file_requests(index, BETA) == [(None, 200), (f"bytes={half}-", 206)]
    assert path.read_bytes() == data
    assert reporter.progress_calls[-1] == (len(data), len(data))


def test_a_server_without_ranges_restarts_the_download(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    wanted = artifact(index, universe, BETA)
    fetcher = Fetcher(client, cache)
    final = fetcher.path_for(wanted)
    final.parent.mkdir(parents=True)
    data = universe.path(BETA).read_bytes()
    Path(f"{final}.part").write_bytes(data[:1000])
    index.no_range = True

    fetcher.fetch([wanted])

    assert file_requests(index, BETA) == [("bytes=1000-", 200)]
    assert final.read_bytes() == data


def test_a_part_with_bad_bytes_is_downloaded_once_more_from_scratch(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    wanted = artifact(index, universe, BETA)
    fetcher = Fetcher(client, cache)
    final = fetcher.path_for(wanted)
    final.parent.mkdir(parents=True)
    Path(f"{final}.part").write_bytes(b"\0" * 5000)  # not what the index serves

    fetcher.fetch([wanted])

    assert file_requests(index, BETA) == [("bytes=5000-", 206), (None, 200)]
    assert sha256_file(final) == wanted.sha256


def test_a_complete_part_is_kept_without_a_request(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    wanted = artifact(index, universe, ALPHA)
    fetcher = Fetcher(client, cache)
    final = fetcher.path_for(wanted)
    final.parent.mkdir(parents=True)
    Path(f"{final}.part").write_bytes(universe.path(ALPHA).read_bytes())

    fetcher.fetch([wanted])

    assert index.count() == 0
    assert sha256_file(final) == wanted.sha256


class _BreakingHandler(BaseHTTPRequestHandler):
    """Sends half of the body of the first response, then hangs up."""

    protocol_version = "HTTP/1.1"
    data = b""
    ranges: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        requested = self.headers.get("Range")
        type(self).ranges.append(requested)
        if requested is None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.data)))
            self.end_headers()
            self.wfile.write(self.data[: len(self.data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        start = int(requested.removeprefix("bytes=").removesuffix("-"))
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{len(self.data) - 1}/{len(self.data)}")
        self.send_header("Content-Length", str(len(self.data) - start))
        self.end_headers()
        self.wfile.write(self.data[start:])

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_connection_lost_mid_body_continues_where_it_stopped(
    universe: Universe, client: HttpClient, cache: Path
) -> None:
    data = universe.path(BETA).read_bytes()

    class Handler(_BreakingHandler):
        ranges: ClassVar[list[str | None]] = []

    Handler.data = data
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{BETA}"
        wanted = Artifact(BETA, url, sha256_file(universe.path(BETA)), len(data))
        path = Fetcher(client, cache).fetch([wanted])[wanted.sha256]
    finally:
        server.shutdown()
        server.server_close()
    assert Handler.ranges == [None, f"bytes={len(data) // 2}-"]
    assert path.read_bytes() == data


def test_threads_fetching_the_same_file_download_it_once(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    wanted = artifact(index, universe, BETA)
    index.latency = 0.3
    barrier = threading.Barrier(4)
    results: list[Path] = []

    def run() -> None:
        fetcher = Fetcher(client, cache)
        barrier.wait()
        results.append(fetcher.fetch([wanted])[wanted.sha256])

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert index.count(f"/files/{BETA}") == 1
    assert len(set(results)) == 1 and len(results) == 4
    assert sha256_file(results[0]) == wanted.sha256


def test_a_started_download_is_taken_over_by_fetch_not_repeated(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    slow, other = artifact(index, universe, BETA), artifact(index, universe, ALPHA)
    index.latency = 0.4
    reporter = Recorder()
    seen: list[str] = []
    with Fetcher(client, cache, reporter=reporter) as fetcher:
        started = fetcher.start(slow)
        assert started is not None and not started.done()  # under way in the background
        assert fetcher.start(slow) is started  # one download per file

        paths = fetcher.fetch([slow, other], on_ready=lambda a, p: seen.append(a.filename))

    assert started.result() == paths[slow.sha256]
    assert file_requests(index, BETA) == [(None, 200)]  # the started one, taken over
    assert sha256_file(paths[slow.sha256]) == slow.sha256
    assert sorted(seen) == [ALPHA, BETA]
    assert reporter.cached_calls == [("downloading", 0, 2)]  # a download, not a cache hit
    assert reporter.progress_calls[-1] == (slow.size + other.size, slow.size + other.size)


def test_a_download_started_and_done_before_fetch_is_still_no_cache_hit(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    wanted = artifact(index, universe, ALPHA)
    reporter = Recorder()
    with Fetcher(client, cache, reporter=reporter) as fetcher:
        started = fetcher.start(wanted)
        assert started is not None
        started.result(timeout=30)
        assert fetcher.fetch([wanted]) == {wanted.sha256: started.result()}
        assert reporter.cached_calls == [("downloading", 0, 1)]
        assert fetcher.start(wanted) is None  # in the cache now: nothing to start
        fetcher.fetch([wanted])
    assert reporter.cached_calls[-1] == ("downloading", 1, 1)  # a later fetch: a hit
    assert index.count(f"/files/{ALPHA}") == 1


def test_a_failed_early_download_is_tried_again_by_fetch(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    wanted = artifact(index, universe, ALPHA)
    index.fail(f"/files/{ALPHA}", 404)
    with Fetcher(client, cache) as fetcher:
        started = fetcher.start(wanted)
        assert started is not None
        with pytest.raises(DownloadError):
            started.result(timeout=30)  # kept for fetch, never raised on its own

        path = fetcher.fetch([wanted])[wanted.sha256]

    assert file_requests(index, ALPHA) == [(None, 404), (None, 200)]
    assert sha256_file(path) == wanted.sha256


def test_a_discarded_download_stops_and_a_later_fetch_still_gets_it(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    kept, dropped = artifact(index, universe, ALPHA), artifact(index, universe, BETA)
    index.inject(f"/files/{BETA}", Fault("stall", seconds=0.5))
    with Fetcher(client, cache) as fetcher:
        first = fetcher.start(dropped)
        fetcher.start(kept)
        fetcher.discard(keep={kept.sha256})
        assert first is not None
        # stopped before it began or at its first chunk (a `.part` stays, resumable)
        assert first.exception(timeout=30) is not None
        assert not fetcher.path_for(dropped).exists()

        paths = fetcher.fetch([kept, dropped])

    assert sha256_file(paths[dropped.sha256]) == dropped.sha256
    assert index.count(f"/files/{ALPHA}") == 1


def test_a_big_download_discarded_while_it_waits_for_a_thread_never_starts(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    kept, dropped = artifact(index, universe, BETA), artifact(index, universe, ALPHA)
    index.inject(f"/files/{BETA}", Fault("stall", seconds=0.3))  # holds the only big thread
    with Fetcher(client, cache, big_workers=1) as fetcher, _all_big():
        fetcher.start(kept)
        waiting = fetcher.start(dropped)
        fetcher.discard(keep={kept.sha256})
        paths = fetcher.fetch([kept])
        assert waiting is not None
        futures.wait([waiting], timeout=30)

    assert waiting.cancelled()
    assert sha256_file(paths[kept.sha256]) == kept.sha256
    assert index.count(f"/files/{ALPHA}") == 0
    assert not fetcher.path_for(dropped).parent.exists()  # no lock, no `.part`, no dir


@contextlib.contextmanager
def _all_big() -> Iterator[None]:
    import nbenv.fetch

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nbenv.fetch, "_BIG", 1)
        yield


def test_closing_the_fetcher_stops_the_downloads_under_way(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    wanted = artifact(index, universe, BETA)
    index.inject(f"/files/{BETA}", Fault("stall", seconds=0.5))
    fetcher = Fetcher(client, cache)
    started = fetcher.start(wanted)
    assert started is not None
    fetcher.close()  # returns once the download has stopped

    assert started.done()
    assert not fetcher.path_for(wanted).exists()
    assert fetcher.start(wanted) is None  # closed: nothing new starts


_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from nbenv.fetch import Artifact, Fetcher
    from nbenv.net.http import HttpClient

    filename, url, sha256, size, root, ready, go = sys.argv[1:]
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.005)
    with HttpClient() as client:
        paths = Fetcher(client, Path(root)).fetch([Artifact(filename, url, sha256, int(size))])
    print(paths[sha256])
    """
)


def test_processes_fetching_the_same_file_download_it_once(
    index: IndexServer, universe: Universe, cache: Path, tmp_path: Path
) -> None:
    wanted = artifact(index, universe, BETA)
    index.latency = 0.5  # the first download is still running when the second asks
    go = tmp_path / "go"
    readies = [tmp_path / f"ready{i}" for i in range(2)]
    args = [wanted.filename, wanted.url, wanted.sha256, str(wanted.size), str(cache)]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, *args, str(ready), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ready in readies
    ]
    deadline = time.monotonic() + 60
    while not all(ready.exists() for ready in readies) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    outputs = [child.communicate(timeout=60) for child in children]

    for child, (_, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
    assert {out.strip() for out, _ in outputs} == {str(cache_path(cache, wanted))}
    assert index.count(f"/files/{BETA}") == 1
    assert sha256_file(cache_path(cache, wanted)) == wanted.sha256


def cache_path(cache: Path, wanted: Artifact) -> Path:
    return cache / "files" / wanted.sha256[:2] / wanted.sha256 / wanted.filename


def test_offline_lists_every_missing_file(
    index: IndexServer, universe: Universe, client: HttpClient, cache: Path
) -> None:
    have = artifact(index, universe, ALPHA)
    Fetcher(client, cache).fetch([have])
    index.clear_log()
    missing = [
        artifact(index, universe, BETA),
        artifact(index, universe, "gamma-1.0-py3-none-any.whl"),
    ]

    offline = Fetcher(client, cache, offline=True)
    assert offline.fetch([have]) == {have.sha256: offline.path_for(have)}
    with pytest.raises(OfflineMissingError) as caught:
        offline.fetch([have, *missing])

    assert isinstance(caught.value, OfflineFetchError)
    assert str(caught.value) == (
        "Cannot build offline: the download cache does not hold\n"
        f"  {BETA} ({missing[0].url})\n"
        f"  gamma-1.0-py3-none-any.whl ({missing[1].url})\n"
        "Run once without --offline to download them."
    )
    assert index.count() == 0


def test_file_urls_are_fetched_and_verified(
    universe: Universe, client: HttpClient, cache: Path
) -> None:
    source = universe.path(ALPHA)
    wanted = Artifact(ALPHA, source.as_uri(), sha256_file(source), source.stat().st_size)

    path = Fetcher(client, cache).fetch([wanted])[wanted.sha256]

    assert path.read_bytes() == source.read_bytes()


def test_credentials_are_used_but_never_shown(
    auth_index: IndexServer, universe: Universe, cache: Path
) -> None:
    user, password = "alice", "s3cret"
    with_userinfo = auth_index.file_url(PRIVATE_WHEEL).replace("://", f"://{user}:{password}@")
    clean = auth_index.file_url(PRIVATE_WHEEL)
    sha = sha256_file(universe.path(PRIVATE_WHEEL))
    assert universe.entry(PRIVATE_WHEEL).index == PRIVATE

    with HttpClient(backoff=0.01) as client:
        # credentials in the URL itself
        path = Fetcher(client, cache).fetch([Artifact(PRIVATE_WHEEL, with_userinfo, sha)])[sha]
        assert sha256_file(path) == sha

        failures: list[NbenvError] = []
        for bad in (
            Artifact(PRIVATE_WHEEL, with_userinfo, "1" * 64),
            Artifact("nope.whl", with_userinfo.replace(PRIVATE_WHEEL, "nope.whl"), "2" * 64),
        ):
            with pytest.raises(NbenvError) as caught:
                Fetcher(client, cache).fetch([bad])
            failures.append(caught.value)
        with pytest.raises(OfflineMissingError) as offline:
            Fetcher(client, cache, offline=True).fetch([Artifact("x.whl", with_userinfo, "3" * 64)])
        failures.append(offline.value)
        # no credentials at all: a clear refusal
        with pytest.raises(DownloadError) as refused:
            Fetcher(client, cache).fetch([Artifact(PRIVATE_WHEEL, clean, "4" * 64)])
        failures.append(refused.value)

    assert isinstance(failures[0], HashMismatchError)
    assert f"from {clean} does not match" in str(failures[0])
    assert "HTTP 404" in str(failures[1])
    assert "HTTP 401: the index refused access" in str(refused.value)
    for failure in failures:
        text = str(failure) + repr(vars(failure))
        assert password not in text and f"{user}:" not in text, text

    # credentials from the index URL, as the resolver's client is configured
    with HttpClient(credentials=Credentials([auth_index.url_with_auth()])) as client:
        other = cache.parent / "other-cache"
        assert (
            sha256_file(Fetcher(client, other).fetch([Artifact(PRIVATE_WHEEL, clean, sha)])[sha])
            == sha
        )
    assert all(r.authorization for r in auth_index.requests("/files/", "GET") if r.status == 200)


def test_unsafe_names_and_hashes_are_refused() -> None:
    sha = "a" * 64
    for name in ("../evil.whl", "sub/dir.whl", "..\\evil.whl", "", ".."):
        with pytest.raises(NbenvError):
            Artifact(name, "http://example.invalid/x", sha)
    with pytest.raises(NbenvError):
        Artifact("ok.whl", "http://example.invalid/x", "not-a-hash")
    assert Artifact("ok.whl", "http://example.invalid/x", "A" * 64).sha256 == "a" * 64
