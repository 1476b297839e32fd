"""nbenv.resolve.warm: index pages fetched and parsed by a helper, read by the resolver from
the cache; whatever the helper cannot do, the resolver does itself and reports as before."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from support import IsolatedEnv, run_python
from support.index_server import IndexServer

from nbenv.errors import ProjectNotFoundError
from nbenv.net.http import HttpClient, HttpResponse
from nbenv.paths import cache_dir
from nbenv.resolve.pypi import PypiResolver
from nbenv.resolve.target import Target
from nbenv.resolve.warm import PageWarmer
from nbenv.spec import parse_request


class CountingClient(HttpClient):
    """An HttpClient that notes the URLs this process asks for itself."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def get(self, url: str, headers: Any = None) -> HttpResponse:
        self.asked.append(url)
        return super().get(url, headers)


@pytest.fixture
def helper() -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "nbenv.resolve.warm"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8",
    )  # fmt: skip
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def _resolve(
    index: IndexServer, client: HttpClient, warmer: PageWarmer | None, *specs: str
) -> dict[str, str]:
    request = parse_request([*specs, "--index-url", index.url])
    with PypiResolver(request, client=client, targets=[Target()],
                      warm_page=warmer.warm if warmer else None) as resolver:  # fmt: skip
        (resolution,) = resolver.resolve()
    return {p.name: str(p.version) for p in resolution.packages}


def _pages(asked: list[str]) -> list[str]:
    return [url for url in asked if "/simple/" in url]


def test_pages_are_fetched_by_the_helper_and_the_resolve_is_the_same(
    index: IndexServer, helper: subprocess.Popen[str], isolated_env: IsolatedEnv
) -> None:
    with CountingClient() as plain:
        expected = _resolve(index, plain, None, "alpha", "beta")
    assert _pages(plain.asked)  # the control: without a helper, this process asks
    for entry in cache_dir().iterdir():  # cold again
        if entry.is_dir():
            subprocess.run(["rm", "-rf", str(entry)], check=True)
    index.clear_log()
    with CountingClient() as client:
        warmer = PageWarmer(helper, client, cache_dir() / "resolve", [Target()])
        try:
            assert _resolve(index, client, warmer, "alpha", "beta") == expected
        finally:
            warmer.close()
    assert _pages(client.asked) == []  # every page was read from the cache the helper filled
    fetched = {r.path for r in index.log}
    assert {"/simple/alpha/", "/simple/beta/", "/simple/gamma/"} <= fetched
    assert helper.wait(timeout=10) == 0  # closing its input ended it


def test_a_helper_that_is_gone_leaves_the_pages_to_the_resolver(
    index: IndexServer, helper: subprocess.Popen[str]
) -> None:
    with CountingClient() as client:
        warmer = PageWarmer(helper, client, cache_dir() / "resolve", [Target()])
        helper.kill()
        helper.wait()
        try:
            chosen = _resolve(index, client, warmer, "alpha", "beta")
        finally:
            warmer.close()
    assert chosen["beta"] == "1.0" and "gamma" in chosen
    assert any(url.endswith("/simple/alpha/") for url in client.asked)  # asked itself


def test_a_page_the_helper_cannot_get_is_reported_by_the_resolver(
    index: IndexServer, helper: subprocess.Popen[str]
) -> None:
    with CountingClient() as client:
        warmer = PageWarmer(helper, client, cache_dir() / "resolve", [Target()])
        try:
            with pytest.raises(ProjectNotFoundError, match="no-such-project"):
                _resolve(index, client, warmer, "no-such-project")
        finally:
            warmer.close()


_CREATE_SCRIPT = """
import json, os, sys
from nbenv.net.http import HttpClient
parent = os.getpid()
asked = []
get = HttpClient.get
def noting(self, url, headers=None):
    if os.getpid() == parent:
        asked.append(url)
    return get(self, url, headers)
HttpClient.get = noting
from nbenv.envs import BuildOptions, create_env
from nbenv.spec import parse_request
create_env(parse_request(["alpha", "beta", "--index-url", sys.argv[1]]),
           BuildOptions(register_kernel=False, compile_bytecode=False))
print(json.dumps([url for url in asked if "/simple/" in url]))
"""


def test_a_cold_create_leaves_its_pages_to_a_helper(
    index: IndexServer, isolated_env: IsolatedEnv
) -> None:
    asked = json.loads(run_python(_CREATE_SCRIPT, index.url))
    assert asked == []  # the create's own process asked for no page
    assert "/simple/beta/" in {r.path for r in index.log}
