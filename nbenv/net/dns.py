"""One DNS lookup per host for a whole connection pool, not one per connection.

httpcore looks the host up again for every connection it opens, and a cold create opens
some 34 (parallel index requests, then downloads): 34 lookups where uv makes 6. Besides the
round trips, every lookup is a chance to lose a query: on this machine's resolver 11 of 300
lookups took 5 s (glibc's retry timeout), and half of a series of cold resolves stalled
that long. Here the first connection to a host looks it up and the others wait for that
answer; the addresses are kept for a few minutes, and forgotten when none of them connects.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

import httpcore

__all__ = ["KEEP_SECONDS", "SharedLookups"]

KEEP_SECONDS = 300.0
_Lookup = Callable[[str, int], list[str]]


def _getaddrinfo(host: str, port: int) -> list[str]:
    addresses: list[str] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = str(sockaddr[0])
        if address not in addresses:  # in the resolver's order (RFC 6724, as create_connection)
            addresses.append(address)
    return addresses


class SharedLookups(httpcore.NetworkBackend):
    """A network backend for httpcore that connects like `backend` (httpcore's sync one) to
    addresses looked up once per host and port."""

    def __init__(
        self,
        backend: httpcore.NetworkBackend | None = None,
        *,
        lookup: _Lookup = _getaddrinfo,
        keep: float = KEEP_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backend = backend or httpcore.SyncBackend()
        self._lookup = lookup
        self._keep = keep
        self._clock = clock
        self._lock = threading.Lock()
        self._known: dict[tuple[str, int], tuple[float, Future[list[str]]]] = {}

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        answer = self._addresses(host, port)
        error: Exception | None = None
        for address in answer.result():  # raises the lookup's ConnectError for every waiter
            try:
                return self._backend.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        self._forget(host, port, answer)  # none answers: ask again next time
        assert error is not None  # a lookup never answers with no address
        raise error

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        return self._backend.connect_unix_socket(path, timeout, socket_options)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)

    def _addresses(self, host: str, port: int) -> Future[list[str]]:
        key = (host, port)
        with self._lock:
            kept = self._known.get(key)
            if kept is not None and self._clock() - kept[0] < self._keep:
                return kept[1]
            answer: Future[list[str]] = Future()
            self._known[key] = (self._clock(), answer)
        try:
            addresses = self._lookup(host, port)
            if not addresses:
                raise OSError(f"no address for {host}")
        except OSError as exc:  # as httpcore reports a failed lookup: a ConnectError
            self._forget(host, port, answer)  # a failure is not kept
            answer.set_exception(httpcore.ConnectError(str(exc)))
        else:
            answer.set_result(addresses)
        return answer

    def _forget(self, host: str, port: int, answer: Future[list[str]]) -> None:
        with self._lock:
            kept = self._known.get((host, port))
            if kept is not None and kept[1] is answer:
                del self._known[(host, port)]
