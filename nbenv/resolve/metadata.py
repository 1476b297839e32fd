"""Core metadata of a distribution file, with as few bytes over the wire as possible.

Order of attempts for a wheel: PEP 658 `<url>.metadata`; an HTTP range read of the wheel's
zip central directory and then only its METADATA member; the whole wheel when the server
ignores ranges. An sdist is built into a wheel once (PEP 517) and read from that.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.metadata import parse_email
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from nbenv.errors import IndexAccessError, NbenvError, OfflineMissingError
from nbenv.net.http import HttpClient, HttpResponse
from nbenv.resolve.cache import CachePolicy, ResolveCache
from nbenv.resolve.model import DistFile

__all__ = ["CoreMetadata", "MetadataFetcher", "read_wheel_metadata"]

# The first range read of a wheel: its central directory and, as tools put .dist-info
# last, usually METADATA itself. Big wheels have big directories (pandas: 144 KiB, with
# METADATA 250 KiB from the end), so the read grows with the file: one round trip where
# 64 KiB took three, for a few milliseconds of bandwidth.
_TAIL = 64 * 1024
_TAIL_SHARE = 32  # of the file's size
_TAIL_MAX = 1024 * 1024
_MIN_CHUNK = 64 * 1024
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


@dataclass(frozen=True)
class CoreMetadata:
    name: str
    version: str
    requires_dist: tuple[Requirement, ...]
    requires_python: str | None
    provides_extra: tuple[str, ...]

    @classmethod
    def parse(cls, data: bytes, source: str) -> CoreMetadata:
        raw, _unparsed = parse_email(data)
        requirements = []
        for text in raw.get("requires_dist", []):
            try:
                requirements.append(Requirement(text))
            except InvalidRequirement:
                continue  # a broken dependency line in someone else's package: pip skips it too
        if "name" not in raw or "version" not in raw:
            raise NbenvError(f"{source}: metadata lacks Name or Version")
        return cls(
            name=raw["name"],
            version=raw["version"],
            requires_dist=tuple(requirements),
            requires_python=raw.get("requires_python") or None,
            provides_extra=tuple(canonicalize_name(e) for e in raw.get("provides_extra", [])),
        )


# what zipfile raises on bytes that are not (all of) a zip archive
_BROKEN_ZIP = (zipfile.BadZipFile, zlib.error, EOFError)


def read_wheel_metadata(archive: zipfile.ZipFile, filename: str) -> bytes:
    """METADATA of the wheel's own .dist-info (named after the wheel file)."""
    dist = filename.split("-")[0].lower()
    candidates = [
        name
        for name in archive.namelist()
        if name.count("/") == 1 and name.endswith(".dist-info/METADATA")
    ]
    for name in candidates:
        if name.split("-")[0].lower().replace(".", "_") == dist.replace(".", "_"):
            return archive.read(name)
    if len(candidates) == 1:
        return archive.read(candidates[0])
    raise NbenvError(f"{filename}: no .dist-info/METADATA in the wheel")


class _RangeReader(io.RawIOBase):
    """A seekable view of a remote file that fetches only the byte ranges zipfile reads."""

    def __init__(self, client: HttpClient, url: str, size: int, tail: bytes) -> None:
        self._client = client
        self._url = url
        self._size = size
        self._pos = 0
        self._chunks: list[tuple[int, bytes]] = [(size - len(tail), tail)]
        self.requests = 1

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _find(self, start: int, end: int) -> bytes | None:
        for offset, data in self._chunks:
            if offset <= start and end <= offset + len(data):
                return data[start - offset : end - offset]
        return None

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        start, end = self._pos, self._pos + want
        data = self._find(start, end)
        if data is None:
            fetch_end = min(self._size, max(end, start + _MIN_CHUNK))
            response = self._client.get(
                self._url, headers={"Range": f"bytes={start}-{fetch_end - 1}"}
            )
            self.requests += 1
            if response.status != 206:
                raise IndexAccessError(self._url, f"range request answered HTTP {response.status}")
            self._chunks.append((start, response.content))
            data = response.content[: end - start]
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


