"""pip's find-links: a directory of files, or an HTML page of links, with no per-project pages.

Each location is listed once; a project's files are served as a synthesized PEP 691 page so
the rest of the resolver treats them like any index.
"""

from __future__ import annotations

import hashlib
import json
import threading

from packaging.utils import NormalizedName

from nbenv.files import sha256_file
from nbenv.net.auth import strip_userinfo
from nbenv.net.http import HttpClient, file_url_to_path
from nbenv.resolve.cache import ResolveCache
from nbenv.resolve.candidates import parse_filename
from nbenv.resolve.index import PageSource, ProjectPage, parse_project_page

__all__ = ["FlatLinks"]

_JSON = "application/vnd.pypi.simple.v1+json"


class FlatLinks:
    """Every find-links location, listed lazily and once. Thread-safe."""

    def __init__(self, client: HttpClient, cache: ResolveCache, locations: tuple[str, ...]) -> None:
        self.client = client
        self.cache = cache
        self.locations = locations
        self._lock = threading.Lock()
        self._listing: dict[str, list[tuple[NormalizedName, str, str, dict[str, str]]]] = {}

    def _files(self, location: str) -> list[tuple[NormalizedName, str, str, dict[str, str]]]:
        """(project, filename, url) for every distribution at `location`."""
        with self._lock:
            cached = self._listing.get(location)
        if cached is not None:
            return cached
        found: list[tuple[NormalizedName, str, str, dict[str, str]]] = []
        if location.startswith("file:"):
            folder = file_url_to_path(location)
            if folder.is_dir():
                for path in sorted(folder.iterdir()):
                    parsed = parse_filename(path.name)
                    if parsed is not None and path.is_file():
                        found.append((parsed[0], path.name, path.resolve().as_uri(), {}))
        else:
            response = self.client.get_ok(location)
            page = parse_project_page(
                "links", response.content, "text/html", response.url, location
            )
            for file in page.files:
                parsed = parse_filename(file.filename)
                if parsed is not None:
                    found.append((parsed[0], file.filename, file.url, dict(file.hashes)))
        with self._lock:
            self._listing[location] = found
        return found

    def page(self, location: str, name: NormalizedName) -> ProjectPage | None:
        """A synthesized page of `name`'s files at `location`; None when it has none."""
        files = [f for f in self._files(location) if f[0] == name]
        if not files:
            return None
        entries = [
            {"filename": filename, "url": url, "hashes": self._hashes(url, hashes)}
            for _project, filename, url, hashes in files
        ]
        body = json.dumps({"name": name, "files": entries}, sort_keys=True).encode()
        clean = strip_userinfo(location)
        digest = hashlib.sha256(body).hexdigest()
        return ProjectPage(name, (PageSource(clean, clean, _JSON, body, digest),))

    def _hashes(self, url: str, known: dict[str, str]) -> dict[str, str]:
        """Local files are hashed once (a lock needs sha256), remembered by size and mtime."""
        if known or not url.startswith("file:"):
            return known
        path = file_url_to_path(url)
        stat = path.stat()
        key = hashlib.sha256(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()
        cached = self.cache.get_summary(key)
        if cached is not None:
            return {"sha256": cached.decode()}
        digest = sha256_file(path)
        self.cache.put_summary(key, digest.encode())
        return {"sha256": digest}
