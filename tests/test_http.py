"""The HTTP client itself: its connection pool prepared ahead of the first request."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from support.index_server import IndexServer

import nbenv.net.http as http_module
from nbenv.net.http import HttpClient


def _wait_for_prepare() -> None:
    for thread in threading.enumerate():
        if thread.name == "nbenv-http-prepare":
            thread.join(timeout=30)


def test_prepare_builds_the_pool_on_a_thread_and_the_first_request_uses_it(
    index: IndexServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str] = []
    original = HttpClient._new_client

    def counting(self: HttpClient) -> Any:
        built.append(threading.current_thread().name)
        return original(self)

    monkeypatch.setattr(HttpClient, "_new_client", counting)
    with HttpClient() as client:
        client.prepare()
        client.prepare()  # a second call starts nothing more
        _wait_for_prepare()
        assert built == ["nbenv-http-prepare"]
        assert client.get(index.project_url("alpha")).status == 200
        assert built == ["nbenv-http-prepare"]  # the request took the prepared pool


def test_a_client_closed_before_its_prepare_ran_builds_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held: list[Callable[[], None]] = []

    class HeldThread:  # the prepare thread, run by hand after close()
        def __init__(self, target: Callable[[], None], name: str, daemon: bool) -> None:
            self.target = target

        def start(self) -> None:
            held.append(self.target)

    client = HttpClient()
    monkeypatch.setattr(http_module, "threading", SimpleNamespace(Thread=HeldThread))
    client.prepare()
    client.close()
    held[0]()
    assert client._httpx_client is None  # nothing left open behind the closed client
