"""The one HTTP client: pooled connections, retries with backoff, auth, file:// URLs.

Every network access in nbenv goes through an `HttpClient` that is passed in, so tests hand
it a local index and nothing else reaches the network. It is safe to share between threads.
Its timeout and retries come from the user's settings (pip's `timeout`/`retries`,
NBENV_HTTP_TIMEOUT/NBENV_HTTP_RETRIES; see nbenv.settings) where the client is made.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    import ssl

    import httpx


from nbenv import __version__
from nbenv.errors import IndexAccessError, NetworkSettingError
from nbenv.net.auth import Credentials, redact, split_credentials
from nbenv.settings import DEFAULT_RETRIES, DEFAULT_TIMEOUT, IndexSettings, TlsFiles

__all__ = ["DownloadResult", "HttpClient", "HttpResponse", "file_url_to_path"]

_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_CHUNK = 256 * 1024
_WRITE_BATCH = 1 << 20  # bytes of a download gathered per write (see _write_body)


@dataclass(frozen=True)
class HttpResponse:
    url: str  # final URL, without credentials
    status: int
    content: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


@dataclass(frozen=True)
class DownloadResult:
    """What `HttpClient.download` did. `status` 200 or 206: the body is in the file;
    any other status: nothing was written (the file may have been emptied by a restart)."""

    url: str  # final URL, without credentials
    status: int
    size: int  # bytes in the file now
    resumed_from: int = 0  # bytes kept from before this call (0: written from the start)


class HttpClient:
    def __init__(
        self,
        *,
        credentials: Credentials | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = 0.25,
        max_connections: int = 32,
        tls: TlsFiles | None = None,
    ) -> None:
        self.credentials = credentials or Credentials()
        self.tls = tls or TlsFiles()
        self.retries = retries
        self.backoff = backoff
        self._timeout = timeout
        self._max_connections = max_connections
        self._httpx_client: httpx.Client | None = None
        self._preparing = False  # a prepare() thread will build the pool
        self._tls_error: NetworkSettingError | None = None  # why HTTPS cannot be used
        self._lock = threading.Lock()

    def settings(self) -> dict[str, Any]:
        """What a client in another process needs to act as this one (nbenv.downloading),
        credentials included: send it over a pipe only."""
        return {"timeout": self._timeout, "retries": self.retries, "backoff": self.backoff,
                "max_connections": self._max_connections, "tls": dataclasses.asdict(self.tls),
                "credentials": self.credentials.to_json()}  # fmt: skip

    @classmethod
    def for_index_settings(cls, settings: IndexSettings, credentials: Credentials) -> HttpClient:
        """A client that follows the user's pip settings: timeout, retries, certificates."""
        return cls(credentials=credentials, timeout=settings.timeout, retries=settings.retries,
                   tls=settings.tls)  # fmt: skip

    @classmethod
    def from_settings(cls, data: Mapping[str, Any]) -> HttpClient:
        return cls(credentials=Credentials.from_json(data["credentials"]),
                   timeout=float(data["timeout"]), retries=int(data["retries"]),
                   backoff=float(data["backoff"]),
                   max_connections=int(data["max_connections"]),
                   tls=TlsFiles(**data["tls"]))  # fmt: skip

    @property
    def _client(self) -> httpx.Client:
        """Made on first use: building an env from cached files needs no network, and httpx
        with its TLS context costs ~70 ms that such a run should not pay."""
        with self._lock:
            if self._httpx_client is None:
                self._httpx_client = self._new_client()
            return self._httpx_client

    def _new_client(self) -> httpx.Client:
        import ssl

        import httpx

        limits = httpx.Limits(
            max_connections=self._max_connections,
            max_keepalive_connections=self._max_connections,
        )
        self._tls_error = None
        try:
            verify = _tls_context(self.tls)
        except NetworkSettingError as exc:
            # As pip: a trust setting that cannot be loaded fails HTTPS requests only (with
            # this error, see _https_ok); an http:// index still works. This context
            # trusts no one, so nothing reaches a server over HTTPS unverified.
            verify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self._tls_error = exc
        return httpx.Client(
            timeout=httpx.Timeout(self._timeout, connect=min(self._timeout, 10.0)),
            limits=limits,
            follow_redirects=True,
            headers={"User-Agent": f"nbenv/{__version__}"},
            verify=verify,  # also for the proxies' transports, which httpx makes itself
            trust_env=True,  # proxies (and without pip's `cert`, SSL_CERT_FILE) as others do
            transport=_direct_transport(verify, limits),
        )

    def _https_ok(self, url: str) -> None:
        """Raise why HTTPS is not usable (a `cert` that cannot be loaded) for an https URL."""
        if self._tls_error is not None and url.lower().startswith("https:"):
            raise self._tls_error

    def build(self) -> None:
        """Build the connection pool now, on this thread: before forking helpers, so that
        they inherit httpx and the TLS context (~55 ms of CPU each) instead of making their
        own. A failure here is raised again, with its message, by the first request."""
        with self._lock:
            self._build_locked()

    def _build_locked(self) -> None:
        """Called with the lock held."""
        if self._httpx_client is None:
            with contextlib.suppress(Exception):
                self._httpx_client = self._new_client()

    def prepare(self) -> None:
        """Build the connection pool on a daemon thread now: importing httpx and loading the
        TLS trust store take ~70 ms, which the first request would otherwise wait for (the
        loading releases the GIL, so it overlaps the caller's own start-up). A failure here
        is raised again, with its message, by the first request."""
        with self._lock:
            if self._preparing or self._httpx_client is not None:
                return
            self._preparing = True

        def build() -> None:
            with self._lock:
                if self._preparing:  # not closed meanwhile
                    self._build_locked()
                self._preparing = False

        threading.Thread(target=build, name="nbenv-http-prepare", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            client, self._httpx_client = self._httpx_client, None
            self._preparing = False
        if client is not None:
            client.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, url: str, headers: Mapping[str, str] | None = None) -> HttpResponse:
        """GET with retries on transient failures. Non-2xx answers are returned, not raised,
        except after retries are exhausted on a transient status or transport error."""
        clean, inline = split_credentials(url)
        if clean.startswith("file:"):
            return _read_file(clean, headers or {})
        auth = inline or self.credentials.for_url(clean)
        client = self._client
        self._https_ok(clean)
        transient = _transient()
        attempt = 0
        while True:
            try:
                response = client.get(clean, headers=dict(headers or {}), auth=auth)
            except transient as exc:
                if attempt >= self.retries:
                    raise IndexAccessError(redact(clean), self._describe(exc, attempt)) from None
            else:
                if response.status_code not in _RETRY_STATUS or attempt >= self.retries:
                    if response.status_code in _RETRY_STATUS:
                        raise IndexAccessError(
                            redact(clean), f"HTTP {response.status_code} after {attempt + 1} tries"
                        )
                    return HttpResponse(
                        url=redact(str(response.url)),
                        status=response.status_code,
                        content=response.content,
                        headers={k.lower(): v for k, v in response.headers.items()},
                    )
            time.sleep(self.backoff * (2**attempt))
            attempt += 1

    def get_ok(self, url: str, headers: Mapping[str, str] | None = None) -> HttpResponse:
        response = self.get(url, headers)
        if response.status == 401 or response.status == 403:
            raise IndexAccessError(
                redact(split_credentials(url)[0]),
                f"HTTP {response.status}: the index refused access; put credentials in the "
                "index URL (https://user:token@host/simple) or in ~/.netrc",
            )
        if not 200 <= response.status < 300:
            raise IndexAccessError(redact(split_credentials(url)[0]), f"HTTP {response.status}")
        return response

    def download(
        self,
        url: str,
        dest: Path,
        *,
        headers: Mapping[str, str] | None = None,
        on_chunk: Callable[[int, bytes], None] | None = None,
    ) -> DownloadResult:
        """Stream `url` into `dest`, continuing after the bytes `dest` already holds.

        A non-empty `dest` is resumed with `Range: bytes=N-` when the server answers 206,
        otherwise rewritten from the start. Transient failures, also mid-body, are retried
        with backoff and continue where they stopped. `on_chunk(offset, data)` sees every
        byte written, in order; offset 0 after earlier bytes means the file restarted.
        Other non-2xx statuses are returned, as `get` does.
        """
        clean, inline = split_credentials(url)
        if clean.startswith("file:"):
            return _copy_file(clean, dest, on_chunk)
        auth = inline or self.credentials.for_url(clean)
        kept = _size(dest)  # bytes from before this call still in the file
        client = self._client
        self._https_ok(clean)
        transient = _transient()
        attempt = 0
        high_water = kept
        while True:
            offset = _size(dest)
            request_headers = {**(headers or {}), "Accept-Encoding": "identity"}
            if offset:
                request_headers["Range"] = f"bytes={offset}-"
            try:
                with client.stream("GET", clean, headers=request_headers, auth=auth) as response:
                    status = response.status_code
                    final = redact(str(response.url))
                    if status in _RETRY_STATUS:
                        if attempt >= self.retries:
                            raise IndexAccessError(
                                redact(clean), f"HTTP {status} after {attempt + 1} tries"
                            )
                    elif status == 200 or (status == 206 and _range_start(response) == offset):
                        if status == 200:
                            offset = kept = 0
                        size = _write_body(response, dest, offset, on_chunk)
                        return DownloadResult(final, status, size, kept)
                    elif status in (206, 416) and offset:
                        dest.write_bytes(b"")  # the part does not fit the file: start over
                        kept = 0
                        continue
                    elif status == 206:
                        raise IndexAccessError(final, "HTTP 206 to a request for the whole file")
                    else:
                        return DownloadResult(final, status, offset, kept)
            except transient as exc:
                if attempt >= self.retries:
                    raise IndexAccessError(redact(clean), self._describe(exc, attempt)) from None
                if _size(dest) > high_water:  # a broken stream that made progress
                    high_water = _size(dest)
                    attempt = 0
            time.sleep(self.backoff * (2**attempt))
            attempt += 1

    def _describe(self, exc: Exception, attempt: int) -> str:
        import httpx

        if isinstance(exc, httpx.TimeoutException):
            tries = f"{attempt + 1} tries" if attempt else "1 try"
            return (
                f"no answer within the {self._timeout:g} s timeout ({type(exc).__name__}, "
                f"{tries}); set a longer one with NBENV_HTTP_TIMEOUT or pip's `timeout` "
                "setting (PIP_TIMEOUT)"
            )
        return _describe(exc)


