"""The PyPI resolver against the local index: semantics, metadata paths, errors."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.utils import NormalizedName
from support.index_server import Index, IndexServer
from support.universe import AUTH, Universe
from support.wheels import build_wheel, sha256_file

from nbenv.errors import (
    ConflictError,
    IndexAccessError,
    NoCompatibleDistributionError,
    NoMatchingVersionError,
    OfflineMissingError,
    ProjectNotFoundError,
)
from nbenv.resolve.cache import CachePolicy
from nbenv.resolve.model import DistFile, Resolution
from nbenv.resolve.pypi import PypiResolver, resolve
from nbenv.settings import IndexSettings
from nbenv.spec import parse_request


def run(
    index: IndexServer,
    *args: str,
    policy: CachePolicy = CachePolicy.DEFAULT,
    extra: tuple[str, ...] = (),
) -> list[Resolution]:
    request = parse_request([*args, "--index-url", index.url])
    return resolve(request, policy=policy, settings=IndexSettings(extra_index_urls=extra))


def chosen(resolution: Resolution) -> dict[str, str]:
    return {p.name: str(p.version) for p in resolution.packages}


def test_transitive_resolution_with_pep658_and_range_reads(index: IndexServer) -> None:
    (result,) = run(index, "alpha", "beta")
    assert chosen(result) == {"alpha": "2.0", "beta": "1.0", "gamma": "1.1"}
    # alpha has PEP 658 metadata: no byte of its wheel is read
    assert index.count("/files/alpha-2.0-py3-none-any.whl.metadata") == 1
    assert not [r for r in index.requests("/files/alpha-2.0-py3") if r.range]
    # beta has none: its METADATA comes from range requests, never the whole 300 KB wheel
    beta = index.requests("/files/beta-1.0-py3-none-any.whl")
    ranged = [r for r in beta if r.path.endswith(".whl")]
    assert ranged and all(r.range for r in ranged)
    # the PEP 658 probe (the index does not say) went out alongside the first range read
    assert [r.status for r in beta if r.path.endswith(".metadata")] == [404]


def test_a_tail_read_that_lost_the_race_to_the_metadata_file_is_not_parsed(
    tmp_path: Path,
) -> None:
    """The index does not say whether `.metadata` exists: both ways go out at once. The
    one that answers second must not go on reading the wheel's zip directory."""
    import threading

    from nbenv.net.http import HttpResponse
    from nbenv.resolve.cache import ResolveCache
    from nbenv.resolve.metadata import MetadataFetcher

    wheel = build_wheel(tmp_path / "wheels", "alpha", "1.0", pad_bytes=200_000)
    data = wheel.read_bytes()
    url = "https://index.example/files/" + wheel.name
    metadata = b"Metadata-Version: 2.1\nName: alpha\nVersion: 1.0\n"
    tail_asked, tail_go, tail_done = threading.Event(), threading.Event(), threading.Event()

    class Client:  # the .metadata answers at once; the tail only once the test says so
        def get(self, asked: str, headers: dict[str, str] | None = None) -> HttpResponse:
            if asked == url + ".metadata":
                assert tail_asked.wait(10)  # both ways are under way
                return HttpResponse(asked, 200, metadata)
            assert asked == url and headers and headers["Range"].startswith("bytes=-")
            tail_asked.set()
            try:
                assert tail_go.wait(10)
                size = int(headers["Range"][len("bytes=-") :])
                first = len(data) - size
                span = f"bytes {first}-{len(data) - 1}/{len(data)}"
                return HttpResponse(asked, 206, data[first:], {"content-range": span})
            finally:
                tail_done.set()

    fetcher = MetadataFetcher(Client(), ResolveCache(tmp_path / "cache"))  # type: ignore[arg-type]
    parsed: list[str] = []
    from_wheel = fetcher._from_wheel
    fetcher._from_wheel = lambda f, r: parsed.append(f.filename) or from_wheel(f, r)  # type: ignore[method-assign]
    file = DistFile(wheel.name, url, "https://index.example/simple/", size=len(data),
                    hashes=(("sha256", sha256_file(wheel)),))  # fmt: skip
    try:
        assert fetcher.get(file).name == "alpha"
        tail_go.set()
        assert tail_done.wait(10)
        fetcher._side.shutdown(wait=True)
    finally:
        tail_go.set()
        fetcher.close()
    assert parsed == []  # the tail came after the answer: its zip was not read
    assert fetcher.stats["pep658"] == 1 and fetcher.stats["range"] == 0


