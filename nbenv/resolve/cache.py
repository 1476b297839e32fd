"""On-disk cache of index pages and package metadata under NBENV_HOME/cache.

Index pages change (new releases) and the index sends no validators, so a page is reused
for `page_ttl` seconds; `refresh` refetches, `offline` takes whatever is cached. Metadata is
keyed by the file's sha256 (immutable), so it never expires.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CachePolicy", "CachedPage", "ResolveCache"]


class CachePolicy(enum.Enum):
    DEFAULT = "default"
    REFRESH = "refresh"
    OFFLINE = "offline"


@dataclass(frozen=True)
class CachedPage:
    url: str
    content_type: str
    body: bytes
    fetched: float


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ResolveCache:
    def __init__(
        self, root: Path, policy: CachePolicy = CachePolicy.DEFAULT, page_ttl: float = 600.0
    ) -> None:
        self.root = root
        self.policy = policy
        self.page_ttl = page_ttl

    def _page_path(self, url: str) -> Path:
        key = _key(url)
        return self.root / "pages" / key[:2] / key

    def get_page(self, url: str) -> CachedPage | None:
        """A cached page usable under the policy (refresh: never; offline: any age)."""
        if self.policy is CachePolicy.REFRESH:
            return None
        path = self._page_path(url)
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        header, _, body = raw.partition(b"\n")
        try:
            meta = json.loads(header)
        except ValueError:
            return None  # a torn or foreign file is a miss, never an error
        page = CachedPage(meta["url"], meta["content_type"], body, float(meta["fetched"]))
        if self.policy is CachePolicy.DEFAULT and time.time() - page.fetched > self.page_ttl:
            return None
        return page

    def put_page(
        self, url: str, content_type: str, body: bytes, final_url: str | None = None
    ) -> None:
        """Store under the requested `url`; `final_url` (after redirects) resolves links."""
        meta = {"url": final_url or url, "content_type": content_type, "fetched": time.time()}
        header = json.dumps(meta)
        _atomic_write(self._page_path(url), header.encode() + b"\n" + body)

    def _metadata_path(self, key: str) -> Path:
        return self.root / "metadata" / key[:2] / key

    def get_metadata(self, key: str) -> bytes | None:
        try:
            return self._metadata_path(key).read_bytes()
        except OSError:
            return None

    def put_metadata(self, key: str, data: bytes) -> None:
        _atomic_write(self._metadata_path(key), data)

    @staticmethod
    def metadata_key(url: str, sha256: str | None) -> str:
        return sha256 if sha256 else _key(url)