def file_url_to_path(url: str) -> Path:
    """`file:///a/b%20c` -> Path("/a/b c")."""
    path = unquote(urlsplit(url).path)
    if os.name == "nt":  # urllib.request is slow to import; only Windows needs it
        from urllib.request import url2pathname

        return Path(url2pathname(path))
    return Path(path)


def _transient() -> tuple[type[Exception], ...]:
    import httpx

    return (httpx.TransportError,)


def _describe(exc: Exception) -> str:
    name = type(exc).__name__
    text = redact(str(exc))
    return f"{name}: {text}" if text else name


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _range_start(response: httpx.Response) -> int | None:
    unit, _, spec = response.headers.get("content-range", "").partition(" ")
    first = spec.partition("-")[0]
    return int(first) if unit.lower() == "bytes" and first.isdigit() else None


def _write_body(
    response: httpx.Response,
    dest: Path,
    offset: int,
    on_chunk: Callable[[int, bytes], None] | None,
) -> int:
    # Raw bytes: the lock's hash is of the file as stored, never of a decoded body. TLS
    # hands the body over in 16 KB records; writing and hashing each one released and
    # retook the GIL three times per record, and with a few downloads on threads a fifth
    # of their CPU went to handing the GIL over. So records are gathered into 1 MB writes.
    # What arrived before a broken connection still reaches the file (`finally`).
    with dest.open("r+b" if offset else "wb", buffering=0) as out:
        out.seek(offset)
        out.truncate()
        pending: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_raw():
                pending.append(chunk)
                size += len(chunk)
                if size >= _WRITE_BATCH:
                    offset = _write_all(out, pending, offset, on_chunk)
                    size = 0
        finally:
            offset = _write_all(out, pending, offset, on_chunk)
    return offset


