"""The Python distributions a set of conda packages installs, from their `info/paths.json`.

Read from the package files, never guessed from conda names (conda's `pytorch` is PyPI's
`torch`; `python-dateutil` ships `python_dateutil-*.dist-info`). Only packages that can
hold a dist are read: noarch python ones, those that depend on `python`, and those that
declare a site-packages path (CEP 17); a package without an interpreter dependency has
nothing Python could import. `paths.json` comes from a local file for file:// channels,
and over HTTP by range requests (`.conda`: only the info part) or streaming until it is
found (`.tar.bz2`). Results are kept per package sha256, so a second solve reads nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from packaging.utils import canonicalize_name

from nbenv.errors import CondaChannelError
from nbenv.report import Reporter
from nbenv.resolve.conda_runtime import clean_url, redact_channels, run_async

if TYPE_CHECKING:
    import rattler

__all__ = ["dists_by_package", "dists_in_paths", "python_dists"]

_DIST_INFO = re.compile(r"(?:^|/)site-packages/([^/]+)\.(dist-info|egg-info)(?:/|$)")
_STAGE = "reading conda package contents"


def dists_in_paths(paths: Iterable[str]) -> dict[str, str]:
    """`lib/python3.11/site-packages/foo_bar-1.0.dist-info/METADATA` -> {"foo-bar": "1.0"}."""
    found: dict[str, str] = {}
    for path in paths:
        match = _DIST_INFO.search(path.replace("\\", "/"))
        if match is None:
            continue
        stem, kind = match.groups()
        name, _, rest = stem.partition("-")
        # egg-info may carry a python tag: `foo-1.0-py3.11.egg-info`
        version = rest.split("-py", 1)[0] if kind == "egg-info" else rest
        if name and version:
            found[canonicalize_name(name)] = version
    return found


def _holds_python(record: rattler.RepoDataRecord) -> bool:
    if record.noarch.python or record.python_site_packages_path:
        return True
    return any(re.split(r"[\s=<>!~]", d, maxsplit=1)[0] == "python" for d in record.depends)


def python_dists(
    records: Sequence[rattler.RepoDataRecord],
    *,
    client: rattler.Client,
    cache: Path,
    reporter: Reporter,
) -> dict[str, str]:
    """normalized name -> version of every Python dist `records` install, sorted by name."""
    found: dict[str, str] = {}
    for dists in dists_by_package(records, client=client, cache=cache, reporter=reporter).values():
        found.update(dists)
    return dict(sorted(found.items()))


def dists_by_package(
    records: Sequence[rattler.RepoDataRecord],
    *,
    client: rattler.Client,
    cache: Path,
    reporter: Reporter,
) -> dict[str, dict[str, str]]:
    """conda package name -> the Python dists (name -> version) it installs; packages that
    install none are left out."""
    wanted = [r for r in records if _holds_python(r)]
    found: dict[str, dict[str, str]] = {}
    missing: list[rattler.RepoDataRecord] = []
    for record in wanted:
        known = _cached(cache, record)
        if known is None:
            missing.append(record)
        elif known:
            found[record.name.normalized] = known
    if missing:
        reporter.stage(_STAGE)
        results = run_async(_read_all(missing, client, reporter))
        for record, paths in zip(missing, results, strict=True):
            dists = dists_in_paths(paths)
            _store(cache, record, dists)
            if dists:
                found[record.name.normalized] = dists
    return dict(sorted(found.items()))


async def _read_all(
    records: Sequence[rattler.RepoDataRecord], client: rattler.Client, reporter: Reporter
) -> list[list[str]]:
    done = 0
    limit = asyncio.Semaphore(16)

    async def one(record: rattler.RepoDataRecord) -> list[str]:
        nonlocal done
        async with limit:
            paths = await _read_paths(record, client)
        done += 1
        reporter.progress(_STAGE, done, len(records))
        return paths

    return list(await asyncio.gather(*(one(r) for r in records)))


async def _read_paths(record: rattler.RepoDataRecord, client: rattler.Client) -> list[str]:
    from rattler.package import PathsJson

    url = record.url
    try:
        if url.startswith("file:"):
            local = Path(unquote(urlsplit(url).path))
            _verify(local, record)
            paths = PathsJson.from_package_archive(local)
        else:
            remote = await PathsJson.from_remote_url(client, url)
            if remote is None:
                raise OSError("the package has no info/paths.json")
            paths = remote
    except OSError as exc:
        raise CondaChannelError(
            clean_url(url), f"cannot read its file list ({redact_channels(str(exc))})"
        ) from None
    return [str(entry.relative_path) for entry in paths.paths]


def _verify(path: Path, record: rattler.RepoDataRecord) -> None:
    if record.sha256 is None:
        return
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    if digest.digest() != record.sha256:
        raise OSError(f"sha256 {digest.hexdigest()} differs from the channel's repodata")


def _key(record: rattler.RepoDataRecord) -> str | None:
    return record.sha256.hex() if record.sha256 else None


def _cached(cache: Path, record: rattler.RepoDataRecord) -> dict[str, str] | None:
    key = _key(record)
    if key is None:
        return None
    try:
        data = json.loads((cache / f"{key}.json").read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in data["dists"].items()}
    except (OSError, ValueError, KeyError, AttributeError):
        return None


def _store(cache: Path, record: rattler.RepoDataRecord, dists: dict[str, str]) -> None:
    key = _key(record)
    if key is None:
        return
    cache.mkdir(parents=True, exist_ok=True)
    temp = cache / f".{key}.{secrets.token_hex(4)}.tmp"
    temp.write_text(json.dumps({"file": record.file_name, "dists": dists}), encoding="utf-8")
    temp.replace(cache / f"{key}.json")
