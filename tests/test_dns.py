"""nbenv.net.dns: a pool's connections share one lookup per host (and the client uses it)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpcore
import pytest
from support.index_server import IndexServer

from nbenv.net.dns import SharedLookups
from nbenv.net.http import HttpClient


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections (and nothing more)."""
    server = socket.create_server(("127.0.0.1", 0), backlog=64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


class Lookups:
    """A resolver that answers `addresses` slowly and counts the questions."""

    def __init__(self, *addresses: str, delay: float = 0.0) -> None:
        self.addresses = list(addresses)
        self.delay = delay
        self.asked: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        time.sleep(self.delay)
        if not self.addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.addresses)


def test_parallel_connections_to_one_host_share_one_lookup(listener: int) -> None:
    lookups = Lookups("127.0.0.1", delay=0.2)  # slow: all 8 ask while it is under way
    backend = SharedLookups(lookup=lookups)
    with ThreadPoolExecutor(8) as pool:
        streams = list(pool.map(lambda _: backend.connect_tcp("index.test", listener), range(8)))
    for stream in streams:
        assert stream.get_extra_info("server_addr") == ("127.0.0.1", listener)
        stream.close()
    assert lookups.asked == [("index.test", listener)]
    backend.connect_tcp("index.test", listener).close()
    backend.connect_tcp("other.test", listener).close()  # another host is its own lookup
    assert lookups.asked == [("index.test", listener), ("other.test", listener)]


def test_an_address_that_refuses_is_passed_over_for_the_next(listener: int) -> None:
    # 127.0.0.2 is loopback too, but nothing listens there on this port
    backend = SharedLookups(lookup=Lookups("127.0.0.2", "127.0.0.1"))
    stream = backend.connect_tcp("index.test", listener)
    assert stream.get_extra_info("server_addr") == ("127.0.0.1", listener)
    stream.close()


def test_a_failed_lookup_is_a_connect_error_and_is_asked_again(listener: int) -> None:
    lookups = Lookups()  # no answer
    backend = SharedLookups(lookup=lookups)
    for _ in range(2):
        with pytest.raises(httpcore.ConnectError, match="not known"):
            backend.connect_tcp("nowhere.test", listener)
    assert len(lookups.asked) == 2  # a failure is not kept
    lookups.addresses = ["127.0.0.1"]
    backend.connect_tcp("nowhere.test", listener).close()


def test_addresses_that_all_refuse_are_forgotten(listener: int) -> None:
    lookups = Lookups("127.0.0.2")
    backend = SharedLookups(lookup=lookups)
    with pytest.raises(httpcore.ConnectError):
        backend.connect_tcp("moved.test", listener)
    lookups.addresses = ["127.0.0.1"]  # the host moved: the next connection asks again
    backend.connect_tcp("moved.test", listener).close()
    assert len(lookups.asked) == 2


def test_addresses_are_kept_for_a_while_only(listener: int) -> None:
    now = [0.0]
    lookups = Lookups("127.0.0.1")
    backend = SharedLookups(lookup=lookups, keep=300.0, clock=lambda: now[0])
    backend.connect_tcp("index.test", listener).close()
    now[0] = 299.0
    backend.connect_tcp("index.test", listener).close()
    assert len(lookups.asked) == 1
    now[0] = 301.0
    backend.connect_tcp("index.test", listener).close()
    assert len(lookups.asked) == 2


def test_the_http_client_looks_a_host_up_once_for_all_its_connections(
    index: IndexServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    real = socket.getaddrinfo

    def counting(host: object, *args: object, **kwargs: object) -> object:
        if host == "localhost":
            asked.append(host)
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    url = index.project_url("alpha").replace("127.0.0.1", "localhost")
    with HttpClient() as client, ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda _: client.get(url).status, range(12)))
    assert statuses == [200] * 12
    assert asked == ["localhost"]  # httpcore alone: one per connection opened