def test_each_pin_is_told_as_the_resolver_makes_it(index: IndexServer) -> None:
    pins: list[DistFile] = []
    request = parse_request(["alpha", "beta", "--index-url", index.url])

    (result,) = resolve(request, settings=IndexSettings(), on_pin=pins.append)

    assert chosen(result) == {"alpha": "2.0", "beta": "1.0", "gamma": "1.1"}
    # what an env build downloads ahead: exactly the files the lock will name, once each
    assert sorted(f.filename for f in pins) == sorted(p.file.filename for p in result.packages)
    assert all(f.sha256 for f in pins)


def test_releases_of_a_page_are_worked_out_once_when_asked_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The speculative walk and the resolver ask for the same project together; the page's
    thousands of entries were parsed twice (pandas, fonttools, ... on set B)."""
    import threading
    import time
    from types import SimpleNamespace

    import nbenv.resolve.prefetch as prefetch
    from nbenv.resolve.index import parse_project_page
    from nbenv.resolve.target import Target

    body = b'{"meta": {"api-version": "1.0"}, "name": "one", "files": []}'
    index = "https://example.invalid/simple/"
    json_type = "application/vnd.pypi.simple.v1+json"
    page = parse_project_page("one", body, json_type, f"{index}one/", index)
    calls = []
    real = prefetch.releases_for_target

    def slow(*args: object) -> object:
        calls.append(args)
        time.sleep(0.2)  # long enough for the second asker to arrive meanwhile
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(prefetch, "releases_for_target", slow)
    fetcher = prefetch.Prefetcher(lambda index, name: page, [index],
                                  SimpleNamespace(cache=None))  # type: ignore[arg-type]  # fmt: skip
    results: list[object] = []
    try:
        askers = [threading.Thread(target=lambda: results.append(
            fetcher.releases(page.name, Target()))) for _ in range(3)]  # fmt: skip
        for asker in askers:
            asker.start()
        for asker in askers:
            asker.join()
    finally:
        fetcher.close()

    assert len(calls) == 1
    assert len(results) == 3 and results[0] is results[1] is results[2]


def test_yanked_release_is_skipped_unless_pinned(index: IndexServer) -> None:
    (result,) = run(index, "gamma")
    assert chosen(result) == {"gamma": "1.1"}
    (pinned,) = run(index, "gamma==2.0")
    assert chosen(pinned) == {"gamma": "2.0"}


def test_only_yanked_releases_left_says_so(index: IndexServer) -> None:
    with pytest.raises(NoMatchingVersionError) as info:
        run(index, "gamma>=2")
    assert "yanked (broken build)" in str(info.value)
    assert "pin one exactly with ==" in str(info.value)


def test_extras_and_markers_follow_the_target(index: IndexServer) -> None:
    (result,) = run(index, "withextras[fast,docs]", "--python", "3.11")
    assert chosen(result) == {
        "alpha": "2.0",
        "beta": "1.0",
        "gamma": "1.1",
        "withextras": "1.0",
    }
    (old,) = run(index, "withextras", "--python", "3.9", "--platform", "win_amd64")
    assert chosen(old) == {"alpha": "2.0", "oldpy": "1.0", "winonly": "1.0", "withextras": "1.0"}


def test_requires_python_picks_an_older_release(index: IndexServer) -> None:
    (new,) = run(index, "newpy", "--python", "3.12")
    (old,) = run(index, "newpy", "--python", "3.11")
    assert chosen(new) == {"newpy": "2.0"}
    assert chosen(old) == {"newpy": "1.0"}


def test_prereleases_only_when_asked_or_nothing_else(index: IndexServer) -> None:
    assert chosen(run(index, "prerel")[0]) == {"prerel": "1.0"}
    assert chosen(run(index, "prerel", "--pre")[0]) == {"prerel": "2.0b1"}
    assert chosen(run(index, "prerel>=2.0b1")[0]) == {"prerel": "2.0b1"}
    assert chosen(run(index, "onlypre")[0]) == {"onlypre": "1.0a1"}


def test_best_wheel_by_tag_priority_for_each_target(index: IndexServer) -> None:
    results = run(
        index,
        "native",
        "--python", "3.9", "--python", "3.12",
        "--platform", "manylinux_2_28_x86_64", "--platform", "macosx_11_0_arm64",
    )  # fmt: skip
    files = {(r.target.python, r.target.platform): r.packages[0].file.filename for r in results}
    assert files == {
        ("3.9", "manylinux_2_28_x86_64"):
            "native-1.0-cp39-cp39-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        ("3.9", "macosx_11_0_arm64"): "native-0.9-py3-none-any.whl",
        ("3.12", "manylinux_2_28_x86_64"): "native-0.9-py3-none-any.whl",
        ("3.12", "macosx_11_0_arm64"): "native-1.0-cp312-cp312-macosx_11_0_arm64.whl",
    }  # fmt: skip


def test_wheels_are_chosen_by_their_tags_on_a_page_of_many_platforms() -> None:
    # The name-only tag test that skips most of a big page (each distinct tag string ranked
    # once, files that cannot beat the one kept never made) must agree with packaging's full
    # parse of every name (compressed tag sets, "any", other OSes and machines), whatever
    # the page's order, and a yanked file loses to any other.
    import hashlib
    import json

    from packaging.utils import parse_wheel_filename

    from nbenv.resolve.candidates import releases_for_target
    from nbenv.resolve.index import PageSource, ProjectPage
    from nbenv.resolve.target import Target

    platforms = [
        "win_amd64", "macosx_11_0_arm64", "manylinux_2_17_x86_64.manylinux2014_x86_64",
        "manylinux_2_28_aarch64", "musllinux_1_2_x86_64", "linux_x86_64", "any",
    ]  # fmt: skip
    names = [f"demo-{v}.tar.gz" for v in ("0.1", "0.9", "1.0")] + [
        f"demo-{v}-{py}-{abi}-{plat}.whl"
        for v in ("0.9", "1.0", "1.1")
        for py, abi in (("cp311", "cp311"), ("cp312", "cp312"), ("py3", "none"))
        for plat in platforms
        if (abi == "none") == (plat == "any") and not (v == "1.1" and "x86_64" in plat)
    ]
    yanked = {n for n in names if n.startswith("demo-1.0-") and "-cp3" in n}  # 1.0's best
    for order in (names, names[::-1]):
        files = [
            {
                "filename": n,
                "url": f"https://x/{n}",
                "hashes": {"sha256": "0" * 64},
                "yanked": n in yanked,
            }
            for n in order
        ]
        body = json.dumps({"meta": {"api-version": "1.1"}, "name": "demo", "files": files})
        source = PageSource("https://x/simple/", "https://x/simple/demo/",
                            "application/vnd.pypi.simple.v1+json", body.encode(),
                            hashlib.sha256(body.encode()).hexdigest())  # fmt: skip
        for target in (
            Target("3.11", "manylinux_2_28_x86_64"),
            Target("3.12", "macosx_14_0_arm64"),
        ):
            got = {str(r.version): r.file.filename for r in releases_for_target(
                ProjectPage(NormalizedName("demo"), (source,)), target).usable}  # fmt: skip
            expected: dict[str, tuple[tuple[bool, int], str]] = {}
            for name in order:
                if not name.endswith(".whl"):
                    version, rank = name[len("demo-") : -len(".tar.gz")], 10**6
                else:
                    _, parsed, _, tags = parse_wheel_filename(name)
                    ranks = [target.tag_priority[t] for t in tags if t in target.tag_priority]
                    if not ranks:
                        continue
                    version, rank = str(parsed), min(ranks)
                key = (name in yanked, rank)
                if version not in expected or key < expected[version][0]:
                    expected[version] = (key, name)
            assert got == {v: name for v, (_, name) in expected.items()}, target
            assert set(got) == {"0.1", "0.9", "1.0", "1.1"}
            assert "-cp3" not in got["1.0"]  # its best wheels are yanked: another one wins


def test_no_wheel_for_the_platform_lists_what_exists(index: IndexServer) -> None:
    with pytest.raises(NoCompatibleDistributionError) as info:
        run(index, "nativeonly", "--python", "3.11", "--platform", "manylinux_2_28_x86_64")
    message = str(info.value)
    assert message.startswith(
        "No distribution of 'nativeonly' matching 'nativeonly' is usable on "
        "Python 3.11 on manylinux_2_28_x86_64.\nFiles that exist:\n"
    )
    assert "nativeonly-1.0-cp312-cp312-macosx_11_0_arm64.whl" in message
    assert "nativeonly-1.0-cp313-cp313-win_amd64.whl" in message


def test_conflict_names_both_sides_and_their_chains(index: IndexServer) -> None:
    with pytest.raises(ConflictError) as info:
        run(index, "top")
    error = info.value
    assert error.project == "shared"
    assert str(error) == (
        "Cannot find a version of 'shared' that satisfies every requirement:\n"
        "  - shared<2 (required by top 1.0 -> left 1.0)\n"
        "  - shared>=2 (required by top 1.0 -> middle 1.0 -> right 1.0)\n"
        "Loosen one of these requirements, or pin versions that agree."
    )


def test_direct_conflict_between_user_requirements(index: IndexServer) -> None:
    with pytest.raises(ConflictError) as info:
        run(index, "left", "shared>=2")
    message = str(info.value)
    assert "shared>=2 (requested by you)" in message
    assert "shared<2 (required by left 1.0)" in message


def test_unknown_project_suggests_close_names(index: IndexServer) -> None:
    with pytest.raises(ProjectNotFoundError) as info:
        run(index, "alpah")
    assert str(info.value) == (
        f"No project named 'alpah' was found on {index.url}. Did you mean: alpha?"
    )


def test_no_matching_version_lists_available(index: IndexServer) -> None:
    with pytest.raises(NoMatchingVersionError) as info:
        run(index, "alpha>=5")
    assert str(info.value) == "No version of 'alpha' matches 'alpha>=5' (available: 2.0, 1.0)."


def test_sdist_only_release_is_built_once(index: IndexServer, isolated_env: object) -> None:
    (first,) = run(index, "sdistonly")
    assert chosen(first) == {"alpha": "2.0", "sdistonly": "0.5"}
    assert first.packages[1].file.filename == "sdistonly-0.5.tar.gz"
    index.clear_log()
    (again,) = run(index, "sdistonly", policy=CachePolicy.REFRESH)
    assert chosen(again) == chosen(first)
    assert index.count("/files/sdistonly") == 0  # metadata came from the cache


def test_html_only_index(index: IndexServer) -> None:
    index.formats = {"html"}
    (result,) = run(index, "alpha", "beta")
    assert chosen(result) == {"alpha": "2.0", "beta": "1.0", "gamma": "1.1"}


def test_extra_index_url_adds_projects_and_versions(
    index: IndexServer, extra_index: IndexServer
) -> None:
    (result,) = run(index, "alpha", "extraonly", extra=(extra_index.url,))
    assert chosen(result) == {"alpha": "3.0", "extraonly": "1.0"}
    files = {p.name: p.file for p in result.packages}
    assert files["alpha"].index == extra_index.url


def test_basic_auth_from_url_never_leaks(auth_index: IndexServer) -> None:
    user, password = AUTH
    url = auth_index.url.replace("://", f"://{user}:{password}@")
    (result,) = resolve(parse_request(["private", "--index-url", url]), settings=IndexSettings())
    assert chosen(result) == {"private": "1.0"}
    assert password not in repr(result)


def test_basic_auth_from_netrc(auth_index: IndexServer, isolated_env: object) -> None:
    user, password = AUTH
    netrc = Path.home() / ".netrc"
    netrc.write_text(f"machine 127.0.0.1 login {user} password {password}\n")
    netrc.chmod(0o600)
    (result,) = run(auth_index, "private")
    assert chosen(result) == {"private": "1.0"}


def test_missing_credentials_say_what_to_do(auth_index: IndexServer) -> None:
    with pytest.raises(IndexAccessError) as info:
        run(auth_index, "private")
    assert "refused access" in str(info.value)
    assert "~/.netrc" in str(info.value)


def test_transient_errors_are_retried(index: IndexServer) -> None:
    index.fail("/simple/alpha/", 503, 503)
    (result,) = run(index, "alpha")
    assert chosen(result) == {"alpha": "2.0"}


def test_offline_uses_the_cache_or_lists_what_is_missing(index: IndexServer) -> None:
    run(index, "alpha")
    index.clear_log()
    (result,) = run(index, "alpha", policy=CachePolicy.OFFLINE)
    assert chosen(result) == {"alpha": "2.0"}
    assert index.count() == 0
    with pytest.raises(OfflineMissingError) as info:
        run(index, "beta", policy=CachePolicy.OFFLINE)
    assert f"index page {index.url}beta/" in str(info.value)
    assert index.count() == 0


def test_warm_cache_makes_no_request_and_refresh_refetches_pages(index: IndexServer) -> None:
    run(index, "alpha", "beta")
    index.clear_log()
    run(index, "alpha", "beta")
    assert index.count() == 0
    run(index, "alpha", "beta", policy=CachePolicy.REFRESH)
    assert index.count("/simple/") == 3
    assert index.count("/files/") == 0  # metadata is immutable: never refetched


def test_metadata_is_fetched_in_parallel(index: IndexServer) -> None:
    index.latency = 0.2
    request = parse_request(["alpha", "beta", "prerel", "newpy", "--index-url", index.url])
    with PypiResolver(request, settings=IndexSettings()) as session:
        import time

        start = time.perf_counter()
        session.resolve()
        elapsed = time.perf_counter() - start
    sequential = index.count() * 0.2
    assert elapsed < sequential / 2, (elapsed, sequential)


def test_relative_file_urls_are_joined_to_the_page(index: IndexServer) -> None:
    index.relative_urls = True
    (result,) = run(index, "beta")
    assert chosen(result) == {"beta": "1.0", "gamma": "1.1"}
    assert result.packages[0].file.url == index.file_url("beta-1.0-py3-none-any.whl")


def test_server_without_ranges_falls_back_to_the_whole_wheel(index: IndexServer) -> None:
    index.no_range = True
    (result,) = run(index, "beta")
    assert chosen(result) == {"beta": "1.0", "gamma": "1.1"}
    wheel = [r for r in index.requests("/files/beta-1.0-py3-none-any.whl") if r.status == 200]
    assert [r.path for r in wheel] == ["/files/beta-1.0-py3-none-any.whl"]


def test_persistent_server_error_names_the_url(index: IndexServer) -> None:
    index.fail("/simple/alpha/", 500, 500, 500, 500, 500)
    with pytest.raises(IndexAccessError) as info:
        run(index, "alpha")
    assert str(info.value) == f"Could not read {index.url}alpha/: HTTP 500 after 4 tries"


def test_bytes_that_do_not_match_the_index_hash_are_refused(
    make_index: Callable[..., IndexServer], tmp_path: Path
) -> None:
    wheel = build_wheel(tmp_path, "tampered", "1.0")
    listing = Index()
    listing.add(wheel)  # the index records this file's sha256...
    build_wheel(tmp_path, "tampered", "1.0", requires_dist=["evil"])  # ...then it changes
    server = make_index(listing, no_range=True)
    with pytest.raises(IndexAccessError) as info:
        run(server, "tampered")
    assert str(info.value).startswith(
        f"Could not read {server.file_url('tampered-1.0-py3-none-any.whl')}: sha256 mismatch: "
        "the index says "
    )


def test_requires_python_known_only_from_metadata(
    make_index: Callable[..., IndexServer], tmp_path: Path
) -> None:
    listing = Index()
    listing.add(build_wheel(tmp_path, "picky", "2.0", requires_python=">=3.12"), requires_python="")
    listing.add(build_wheel(tmp_path, "picky", "1.0"), requires_python="")
    server = make_index(listing)
    assert chosen(run(server, "picky", "--python", "3.11")[0]) == {"picky": "1.0"}
    assert chosen(run(server, "picky", "--python", "3.12")[0]) == {"picky": "2.0"}
    with pytest.raises(ConflictError) as info:
        run(server, "picky>=2", "--python", "3.11")
    assert "Requires-Python >=3.12 (required by picky 2.0)" in str(info.value)
    assert "The target is Python 3.11" in str(info.value)


def test_pip_settings_from_environment_and_config(
    index: IndexServer, extra_index: IndexServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", index.url)
    request = parse_request(["alpha", "extraonly"])
    config = tmp_path / "pip.conf"
    config.write_text(f"[global]\nextra-index-url = {extra_index.url}\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    (result,) = resolve(request)
    assert chosen(result) == {"alpha": "3.0", "extraonly": "1.0"}
    assert index.count("/simple/alpha/") == 1


def test_file_index_and_find_links(
    universe: Universe, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # pip allows file:// indexes (this machine's pip config has some) and find-links folders
    simple = tmp_path / "simple"
    for project in ("alpha", "beta"):
        (simple / project).mkdir(parents=True)
        links = "".join(
            f'<a href="{f.path.as_uri()}">{f.filename}</a>\n'
            for f in universe.entries()
            if f.filename.startswith(project + "-")
        )
        (simple / project / "index.html").write_text(f"<html><body>{links}</body></html>")
    monkeypatch.setenv("PIP_INDEX_URL", simple.as_uri())
    monkeypatch.setenv("PIP_FIND_LINKS", str(universe.folder()))
    (result,) = resolve(parse_request(["alpha", "beta"]))
    # a find-links folder knows nothing of yanking (as with pip): gamma 2.0 is a candidate
    assert chosen(result) == {"alpha": "2.0", "beta": "1.0", "gamma": "2.0"}
    assert next(p for p in result.packages if p.name == "alpha").file.index == simple.as_uri()
    gamma = next(p for p in result.packages if p.name == "gamma")
    assert gamma.file.url.startswith("file://")
    assert gamma.file.sha256 == sha256_file(universe.path(gamma.file.filename))


def test_concurrent_processes_share_one_cache(index: IndexServer, tmp_path: Path) -> None:
    argv = ["lock", "withextras[fast,docs]", "sdistonly", "--index-url", index.url]
    code = f"import sys; from nbenv.cli import main; sys.exit(main({argv!r}))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert outputs[0] == outputs[1] == outputs[2]
    assert "sdistonly" in outputs[0]