class MetadataFetcher:
    """Fetch, verify and cache core metadata. Thread-safe; blocking calls."""

    def __init__(
        self,
        client: HttpClient,
        cache: ResolveCache,
        build_sdist: Callable[[DistFile, bytes], Path] | None = None,
    ) -> None:
        self.client = client
        self.cache = cache
        self.build_sdist = build_sdist
        # a pool of its own: its tasks are awaited from the prefetcher's workers
        self._side = ThreadPoolExecutor(max_workers=16, thread_name_prefix="nbenv-tail")
        self.stats = {"pep658": 0, "range": 0, "whole": 0, "sdist": 0, "cached": 0}

    def close(self) -> None:
        self._side.shutdown(wait=False, cancel_futures=True)

    def get(self, file: DistFile) -> CoreMetadata:
        key = ResolveCache.metadata_key(file.url, file.sha256)
        data = self.cache.get_metadata(key)
        if data is not None:
            self.stats["cached"] += 1
        else:
            if self.cache.policy is CachePolicy.OFFLINE:
                raise OfflineMissingError([f"metadata of {file.filename} ({file.url})"])
            data = self._fetch(file)
            self.cache.put_metadata(key, data)
        return CoreMetadata.parse(data, file.filename)

    def _fetch(self, file: DistFile) -> bytes:
        if not file.is_wheel:
            return self._from_sdist(file)
        if file.core_metadata is False:
            return self._from_wheel(file, self._tail(file))
        if file.core_metadata:
            return self._pep658(file) or self._from_wheel(file, self._tail(file))
        # The index does not say whether `.metadata` exists (PyPI's JSON often does not):
        # ask for it and read the wheel's tail at once, and take whichever answers first.
        # Some mirrors take 0.1-0.3 s over a 404 they serve in 20 ms when it is a 200.
        answered = threading.Event()  # one way answered: the other may stop where it is
        probe = self._side.submit(self._pep658, file)
        ranged = self._side.submit(self._ranged, file, answered)
        pending: set[Future[Any]] = {probe, ranged}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                found: bytes | None = None if future.exception() else future.result()
                if found is not None:
                    answered.set()
                    return found
        data = ranged.result()  # neither way worked: this raises the range read's error
        assert data is not None  # None only once `answered`, and then we returned
        return data

    def _ranged(self, file: DistFile, answered: threading.Event) -> bytes | None:
        """The metadata from the wheel's tail; None if `answered` was set before the tail
        came (reading a big wheel's zip directory costs 10-40 ms that nobody would use)."""
        if answered.is_set():
            return None
        tail = self._tail(file)
        if answered.is_set():
            return None
        return self._from_wheel(file, tail)

    def _pep658(self, file: DistFile) -> bytes | None:
        response = self.client.get(file.url + ".metadata")
        if response.status != 200:
            return None
        _verify(response.content, file.core_metadata_hashes, file.url + ".metadata")
        self.stats["pep658"] += 1
        return response.content

    def _tail(self, file: DistFile) -> HttpResponse:
        size = min(max(_TAIL, (file.size or 0) // _TAIL_SHARE), _TAIL_MAX)
        return self.client.get(file.url, headers={"Range": f"bytes=-{size}"})

    def _from_wheel(self, file: DistFile, response: HttpResponse) -> bytes:
        if response.status == 200:  # ranges ignored: we got the whole wheel
            _verify(response.content, file.hashes, file.url)
            return self._from_bytes(file, response.content)
        if response.status != 206:
            response = self.client.get_ok(file.url)  # 416 for tiny files, odd servers
            return self._from_bytes(file, response.content)
        match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
        if not match:
            return self._from_bytes(file, self.client.get_ok(file.url).content)
        size = int(match.group(3))
        if int(match.group(1)) == 0 and int(match.group(2)) == size - 1:
            return self._from_bytes(file, response.content)
        reader = _RangeReader(self.client, file.url, size, response.content)
        try:
            with zipfile.ZipFile(io.BufferedReader(reader, buffer_size=8192)) as archive:
                data = read_wheel_metadata(archive, file.filename)
        except _BROKEN_ZIP:
            # Parts of a file cannot be checked against its hash; the whole file can, and
            # then the error says whether the index served other bytes or a broken wheel.
            return self._from_bytes(file, self.client.get_ok(file.url).content)
        self.stats["range"] += 1
        return data

    def _from_bytes(self, file: DistFile, content: bytes) -> bytes:
        _verify(content, file.hashes, file.url)
        self.stats["whole"] += 1
        try:
            with zipfile.ZipFile(io.BytesIO(content)) as archive:
                return read_wheel_metadata(archive, file.filename)
        except _BROKEN_ZIP as exc:
            raise NbenvError(
                f"{file.filename} ({file.url}) is not a readable wheel: {exc}"
            ) from None

    def _from_sdist(self, file: DistFile) -> bytes:
        if self.build_sdist is None:
            raise NbenvError(f"{file.filename}: building sdists is disabled")
        content = self.client.get_ok(file.url).content
        _verify(content, file.hashes, file.url)
        wheel = self.build_sdist(file, content)
        self.stats["sdist"] += 1
        with zipfile.ZipFile(wheel) as archive:
            return read_wheel_metadata(archive, wheel.name)


def _verify(content: bytes, hashes: tuple[tuple[str, str], ...], url: str) -> None:
    for algorithm, expected in hashes:
        if algorithm in hashlib.algorithms_guaranteed:
            actual = hashlib.new(algorithm, content).hexdigest()
            if actual != expected:
                raise IndexAccessError(
                    url, f"{algorithm} mismatch: the index says {expected}, got {actual}"
                )
            return
