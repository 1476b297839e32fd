"""A local PEP 503/691 simple index over real files, with knobs for failure modes.

    with IndexServer() as server:
        server.add(wheel, pep658=True)
        httpx.get(server.url + "alpha/", headers={"Accept": JSON})

Serves `/simple/` (root), `/simple/<project>/`, `/files/<filename>` (with HTTP ranges) and
`/files/<filename>.metadata` (PEP 658, only for files added with `pep658=True`). Every
request is logged before its response is written, so a test may inspect `server.log` as
soon as its client returns.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import socket
import ssl
import struct
import sys
import tarfile
import threading
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from email.parser import HeaderParser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import quote, unquote, urlsplit

from packaging.version import InvalidVersion, Version

from .wheels import read_wheel_metadata, sha256_file

__all__ = [
    "HTML",
    "JSON",
    "Fault",
    "Index",
    "IndexFile",
    "IndexServer",
    "RequestRecord",
    "negotiate",
    "normalize",
]

JSON = "application/vnd.pypi.simple.v1+json"
HTML = "application/vnd.pypi.simple.v1+html"
_API_VERSION = "1.1"  # PEP 700: adds versions, size, upload-time

# What each accepted media type means: (format, Content-Type answered).
_MEDIA: dict[str, tuple[str, str]] = {
    JSON: ("json", JSON),
    "application/vnd.pypi.simple.latest+json": ("json", JSON),
    HTML: ("html", HTML),
    "application/vnd.pypi.simple.latest+html": ("html", HTML),
    "text/html": ("html", "text/html"),
}


def normalize(name: str) -> str:
    """PEP 503 name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def negotiate(accept: str | None, formats: Collection[str]) -> tuple[str, str] | None:
    """Pick (format, Content-Type) for an Accept header as PEP 691 describes; None -> 406.

    Highest q wins; equal q keeps the client's order. Wildcards get HTML (JSON if HTML is off).
    Nothing acceptable gets HTML when it is served, like PyPI's fallback.
    """
    html_default = ("html", "text/html")
    fallback = html_default if "html" in formats else None
    if not accept or not accept.strip():
        return html_default if "html" in formats else ("json", JSON)
    offers: list[tuple[float, int, str]] = []
    for order, item in enumerate(accept.split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media and quality > 0:
            offers.append((-quality, order, media.lower()))
    for _, _, media in sorted(offers):
        if media in _MEDIA and _MEDIA[media][0] in formats:
            return _MEDIA[media]
        if media in ("*/*", "text/*"):
            return html_default if "html" in formats else ("json", JSON)
        if media == "application/*" and "json" in formats:
            return ("json", JSON)
    return fallback


@dataclass(frozen=True)
class IndexFile:
    """One file as the index lists it."""

    path: Path
    filename: str
    name: str  # the project's display name, from the file's metadata
    version: str
    sha256: str
    size: int
    requires_python: str | None
    yanked: bool | str  # False, True (no reason) or the reason
    metadata: bytes | None  # served at `<url>.metadata` (PEP 658) when not None
    upload_time: str | None  # ISO 8601, e.g. 2024-01-01T00:00:00.000000Z

    @property
    def project(self) -> str:
        return normalize(self.name)

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")

    @property
    def metadata_sha256(self) -> str | None:
        if self.metadata is None:
            return None
        return hashlib.sha256(self.metadata).hexdigest()


def _read_core_metadata(path: Path) -> bytes:
    if path.name.endswith(".whl"):
        return read_wheel_metadata(path)
    if path.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                parts = member.name.split("/")
                if len(parts) == 2 and parts[1] == "PKG-INFO":
                    stream = archive.extractfile(member)
                    if stream is not None:
                        return stream.read()
        raise ValueError(f"{path.name} has no PKG-INFO")
    raise ValueError(f"Not a wheel or sdist: {path.name}")


def _version_key(version: str) -> tuple[int, Version | str]:
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


class Index:
    """Projects and their files; safe to read from server threads while a test adds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, IndexFile] = {}  # by filename, in the order added

    def add(
        self,
        file_path: Path,
        *,
        pep658: bool = False,
        yanked: bool | str = False,
        requires_python: str | None = None,
        upload_time: str | None = None,
    ) -> IndexFile:
        """List `file_path`. `requires_python` defaults to the file's own metadata."""
        raw = _read_core_metadata(file_path)
        headers = HeaderParser().parsestr(raw.decode("utf-8"))
        if pep658 and not file_path.name.endswith(".whl"):
            raise ValueError("PEP 658 metadata is only served for wheels here")
        entry = IndexFile(
            path=file_path,
            filename=file_path.name,
            name=headers["Name"],
            version=headers["Version"],
            sha256=sha256_file(file_path),
            size=file_path.stat().st_size,
            requires_python=(
                requires_python if requires_python is not None else headers["Requires-Python"]
            ),
            yanked=yanked,
            metadata=raw if pep658 else None,
            upload_time=upload_time,
        )
        with self._lock:
            self._files[entry.filename] = entry
        return entry

    def remove(self, filename: str) -> None:
        with self._lock:
            del self._files[filename]

    def file(self, filename: str) -> IndexFile | None:
        with self._lock:
            return self._files.get(filename)

    def all_files(self) -> list[IndexFile]:
        with self._lock:
            return list(self._files.values())

    def projects(self) -> dict[str, str]:
        """Normalized name -> display name (the first file's), sorted."""
        names: dict[str, str] = {}
        for entry in self.all_files():
            names.setdefault(entry.project, entry.name)
        return dict(sorted(names.items()))

    def files(self, project: str) -> list[IndexFile]:
        """Files of one project (any spelling), by version then filename."""
        wanted = normalize(project)
        found = [entry for entry in self.all_files() if entry.project == wanted]
        return sorted(found, key=lambda e: (_version_key(e.version), e.filename))

    def copy(self) -> Index:
        clone = Index()
        with self._lock:
            clone._files = dict(self._files)
        return clone


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str  # path and query as requested, before any redirect
    range: str | None  # the Range header
    authorization: bool  # whether an Authorization header was sent
    accept: str | None
    status: int


@dataclass
class _Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


@dataclass(frozen=True)
class Fault:
    """A misbehaviour for one request (see `IndexServer.inject`).

    reset        status and headers for the whole body, half of it, then the connection dies
                 (after `seconds`: a reset may discard bytes the client has not read yet)
    stall        nothing for `seconds`, then the normal answer (a client timeout fires first)
    truncate     the first half of the body as a complete response (Content-Length says so)
    corrupt      the body with bytes flipped, same length (what a bad mirror serves)
    long-length  Content-Length larger than the body, then the connection is closed
    short-length Content-Length smaller than the body, the whole body written anyway
    garbage      200 with `body` (default: text that is neither JSON nor HTML)
    redirect     302 to `location` + the requested path (another host: credentials must stay)
    """

    kind: str
    seconds: float = 0.0
    body: bytes = b"%PDF-1.4 this is not an index page\n"
    content_type: str = "text/plain"
    location: str = ""


_FAULT_KINDS = frozenset(
    {"reset", "stall", "truncate", "corrupt", "long-length", "short-length", "garbage", "redirect"}
)


class _RangeNotSatisfiable(Exception):
    pass


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Inclusive (first, last) for a single `bytes=` range; None means "send it all"."""
    if header is None:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # other units and multiple ranges: a server may answer with the whole file
    first_text, dash, last_text = spec.strip().partition("-")
    if not dash:
        return None
    if not first_text:
        if not last_text.isdigit():
            return None
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise _RangeNotSatisfiable
        return max(0, size - suffix), size - 1
    if not first_text.isdigit() or (last_text and not last_text.isdigit()):
        return None
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # syntactically invalid: ignored, per RFC 9110
    if first >= size:
        raise _RangeNotSatisfiable
    last = int(last_text) if last_text else size - 1
    return first, min(last, size - 1)


class IndexServer:
    """A threaded simple index on 127.0.0.1; knobs may be changed while it runs."""

    def __init__(
        self,
        index: Index | None = None,
        *,
        formats: Iterable[str] = ("json", "html"),
        auth: tuple[str, str] | None = None,
        latency: float = 0.0,
        no_range: bool = False,
        relative_urls: bool = False,
        fail_next: Mapping[str, Iterable[int]] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.index = index if index is not None else Index()
        self.tls = tls  # served over HTTPS with this server-side context
        self.formats: set[str] = set(formats)
        self.auth = auth
        self.latency = latency
        self._in_flight = 0
        self.max_in_flight = 0  # most requests waiting out `latency` at once
        self.no_range = no_range
        self.relative_urls = relative_urls
        self.fail_next: dict[str, list[int]] = {
            prefix: list(codes) for prefix, codes in (fail_next or {}).items()
        }
        self._defaults = (set(self.formats), auth, latency, no_range, relative_urls)
        self._baseline = self.index.copy()
        self._lock = threading.Lock()
        self.faults: dict[str, list[Fault]] = {}
        self._log: list[RequestRecord] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> IndexServer:
        if self._httpd is not None:
            return self
        self._baseline = self.index.copy()
        httpd = _QuietServer(("127.0.0.1", 0), _make_handler(self))
        if self.tls is not None:  # the handshake runs in each request's thread
            httpd.socket = self.tls.wrap_socket(
                httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> IndexServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def reset(self) -> None:
        """Knobs back to their constructor values, log cleared, files back to `start()`."""
        formats, auth, latency, no_range, relative_urls = self._defaults
        self.formats = set(formats)
        self.auth = auth
        self.latency = latency
        self.no_range = no_range
        self.relative_urls = relative_urls
        with self._lock:
            self.fail_next = {}
            self.faults = {}
            self.max_in_flight = 0
        self.index = self._baseline.copy()
        self.clear_log()

    # -- addresses -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the index server is not running")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The simple index base URL, with a trailing slash."""
        return f"{self.base_url}/simple/"

    def project_url(self, project: str) -> str:
        return f"{self.url}{normalize(project)}/"

    def file_url(self, filename: str) -> str:
        return f"{self.base_url}/files/{quote(filename)}"

    def url_with_auth(self) -> str:
        """`url` with the configured credentials embedded (for clients that take them so)."""
        if self.auth is None:
            return self.url
        user, password = (quote(part, safe="") for part in self.auth)
        return f"http://{user}:{password}@127.0.0.1:{self.port}/simple/"

    # -- index and knobs -------------------------------------------------------------------

    def add(
        self,
        file_path: Path,
        *,
        pep658: bool = False,
        yanked: bool | str = False,
        requires_python: str | None = None,
        upload_time: str | None = None,
    ) -> IndexFile:
        return self.index.add(
            file_path,
            pep658=pep658,
            yanked=yanked,
            requires_python=requires_python,
            upload_time=upload_time,
        )

    def fail(self, path_prefix: str, *statuses: int) -> None:
        """Answer the next requests under `path_prefix` with these statuses, in order."""
        with self._lock:
            self.fail_next.setdefault(path_prefix, []).extend(statuses)

    def inject(self, path_prefix: str, fault: Fault, times: int = 1) -> None:
        """Misbehave (see `Fault`) on the next `times` requests under `path_prefix`."""
        if fault.kind not in _FAULT_KINDS:
            raise ValueError(f"unknown fault {fault.kind!r}")
        with self._lock:
            self.faults.setdefault(path_prefix, []).extend([fault] * times)

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for prefix, faults in list(self.faults.items()):
                if path.startswith(prefix) and faults:
                    fault = faults.pop(0)
                    if not faults:
                        del self.faults[prefix]
                    return fault
        return None

    def _take_failure(self, path: str) -> int | None:
        with self._lock:
            for prefix, statuses in list(self.fail_next.items()):
                if path.startswith(prefix) and statuses:
                    status = statuses.pop(0)
                    if not statuses:
                        del self.fail_next[prefix]
                    return status
        return None

    # -- request log -----------------------------------------------------------------------

    @property
    def log(self) -> list[RequestRecord]:
        """A snapshot of every request so far, oldest first."""
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def requests(self, path_prefix: str = "/", method: str | None = None) -> list[RequestRecord]:
        return [
            record
            for record in self.log
            if record.path.startswith(path_prefix) and (method is None or record.method == method)
        ]

    def count(self, path_prefix: str = "/", method: str | None = None) -> int:
        return len(self.requests(path_prefix, method))

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)

    # -- responses -------------------------------------------------------------------------

    def _respond(self, method: str, raw_path: str, headers: Mapping[str, str]) -> _Response:
        if self.latency:
            with self._lock:
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
            time.sleep(self.latency)
            with self._lock:
                self._in_flight -= 1
        injected = self._take_failure(raw_path)
        if injected is not None:
            return _status(injected, retry_after=injected in (429, 503))
        if self.auth is not None and not self._authorized(headers.get("authorization")):
            response = _status(HTTPStatus.UNAUTHORIZED)
            response.headers.append(("WWW-Authenticate", 'Basic realm="nbenv-test-index"'))
            return response
        path = unquote(urlsplit(raw_path).path)
        if path == "/simple":
            return _redirect("/simple/")
        if path == "/simple/":
            return self._root(headers.get("accept"))
        if path.startswith("/simple/"):
            return self._project(path[len("/simple/") :], headers.get("accept"))
        if path.startswith("/files/"):
            return self._file(path[len("/files/") :], headers.get("range"))
        return _status(HTTPStatus.NOT_FOUND)

    def _authorized(self, header: str | None) -> bool:
        if header is None or self.auth is None:
            return False
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except ValueError:
            return False
        return tuple(decoded.split(":", 1)) == self.auth

    def _root(self, accept: str | None) -> _Response:
        chosen = negotiate(accept, self.formats)
        if chosen is None:
            return _status(HTTPStatus.NOT_ACCEPTABLE)
        fmt, content_type = chosen
        projects = self.index.projects()
        if fmt == "json":
            payload = {
                "meta": {"api-version": _API_VERSION},
                "projects": [{"name": name} for name in projects.values()],
            }
            body = json.dumps(payload).encode()
        else:
            links = "\n".join(
                f'    <a href="/simple/{norm}/">{html.escape(name)}</a><br />'
                for norm, name in projects.items()
            )
            body = _html_page("Simple index", links).encode()
        return _content(body, content_type)

    def _project(self, rest: str, accept: str | None) -> _Response:
        requested = rest.rstrip("/")
        if not requested or "/" in requested:
            return _status(HTTPStatus.NOT_FOUND)
        wanted = normalize(requested)
        files = self.index.files(wanted)
        if not files:
            return _status(HTTPStatus.NOT_FOUND)
        if requested != wanted or not rest.endswith("/"):
            return _redirect(f"/simple/{wanted}/")  # PyPI sends odd spellings to the canonical page
        chosen = negotiate(accept, self.formats)
        if chosen is None:
            return _status(HTTPStatus.NOT_ACCEPTABLE)
        fmt, content_type = chosen
        if fmt == "json":
            body = json.dumps(self._project_json(wanted, files)).encode()
        else:
            body = self._project_html(files[0].name, files).encode()
        return _content(body, content_type)

    def _listed_url(self, entry: IndexFile) -> str:
        if self.relative_urls:
            return f"../../files/{quote(entry.filename)}"
        return self.file_url(entry.filename)

    def _project_json(self, project: str, files: list[IndexFile]) -> dict[str, object]:
        listed: list[dict[str, object]] = []
        for entry in files:
            item: dict[str, object] = {
                "filename": entry.filename,
                "url": self._listed_url(entry),
                "hashes": {"sha256": entry.sha256},
                "requires-python": entry.requires_python,
                "yanked": entry.yanked if entry.yanked != "" else True,
                "size": entry.size,
            }
            if entry.upload_time is not None:
                item["upload-time"] = entry.upload_time
            if entry.metadata_sha256 is not None:
                # Only files that have it: the key is absent otherwise, as on real mirrors.
                item["core-metadata"] = {"sha256": entry.metadata_sha256}
                item["data-dist-info-metadata"] = {"sha256": entry.metadata_sha256}
            listed.append(item)
        versions = sorted({entry.version for entry in files}, key=_version_key)
        return {
            "meta": {"api-version": _API_VERSION},
            "name": project,
            "files": listed,
            "versions": versions,
        }

    def _project_html(self, name: str, files: list[IndexFile]) -> str:
        anchors = []
        for entry in files:
            href = f"{self._listed_url(entry)}#sha256={entry.sha256}"
            attributes = [f'href="{html.escape(href)}"']
            if entry.requires_python is not None:
                attributes.append(f'data-requires-python="{html.escape(entry.requires_python)}"')
            if entry.yanked is not False:
                reason = entry.yanked if isinstance(entry.yanked, str) else ""
                attributes.append(f'data-yanked="{html.escape(reason)}"')
            if entry.metadata_sha256 is not None:
                attributes.append(f'data-core-metadata="sha256={entry.metadata_sha256}"')
                attributes.append(f'data-dist-info-metadata="sha256={entry.metadata_sha256}"')
            anchors.append(f"    <a {' '.join(attributes)}>{html.escape(entry.filename)}</a><br />")
        return _html_page(f"Links for {name}", "\n".join(anchors))

    def _file(self, filename: str, range_header: str | None) -> _Response:
        if "/" in filename:
            return _status(HTTPStatus.NOT_FOUND)
        entry = self.index.file(filename)
        if entry is not None:
            data = entry.path.read_bytes()
        else:
            base = filename.removesuffix(".metadata")
            owner = self.index.file(base) if base != filename else None
            if owner is None or owner.metadata is None:
                return _status(HTTPStatus.NOT_FOUND)
            data = owner.metadata
        if self.no_range:
            return _content(data, "application/octet-stream")
        headers = [("Accept-Ranges", "bytes")]
        try:
            span = _parse_range(range_header, len(data))
        except _RangeNotSatisfiable:
            headers.append(("Content-Range", f"bytes */{len(data)}"))
            return _Response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, headers, b"")
        if span is None:
            return _content(data, "application/octet-stream", headers)
        first, last = span
        headers.append(("Content-Range", f"bytes {first}-{last}/{len(data)}"))
        response = _content(data[first : last + 1], "application/octet-stream", headers)
        response.status = HTTPStatus.PARTIAL_CONTENT
        return response