def _write_all(
    out: BinaryIO, pending: list[bytes], offset: int, on_chunk: Callable[[int, bytes], None] | None
) -> int:
    """Write the gathered chunks as one block at `offset`; returns the offset after them."""
    if not pending:
        return offset
    data = pending[0] if len(pending) == 1 else b"".join(pending)
    pending.clear()  # before on_chunk, which may raise: these bytes are written once
    view = memoryview(data)
    while view:  # an unbuffered write may take only part
        view = view[out.write(view) :]
    if on_chunk is not None:
        on_chunk(offset, data)
    return offset + len(data)


def _copy_file(
    url: str, dest: Path, on_chunk: Callable[[int, bytes], None] | None
) -> DownloadResult:
    path = file_url_to_path(url)
    try:
        source = path.open("rb")
    except (FileNotFoundError, IsADirectoryError):
        return DownloadResult(url, 404, _size(dest))
    except OSError as exc:
        raise IndexAccessError(url, str(exc)) from None
    with source:
        total = os.fstat(source.fileno()).st_size
        offset = _size(dest)
        if offset > total:
            offset = 0
        source.seek(offset)
        with dest.open("r+b" if offset else "wb") as out:
            out.seek(offset)
            out.truncate()
            position = offset
            while chunk := source.read(_CHUNK):
                out.write(chunk)
                if on_chunk is not None:
                    on_chunk(position, chunk)
                position += len(chunk)
    return DownloadResult(url, 206 if offset else 200, position, offset)


def _read_file(url: str, headers: Mapping[str, str]) -> HttpResponse:
    """file:// indexes (pip allows them): a directory means its index.html."""
    path = file_url_to_path(url)
    if path.is_dir():
        path = path / "index.html"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return HttpResponse(url=url, status=404, content=b"")
    except OSError as exc:
        raise IndexAccessError(url, str(exc)) from None
    status = 200
    range_header = headers.get("Range") or headers.get("range")
    if range_header and range_header.startswith("bytes="):
        start_text, _, end_text = range_header[6:].partition("-")
        total = len(data)
        if start_text == "":
            start, end = max(0, total - int(end_text)), total - 1
        else:
            start = int(start_text)
            end = min(int(end_text), total - 1) if end_text else total - 1
        data = data[start : end + 1]
        status = 206
        out = {"content-range": f"bytes {start}-{end}/{total}"}
    else:
        out = {}
    content_type = "text/html" if path.suffix == ".html" else "application/octet-stream"
    return HttpResponse(
        url=url, status=status, content=data, headers={"content-type": content_type, **out}
    )


