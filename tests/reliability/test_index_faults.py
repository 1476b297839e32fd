"""Index faults: every misbehaviour of a package index either is absorbed (retried, and
the result is exactly what a healthy index gives) or stops nbenv with a message naming the
URL and what went wrong; nothing wrong enters the cache or the store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from checks import cache_problems, nbenv, store_problems
from ledger import FaultLog
from support import IsolatedEnv
from support.index_server import Fault, IndexServer

from nbenv.fetch import Artifact, Fetcher
from nbenv.net.http import HttpClient

WHEEL = "alpha-2.0-py3-none-any.whl"
BETA = "beta-1.0-py3-none-any.whl"  # no PEP 658 metadata: read with ranges from the wheel


def _lock_ok(index: IndexServer, *reqs: str) -> str:
    out = nbenv("lock", "--index-url", index.url, *reqs)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _checks(faults: FaultLog, isolated_env: IsolatedEnv) -> None:
    problems = store_problems(isolated_env.nbenv_home)
    problems += cache_problems(isolated_env.nbenv_home / "cache")
    assert faults.lost(problems) == []


# -- transient faults: retried, and the answer is the healthy one --------------------------

TRANSIENT = [
    ("HTTP 500 then success", "/simple/alpha/", None, 500),
    ("HTTP 503 twice then success", "/simple/alpha/", None, 503),
    ("connection reset mid-body (index page)", "/simple/alpha/", Fault("reset"), None),
    ("connection reset mid-body (metadata range read)", f"/files/{BETA}", Fault("reset"), None),
    ("wrong Content-Length: longer than the body", "/simple/alpha/", Fault("long-length"), None),
]


@pytest.mark.parametrize(
    ("name", "prefix", "fault", "status"), TRANSIENT, ids=[t[0] for t in TRANSIENT]
)
def test_transient_index_faults_are_retried(
    name: str,
    prefix: str,
    fault: Fault | None,
    status: int | None,
    index: IndexServer,
    faults: FaultLog,
    isolated_env: IsolatedEnv,
) -> None:
    healthy = _lock_ok(index, "alpha", "beta")
    faults.inject("index", name)
    # a fresh home: nothing cached, so the faulty request really happens
    home = isolated_env.nbenv_home
    for sub in ("cache",):
        import shutil

        shutil.rmtree(home / sub, ignore_errors=True)
    index.clear_log()
    if fault is not None:
        index.inject(prefix, fault)
    else:
        index.fail(prefix, *([status] * (2 if status == 503 else 1)))
    out = nbenv("lock", "--index-url", index.url, "alpha", "beta")
    assert out.returncode == 0, out.stderr
    assert out.stdout == healthy
    assert len(index.requests(prefix)) >= 2  # the fault happened and was retried
    _checks(faults, isolated_env)


def test_downloads_survive_resets_and_lying_lengths(
    index: IndexServer, faults: FaultLog, isolated_env: IsolatedEnv, tmp_path: Path
) -> None:
    lock = tmp_path / "pylock.toml"
    lock.write_text(_lock_ok(index, "alpha", "beta", "gamma"))
    for name, prefix, fault in [
        ("download: connection reset mid-body", f"/files/{WHEEL}", Fault("reset")),
        ("download: Content-Length longer than the body", f"/files/{BETA}", Fault("long-length")),
        ("download: HTTP 502 then success", "/files/gamma", None),
    ]:
        faults.inject("index", name)
        if fault is None:
            index.fail(prefix, 502)
        else:
            index.inject(prefix, fault)
    out = nbenv("create", "--no-kernel", "--no-compile", "--json", "--lock", str(lock))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["created"] is True
    assert index.faults == {} and index.fail_next == {}  # every fault was served
    _checks(faults, isolated_env)


# -- faults that cannot be absorbed: a clear error, nothing cached or built ----------------

REFUSED = [
    ("truncated file (valid HTTP, half the bytes)", Fault("truncate"), "sha256"),
    ("wrong sha256 (bytes flipped, same length)", Fault("corrupt"), "sha256"),
    ("Content-Length shorter than the body", Fault("short-length"), "sha256"),
]


@pytest.mark.parametrize(("name", "fault", "says"), REFUSED, ids=[r[0] for r in REFUSED])
def test_bad_bytes_are_refused_and_never_cached(
    name: str,
    fault: Fault,
    says: str,
    index: IndexServer,
    faults: FaultLog,
    isolated_env: IsolatedEnv,
    tmp_path: Path,
) -> None:
    lock = tmp_path / "pylock.toml"
    lock.write_text(_lock_ok(index, "alpha"))
    faults.inject("index", name)
    # every attempt gets the fault: retries must not turn bad bytes into good ones
    index.inject(f"/files/{WHEEL}", fault, times=10)
    out = nbenv("create", "--no-kernel", "--no-compile", "--lock", str(lock))
    assert out.returncode == 1, out.stdout
    assert WHEEL in out.stderr and says in out.stderr
    assert "Traceback" not in out.stderr
    assert not list((isolated_env.nbenv_home / "envs").glob("[!.]*"))
    assert not list((isolated_env.nbenv_home / "cache" / "files").glob(f"*/*/{WHEEL}"))
    _checks(faults, isolated_env)
    # the index heals: the same command now works, from the same cache
    index.faults.clear()
    again = nbenv("create", "--no-kernel", "--no-compile", "--lock", str(lock))
    assert again.returncode == 0, again.stderr
    _checks(faults, isolated_env)


@pytest.mark.parametrize(
    ("name", "fault"),
    [
        ("index page that is neither JSON nor HTML", Fault("garbage")),
        (
            "index page claiming JSON that is not JSON",
            Fault("garbage", body=b"{not json", content_type="application/vnd.pypi.simple.v1+json"),
        ),
        ("index page cut in half", Fault("truncate")),
        (
            "JSON index page that is not UTF-8",
            Fault(
                "garbage",
                body=b'{"files": [{"filename": "\xff\xfe.whl"}]}',
                content_type="application/vnd.pypi.simple.v1+json",
            ),
        ),
    ],
    ids=["plain-text", "broken-json", "truncated-page", "not-utf8-json"],
)
def test_an_unreadable_index_page_names_the_url(
    name: str, fault: Fault, index: IndexServer, faults: FaultLog, isolated_env: IsolatedEnv
) -> None:
    faults.inject("index", name)
    index.inject("/simple/alpha/", fault, times=10)
    out = nbenv("lock", "--index-url", index.url, "alpha")
    assert out.returncode == 1, out.stdout
    assert index.project_url("alpha") in out.stderr
    assert "Traceback" not in out.stderr
    # nothing unreadable was cached: the healed index works at once, without --refresh
    index.faults.clear()
    assert nbenv("lock", "--index-url", index.url, "alpha").returncode == 0
    _checks(faults, isolated_env)


def test_a_stalled_index_times_out_then_retries(
    index: IndexServer, faults: FaultLog, isolated_env: IsolatedEnv, tmp_path: Path
) -> None:
    faults.inject("index", "slow response past the timeout, then success")
    entry = index.index.file(WHEEL)
    assert entry is not None
    artifact = Artifact(WHEEL, index.file_url(WHEEL), entry.sha256, entry.size)
    index.inject(f"/files/{WHEEL}", Fault("stall", seconds=2.0))
    with HttpClient(timeout=0.5, backoff=0.01) as client:
        paths = Fetcher(client, tmp_path / "cache").fetch([artifact])
    assert paths[entry.sha256].read_bytes() == entry.path.read_bytes()
    faults.inject("index", "slow responses past the timeout on every try")
    index.inject(f"/files/{WHEEL}", Fault("stall", seconds=1.5), times=10)
    with HttpClient(timeout=0.3, retries=2, backoff=0.01) as client:
        from nbenv.errors import NbenvError

        with pytest.raises(NbenvError) as info:
            Fetcher(client, tmp_path / "other").fetch([artifact])
    assert "Timeout" in str(info.value) and WHEEL in str(info.value)
    assert not list((tmp_path / "other" / "files").glob(f"*/*/{WHEEL}"))
    assert (
        faults.lost(cache_problems(tmp_path / "cache") + cache_problems(tmp_path / "other")) == []
    )


@pytest.mark.parametrize(
    "setting",
    [
        {"NBENV_HTTP_TIMEOUT": "0.4", "NBENV_HTTP_RETRIES": "1"},
        {"PIP_TIMEOUT": "0.4", "PIP_RETRIES": "1"},
        # nbenv's variables win over pip's
        {"PIP_TIMEOUT": "120", "PIP_RETRIES": "9", "NBENV_HTTP_TIMEOUT": "0.4",
         "NBENV_HTTP_RETRIES": "1"},
        {"PIP_CONFIG_FILE": "pip.conf"},  # [global] timeout = 0.4, retries = 1
    ],
    ids=["nbenv-variables", "pip-variables", "nbenv-wins", "pip-config"],
)  # fmt: skip
def test_the_configured_timeout_stops_a_stalled_index(
    setting: dict[str, str],
    auth_index: IndexServer,
    faults: FaultLog,
    isolated_env: IsolatedEnv,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A private index that stops answering: the user's timeout (pip's or nbenv's) and
    retries apply, and the error names the URL and the timeout, without the credentials."""
    import time

    from checks import find_secret

    faults.inject("index", f"stalled index with a configured timeout ({', '.join(setting)})")
    config = isolated_env.root / "pip.conf"
    config.write_text("[global]\ntimeout = 0.4\nretries = 1\n")
    for key, value in setting.items():
        monkeypatch.setenv(key, str(config) if key == "PIP_CONFIG_FILE" else value)
    auth_index.inject("/simple/private/", Fault("stall", seconds=3.0), times=10)
    started = time.monotonic()
    out = nbenv("lock", "--index-url", auth_index.url_with_auth(), "private", timeout=60)
    took = time.monotonic() - started
    assert out.returncode == 1, out.stdout
    assert auth_index.project_url("private") in out.stderr, out.stderr
    assert "within the 0.4 s timeout" in out.stderr and "2 tries" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert took < 2 * 3.0, f"the 0.4 s timeout was not applied: {took:.1f} s"
    assert faults.leaked(find_secret("s3cret", [], [out.stdout, out.stderr])) == []
    _checks(faults, isolated_env)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("NBENV_HTTP_TIMEOUT", "soon"), ("NBENV_HTTP_TIMEOUT", "0"), ("PIP_TIMEOUT", "-1"),
     ("NBENV_HTTP_RETRIES", "2.5"), ("PIP_RETRIES", "many")],
)  # fmt: skip
def test_a_bad_timeout_or_retries_setting_is_a_clear_error(
    variable: str,
    value: str,
    index: IndexServer,
    faults: FaultLog,
    isolated_env: IsolatedEnv,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    faults.inject("bad input", f"{variable}={value}")
    monkeypatch.setenv(variable, value)
    out = nbenv("lock", "--index-url", index.url, "alpha")
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert variable in out.stderr and repr(value) in out.stderr, out.stderr
    _checks(faults, isolated_env)


def test_a_redirect_to_another_host_does_not_carry_credentials(
    auth_index: IndexServer,
    make_index,  # type: ignore[no-untyped-def]
    faults: FaultLog,
    isolated_env: IsolatedEnv,
) -> None:
    """The private index redirects its page and its file to another host (a CDN): the
    other host must see no Authorization header, and the token appears in no message."""
    faults.inject("index", "redirect of an authenticated page to another host")
    elsewhere: IndexServer = make_index(auth_index.index.copy())
    # `localhost` is another host than `127.0.0.1` for credentials, cookies and browsers
    other = f"http://localhost:{elsewhere.port}"
    auth_index.inject("/simple/private/", Fault("redirect", location=other))
    out = nbenv("lock", "--index-url", auth_index.url_with_auth(), "private")
    assert out.returncode == 0, out.stderr
    assert [r.authorization for r in elsewhere.requests("/simple/private/")] == [False]
    faults.inject("index", "redirect of an authenticated download to another host")
    lock = isolated_env.root / "pylock.toml"
    lock.write_text(out.stdout)
    auth_index.inject("/files/", Fault("redirect", location=other))
    created = nbenv("create", "--no-kernel", "--no-compile", "--lock", str(lock),
                    "--index-url", auth_index.url_with_auth())  # fmt: skip
    assert created.returncode == 0, created.stderr
    downloads = elsewhere.requests("/files/private")
    assert downloads and not any(r.authorization for r in downloads)
    secret = auth_index.auth[1]  # type: ignore[index]
    from checks import find_secret

    hits = find_secret(secret, [isolated_env.root], [out.stdout, out.stderr, created.stderr])
    assert faults.leaked(hits) == []
    _checks(faults, isolated_env)