def _html_page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        f'    <meta name="pypi:repository-version" content="{_API_VERSION}">\n'
        f"    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n"
        f"    <h1>{html.escape(title)}</h1>\n{body}\n  </body>\n</html>\n"
    )


def _content(
    body: bytes, content_type: str, headers: list[tuple[str, str]] | None = None
) -> _Response:
    response = _Response(HTTPStatus.OK, list(headers or []), body)
    response.headers.append(("Content-Type", content_type))
    if content_type != "application/octet-stream":
        response.headers.append(("Vary", "Accept"))
    return response


def _status(status: int, *, retry_after: bool = False) -> _Response:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    response = _Response(status, [("Content-Type", "text/plain")], f"{status} {phrase}\n".encode())
    if retry_after:
        response.headers.append(("Retry-After", "0"))
    return response


def _redirect(location: str) -> _Response:
    response = _status(HTTPStatus.MOVED_PERMANENTLY)
    response.headers.append(("Location", location))
    return response


def _apply(fault: Fault, response: _Response, path: str) -> _Response:
    """The faulty version of a normal response (kinds that change what is sent)."""
    if fault.kind == "truncate":
        return _Response(
            response.status, response.headers, response.body[: len(response.body) // 2]
        )
    if fault.kind == "corrupt":
        body = bytes(b ^ 0xFF for b in response.body[:64]) + response.body[64:]
        return _Response(response.status, response.headers, body)
    if fault.kind == "garbage":
        return _Response(HTTPStatus.OK, [("Content-Type", fault.content_type)], fault.body)
    if fault.kind == "redirect":
        found = _status(HTTPStatus.FOUND)
        found.headers.append(("Location", fault.location.rstrip("/") + path))
        return found
    return response


def _hang_up(connection: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a dying proxy or server does."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True  # a stuck keep-alive connection must not block stop()

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients hang up mid-response (range probes, cancelled downloads); that is normal.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def _make_handler(owner: IndexServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as clients with connection pools expect
        server_version = "nbenv-test-index/1.0"
        timeout = 30
        # Headers and body go out in two writes; without this, Nagle's algorithm and delayed
        # ACKs add ~40 ms to every keep-alive request.
        disable_nagle_algorithm = True

        def _serve(self, method: str) -> None:
            headers = {key.lower(): value for key, value in self.headers.items()}
            fault = owner._take_fault(self.path)
            if fault is not None and fault.kind == "stall":
                time.sleep(fault.seconds)
            response = owner._respond(method, self.path, headers)
            if fault is not None and fault.kind not in ("stall", "reset", "long-length"):
                response = _apply(fault, response, self.path)
            owner._record(
                RequestRecord(
                    method=method,
                    path=self.path,
                    range=headers.get("range"),
                    authorization="authorization" in headers,
                    accept=headers.get("accept"),
                    status=int(response.status),
                )
            )
            self.send_response(response.status)
            for key, value in response.headers:
                self.send_header(key, value)
            length = len(response.body)
            if fault is not None and fault.kind == "long-length":
                length += 1000
            elif fault is not None and fault.kind == "short-length":
                length = max(1, length // 2)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            if method == "HEAD":
                return
            if fault is not None and fault.kind == "reset":
                self.wfile.write(response.body[: len(response.body) // 2])
                self.wfile.flush()
                time.sleep(fault.seconds)  # lets the client read it all before the reset
                _hang_up(self.connection)
                self.close_connection = True
                return
            self.wfile.write(response.body)
            if fault is not None and fault.kind in ("long-length", "short-length"):
                self.wfile.flush()
                self.close_connection = True

        def do_GET(self) -> None:
            self._serve("GET")

        def do_HEAD(self) -> None:
            self._serve("HEAD")

        def log_message(self, format: str, *args: object) -> None:
            pass  # the request log replaces stderr noise

    return Handler
