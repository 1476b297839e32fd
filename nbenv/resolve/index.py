"""Simple repository pages (PEP 503 HTML and PEP 691 JSON) into DistFile lists."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from html.parser import HTMLParser
from typing import Any, cast
from urllib.parse import urldefrag, urljoin

from packaging.utils import NormalizedName, canonicalize_name

from nbenv.errors import IndexAccessError, OfflineMissingError
from nbenv.net.auth import redact, strip_userinfo
from nbenv.net.http import HttpClient
from nbenv.resolve.cache import CachePolicy, ResolveCache
from nbenv.resolve.model import DistFile

__all__ = ["PageSource", "ProjectPage", "fetch_project_page", "parse_project_page", "project_url"]

ACCEPT = (
    "application/vnd.pypi.simple.v1+json, "
    "application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
)
_JSON = "application/vnd.pypi.simple.v1+json"
_HTML = frozenset({"text/html", "application/vnd.pypi.simple.v1+html", "application/xhtml+xml"})


@dataclass(frozen=True)
class PageSource:
    """One index's answer for a project, kept as bytes: parsed only when needed."""

    index: str  # credentials stripped
    url: str  # final page URL, for relative links
    content_type: str
    body: bytes
    sha256: str  # of body


@dataclass(frozen=True)
class ProjectPage:
    """A project's files across every index that lists it.

    Parsing thousands of file entries is the slow part of a warm resolve, so it happens
    lazily: the resolver usually reads a per-target summary keyed by `digest` instead.
    """

    name: NormalizedName
    sources: tuple[PageSource, ...]

    @cached_property
    def digest(self) -> str:
        h = hashlib.sha256(self.name.encode())
        for source in self.sources:
            h.update(b"\0" + source.index.encode() + b"\0" + source.url.encode() + b"\0")
            h.update(source.sha256.encode())
        return h.hexdigest()

    @cached_property
    def files(self) -> tuple[DistFile, ...]:
        return tuple(f for source in self.sources for f in _parse_source(source))

    def entries(self) -> Iterator[tuple[str, Callable[[Any], DistFile], Any]]:
        """(file name, make, item), in `files` order, where `make(item)` is its DistFile:
        a resolve for one target drops most files on their names (numpy lists 4,000+, a
        few fit), and making a DistFile for each was a third of a cold resolve's CPU."""
        if "files" in self.__dict__:
            for file in self.files:
                yield file.filename, _same, file
            return
        for source in self.sources:
            if not _is_json(source.content_type):
                for file in _parse_source(source):
                    yield file.filename, _same, file
                continue
            make = functools.partial(_checked_entry, source=source)
            for entry in _json_files(source):
                yield entry["filename"], make, entry


def project_url(index_url: str, name: str) -> str:
    base = index_url if index_url.endswith("/") else index_url + "/"
    return urljoin(base, canonicalize_name(name) + "/")


def never_asked(cache: ResolveCache, indexes: Sequence[str], names: Iterable[str]) -> bool:
    """Whether one of the projects `names` was never asked of `indexes` by an earlier run
    (no copy of its page in `cache`, of any age): its files are surely not cached yet."""
    for name in names:
        urls = [project_url(strip_userinfo(index), name) for index in indexes]
        if urls and not any(cache.has_page(url) for url in urls):
            return True
    return False


def _hashes(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping) or not value:
        return ()
    if len(value) == 1:  # the usual case, kept cheap: pages list thousands of files
        ((algorithm, digest),) = value.items()
        return ((str(algorithm).lower(), str(digest).lower()),)
    return tuple(sorted((str(k).lower(), str(v).lower()) for k, v in value.items()))


def _yanked(value: object) -> str | None:
    if value is None or value is False:
        return None
    if value is True:
        return ""
    return str(value)


def _core_metadata(value: object) -> tuple[bool | None, tuple[tuple[str, str], ...]]:
    if value is None:
        return None, ()
    if value is False:
        return False, ()
    if isinstance(value, Mapping):
        return True, _hashes(value)
    return bool(value), ()


def _same(file: DistFile) -> DistFile:
    return file


def _is_json(content_type: str) -> bool:
    return content_type == _JSON or content_type.endswith("+json")


def _json_files(source: PageSource) -> list[dict[str, Any]]:
    """The page's file entries, each with a string "filename" (checked here, once)."""
    try:
        listed = json.loads(source.body).get("files", [])
        if not all(isinstance(entry["filename"], str) for entry in listed):
            raise TypeError("a file name is not a string")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IndexAccessError(redact(source.url), f"malformed index page ({exc})") from None
    return cast("list[dict[str, Any]]", listed)


def _checked_entry(entry: Mapping[str, Any], source: PageSource) -> DistFile:
    try:
        return _json_entry(entry, source.url, source.index)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IndexAccessError(redact(source.url), f"malformed index page ({exc})") from None


def _parse_json(data: Mapping[str, Any], page_url: str, index: str) -> list[DistFile]:
    return [_json_entry(entry, page_url, index) for entry in data.get("files", [])]


