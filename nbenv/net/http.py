"""The one HTTP client: pooled connections, retries with backoff, auth, file:// URLs.

Every network access in nbenv goes through an `HttpClient` that is passed in, so tests hand
it a local index and nothing else reaches the network. It is safe to share between threads.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import httpx

from nbenv import __version__
from nbenv.errors import IndexAccessError
from nbenv.net.auth import Credentials, redact, split_credentials

__all__ = ["HttpClient", "HttpResponse"]

_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_TRANSIENT = (httpx.TransportError,)


@dataclass(frozen=True)
class HttpResponse:
    url: str  # final URL, without credentials
    status: int
    content: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


class HttpClient:
    def __init__(
        self,
        *,
        credentials: Credentials | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.25,
        max_connections: int = 32,
    ) -> None:
        self.credentials = credentials or Credentials()
        self.retries = retries
        self.backoff = backoff
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=limits,
            follow_redirects=True,
            headers={"User-Agent": f"nbenv/{__version__}"},
            trust_env=True,  # proxies and SSL_CERT_FILE like every other tool
        )

    def close(self) -> None:
        self._client.close()

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
        attempt = 0
        while True:
            try:
                response = self._client.get(clean, headers=dict(headers or {}), auth=auth)
            except _TRANSIENT as exc:
                if attempt >= self.retries:
                    raise IndexAccessError(redact(clean), _describe(exc)) from None
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


def _describe(exc: Exception) -> str:
    name = type(exc).__name__
    text = redact(str(exc))
    return f"{name}: {text}" if text else name


def _read_file(url: str, headers: Mapping[str, str]) -> HttpResponse:
    """file:// indexes (pip allows them): a directory means its index.html."""
    path = Path(url2pathname(unquote(urlsplit(url).path)))
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
