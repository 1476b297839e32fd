"""On-disk cache of index pages and package metadata under NBENV_HOME/cache.

Index pages change (new releases) and the index sends no validators, so a page is reused
for `page_ttl` seconds; `refresh` refetches, `offline` takes whatever is cached. Metadata is
keyed by the file's sha256 (immutable), so it never expires.
"""

from __future__ import annotations

import enum
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from nbenv.files import atomic_write

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
    sha256: str  # of body, so nobody hashes megabytes of JSON again
    fresh: bool  # usable without asking the index again, under the policy


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


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

    def get_page(self, url: str, *, stale_ok: bool = False) -> CachedPage | None:
        """A cached page usable under the policy (refresh: never; offline: any age).

        `stale_ok` returns any copy, whatever the policy: good enough to guess from."""
        if self.policy is CachePolicy.REFRESH and not stale_ok:
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
        expired = time.time() - float(meta["fetched"]) > self.page_ttl
        fresh = self.policy is CachePolicy.OFFLINE or (
            self.policy is CachePolicy.DEFAULT and not expired
        )
        if not fresh and not stale_ok:
            return None
        digest = meta.get("sha256") or hashlib.sha256(body).hexdigest()
        return CachedPage(meta["url"], meta["content_type"], body, digest, fresh)

    def has_page(self, url: str) -> bool:
        """Whether a copy of the page is here, of any age (nothing is read)."""
        return self._page_path(url).exists()

    def put_page(
        self, url: str, content_type: str, body: bytes, final_url: str | None = None
    ) -> str:
        """Store under the requested `url`; `final_url` (after redirects) resolves links.
        Returns the body's sha256."""
        digest = hashlib.sha256(body).hexdigest()
        meta = {
            "url": final_url or url,
            "content_type": content_type,
            "fetched": time.time(),
            "sha256": digest,
        }
        atomic_write(self._page_path(url), json.dumps(meta).encode() + b"\n" + body)
        return digest

    def forget_page(self, url: str) -> None:
        """Drop the stored page of `url` (it could not be parsed: ask the index again)."""
        self._page_path(url).unlink(missing_ok=True)

    def _metadata_path(self, key: str) -> Path:
        return self.root / "metadata" / key[:2] / key

    def get_metadata(self, key: str) -> bytes | None:
        try:
            return self._metadata_path(key).read_bytes()
        except OSError:
            return None

    def put_metadata(self, key: str, data: bytes) -> None:
        atomic_write(self._metadata_path(key), data)

    def _summary_path(self, key: str) -> Path:
        return self.root / "summaries" / key[:2] / key

    def get_summary(self, key: str) -> bytes | None:
        """Derived data keyed by the hash of what it was derived from (never stale)."""
        try:
            return self._summary_path(key).read_bytes()
        except OSError:
            return None

    def put_summary(self, key: str, data: bytes) -> None:
        atomic_write(self._summary_path(key), data)

    @staticmethod
    def metadata_key(url: str, sha256: str | None) -> str:
        return sha256 if sha256 else _key(url)