def _json_entry(entry: Mapping[str, Any], page_url: str, index: str) -> DistFile:
    url = entry["url"]
    if not url.startswith(("https://", "http://")):  # urljoin is slow; PyPI's are absolute
        url = urljoin(page_url, url)
    fragment = ""
    if "#" in url:
        url, fragment = urldefrag(url)
    hashes = _hashes(entry.get("hashes"))
    if not hashes and fragment:
        hashes = _fragment_hash(fragment)
    meta = entry.get("core-metadata", entry.get("data-dist-info-metadata"))
    core, core_hashes = _core_metadata(meta)
    return DistFile(
        filename=entry["filename"],
        url=url,
        index=index,
        hashes=hashes,
        requires_python=entry.get("requires-python") or None,
        yanked=_yanked(entry.get("yanked")),
        size=entry.get("size"),
        upload_time=entry.get("upload-time"),
        core_metadata=core,
        core_metadata_hashes=core_hashes,
    )


def _fragment_hash(fragment: str) -> tuple[tuple[str, str], ...]:
    algorithm, _, digest = fragment.partition("=")
    if digest and algorithm in {"sha256", "sha384", "sha512", "md5", "sha1", "sha224"}:
        return ((algorithm, digest.lower()),)
    return ()


class _AnchorParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self._current: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "base" and self.base is None:
            self.base = dict(attrs).get("href")
        elif tag == "a":
            self._current = dict(attrs)
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._current is not None:
            self.anchors.append((self._current, "".join(self._text).strip()))
            self._current = None


def _parse_html(body: str, page_url: str, index: str) -> list[DistFile]:
    parser = _AnchorParser()
    parser.feed(body)
    base = urljoin(page_url, parser.base) if parser.base else page_url
    files = []
    for attrs, text in parser.anchors:
        href = attrs.get("href")
        if not href:
            continue
        url, fragment = urldefrag(urljoin(base, href))
        filename = text or url.rsplit("/", 1)[-1]
        meta_attr = attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
        core: bool | None = None
        core_hashes: tuple[tuple[str, str], ...] = ()
        if meta_attr is not None:
            core = meta_attr.lower() != "false"
            if core:
                core_hashes = _fragment_hash(meta_attr)
        files.append(
            DistFile(
                filename=filename,
                url=url,
                index=index,
                hashes=_fragment_hash(fragment),
                requires_python=attrs.get("data-requires-python") or None,
                yanked=(attrs.get("data-yanked") or "") if "data-yanked" in attrs else None,
                core_metadata=core,
                core_metadata_hashes=core_hashes,
            )
        )
    return files


def _check_page(url: str, content_type: str, body: bytes) -> None:
    """Refuse, before it is cached, a page no index would send (a login page, a proxy's
    error text, a cut-off download); the full parse stays lazy, so only cheap checks."""
    if content_type == _JSON or content_type.endswith("+json"):
        text = body.strip()
        if not (text.startswith(b"{") and text.endswith(b"}")):
            raise IndexAccessError(url, "the JSON index page is not a whole JSON object")
    elif content_type not in _HTML:
        raise IndexAccessError(
            url,
            f"the answer is {content_type!r}, neither a PEP 691 JSON nor an HTML index page;"
            " check the index URL",
        )


def _parse_source(source: PageSource) -> list[DistFile]:
    try:
        if _is_json(source.content_type):
            return _parse_json(json.loads(source.body), source.url, source.index)
        return _parse_html(source.body.decode("utf-8", "replace"), source.url, source.index)
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexAccessError(redact(source.url), f"malformed index page ({exc})") from None


def parse_project_page(
    name: str,
    body: bytes,
    content_type: str,
    page_url: str,
    index: str,
    sha256: str | None = None,
) -> ProjectPage:
    """A project page from one index; `index` is recorded on every file (credentials stripped)."""
    digest = sha256 or hashlib.sha256(body).hexdigest()
    source = PageSource(strip_userinfo(index), strip_userinfo(page_url), content_type, body, digest)
    return ProjectPage(canonicalize_name(name), (source,))


def fetch_project_page(
    client: HttpClient, cache: ResolveCache, index_url: str, name: str
) -> ProjectPage | None:
    """The project's page on one index, or None when the index does not know it."""
    url = project_url(strip_userinfo(index_url), name)
    cached = cache.get_page(url)
    if cached is None:
        if cache.policy is CachePolicy.OFFLINE:
            raise OfflineMissingError([f"index page {url}"])
        response = client.get(project_url(index_url, name), headers={"Accept": ACCEPT})
        if response.status == 404:
            cache.put_page(url, "not-found", b"")
            return None
        if response.status in (401, 403):
            client.get_ok(project_url(index_url, name))  # raises the actionable message
        if not 200 <= response.status < 300:
            raise IndexAccessError(url, f"HTTP {response.status}")
        content_type = response.content_type or "text/html"
        _check_page(url, content_type, response.content)
        digest = cache.put_page(url, content_type, response.content, final_url=response.url)
        body, final_url = response.content, response.url
    else:
        if cached.content_type == "not-found":
            return None
        content_type, body, final_url = cached.content_type, cached.body, cached.url
        digest = cached.sha256
    return parse_project_page(name, body, content_type, final_url, index_url, digest)