def _direct_transport(verify: ssl.SSLContext, limits: httpx.Limits) -> httpx.HTTPTransport:
    """httpx's transport for connections without a proxy, looking each host up once
    (nbenv.net.dns) instead of once per connection. httpx does not take a network backend:
    it is set on the transport's pool, where httpcore keeps it; an httpx without that pool
    keeps its own lookups."""
    import httpx

    from nbenv.net.dns import SharedLookups

    transport = httpx.HTTPTransport(verify=verify, limits=limits, trust_env=True)
    pool = getattr(transport, "_pool", None)
    if type(getattr(pool, "_network_backend", None)).__name__ == "SyncBackend":
        pool._network_backend = SharedLookups(pool._network_backend)  # type: ignore[union-attr]
    return transport


_CONTEXTS: dict[tuple[object, ...], ssl.SSLContext] = {}  # see _tls_context
_CONTEXTS_LOCK = threading.Lock()


def _tls_context(tls: TlsFiles) -> ssl.SSLContext:
    """The TLS context for `tls`, made once per process while the files it reads (and the
    variables that name them) stay as they were: loading a trust store costs ~27 ms of CPU,
    every client (each `%%pypi` cell's) would pay it again, and a helper forked after the
    first one inherits it."""
    files = [tls.cert, tls.client_cert, *(os.environ.get(v) for v in _TRUST_VARIABLES)]
    key = (tls, *(_stamp(path) for path in files))
    with _CONTEXTS_LOCK:
        context = _CONTEXTS.get(key)
        if context is None:  # a failure is raised, and not kept
            context = _CONTEXTS[key] = _new_tls_context(tls)
        return context


def _stamp(path: str | None) -> tuple[str | None, int, int]:
    if not path:
        return (None, 0, 0)
    try:
        info = os.stat(path)
    except OSError:
        return (path, -1, -1)
    return (path, info.st_mtime_ns, info.st_size)


def _new_tls_context(tls: TlsFiles) -> ssl.SSLContext:
    """What HTTPS trusts: pip's `cert` when set, else SSL_CERT_FILE, SSL_CERT_DIR or
    certifi's bundle (as httpx and requests choose); plus pip's `client-cert`. A file that
    cannot be loaded is an error naming the setting, never a bare OSError."""
    import ssl

    import httpx

    if tls.cert is not None:
        try:
            if os.path.isdir(tls.cert):
                context = ssl.create_default_context(capath=tls.cert)
            else:
                context = ssl.create_default_context(cafile=tls.cert)
        except (OSError, ssl.SSLError) as exc:
            raise _bad_file(tls.cert_source or "pip", "cert", tls.cert, exc, _CA_FILES) from None
    else:
        try:
            context = httpx.create_ssl_context(trust_env=True)
        except (OSError, ssl.SSLError) as exc:
            variable = next((v for v in _TRUST_VARIABLES if os.environ.get(v)), None)
            if variable is None:
                raise
            raise _bad_file("environment", variable, os.environ[variable], exc,
                            f"{_CA_FILES}, or to be unset") from None  # fmt: skip
    from nbenv.net.tls_socket import GatheringSSLSocket

    context.sslsocket_class = GatheringSSLSocket  # fewer, fuller reads for httpx (see there)
    if tls.client_cert is not None:
        try:
            # never OpenSSL's own password prompt: in a kernel it would wait for ever
            context.load_cert_chain(tls.client_cert, password=_no_password)
        except (OSError, ssl.SSLError, _EncryptedKeyError) as exc:
            raise _bad_file(tls.client_cert_source or "pip", "client-cert", tls.client_cert,
                            exc, "one PEM file with the client's private key (not encrypted) "
                            "and certificate") from None  # fmt: skip
    return context


class _EncryptedKeyError(Exception):
    def __str__(self) -> str:
        return "its private key is encrypted, and nbenv does not ask for passwords"


def _no_password() -> str:
    raise _EncryptedKeyError


_CA_FILES = "a PEM file of CA certificates (or a directory of them, as c_rehash makes)"
_TRUST_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR")  # httpx reads them in this order


def _bad_file(source: str, option: str, value: str, exc: BaseException, wanted: str
              ) -> NetworkSettingError:  # fmt: skip
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return NetworkSettingError(source, option, value, wanted, reason=reason)
