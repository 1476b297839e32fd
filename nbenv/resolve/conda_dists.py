"""The Python distributions a set of conda packages installs, from their `info/paths.json`.

Read from the package files, never guessed from conda names (conda's `pytorch` is PyPI's
`torch`; `python-dateutil` ships `python_dateutil-*.dist-info`). Only packages that can
hold a dist are read: noarch python ones, those that depend on `python`, and those that
declare a site-packages path (CEP 17); a package without an interpreter dependency has
nothing Python could import. `paths.json` comes from a local file for file:// channels,
and over HTTP by range requests (`.conda`: only the info part) or streaming until it is
found (`.tar.bz2`). Results are kept per package sha256, so a second solve reads nothing.
The file lists read are kept for the process too (`file_list`): the install's path check
(nbenv.conda_check) then reads no package a second time.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from packaging.utils import canonicalize_name

from nbenv.errors import CondaChannelError
from nbenv.files import atomic_write, sha256_file
from nbenv.report import Reporter
from nbenv.resolve.conda_model import CondaPackage
from nbenv.resolve.conda_runtime import clean_url, redact_channels, run_async

if TYPE_CHECKING:
    import rattler

__all__ = [
    "dists_by_package",
    "dists_in_paths",
    "file_list",
    "holds_python",
    "python_dists",
    "read_file_list",
]

_PYTHON_DEPENDENCY = re.compile(r"^python(?:[\s=<>!~]|$)", re.MULTILINE)
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


def holds_python(package: CondaPackage) -> bool:
    """Whether the package can install a Python dist (see the module's docstring)."""
    if package.noarch == "python" or package.python_site_packages_path:
        return True
    return _PYTHON_DEPENDENCY.search("\n".join(package.depends)) is not None


def python_dists(
    records: Sequence[rattler.RepoDataRecord],
    *,
    client: rattler.Client,
    cache: Path,
    reporter: Reporter,
) -> dict[str, str]:
    """normalized name -> version of every Python dist `records` install, sorted by name."""
    wanted = [r for r in records if holds_python(CondaPackage.from_record(r))]
    found: dict[str, str] = {}
    for dists in dists_by_package(wanted, client=client, cache=cache, reporter=reporter).values():
        found.update(dists)
    return dict(sorted(found.items()))


def dists_by_package(
    records: Sequence[rattler.RepoDataRecord],
    *,
    client: rattler.Client,
    cache: Path,
    reporter: Reporter,
) -> dict[str, dict[str, str]]:
    """conda package name -> the Python dists (name -> version) each of `records` installs;
    packages that install none are left out. Every record's file list is read (or found in
    the cache): pass only those that can hold a dist (`holds_python`)."""
    found: dict[str, dict[str, str]] = {}
    missing: list[rattler.RepoDataRecord] = []
    for record in records:
        known = _cached(cache, record)
        if known is None:
            missing.append(record)
        elif known:
            found[record.name.normalized] = known
    if missing:
        reporter.stage(_STAGE)
        results = run_async(_read_all(missing, client, reporter))
        for record, paths in zip(missing, results, strict=True):
            _keep_list(record, paths)
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
    url = record.url
    try:
        return await read_file_list(url, record.sha256.hex() if record.sha256 else None, client)
    except OSError as exc:
        raise CondaChannelError(
            clean_url(url), f"cannot read its file list ({redact_channels(str(exc))})"
        ) from None


async def read_file_list(url: str, sha256: str | None, client: rattler.Client) -> list[str]:
    """The file list (`info/paths.json`) of the package archive at `url`: a local file for
    file:// URLs, once its hash matched `sha256` (when given); over HTTP by range requests
    or streaming. Raises OSError, or rattler's own errors for remote failures."""
    from rattler.package import PathsJson

    found: PathsJson | None
    if url.startswith("file:"):
        local = Path(unquote(urlsplit(url).path))
        found = await asyncio.to_thread(_local_paths_json, local, sha256)
    else:
        found = await PathsJson.from_remote_url(client, url)
    if found is None:
        raise OSError("the package has no info/paths.json")
    return [str(entry.relative_path) for entry in found.paths]


def _local_paths_json(path: Path, sha256: str | None) -> rattler.package.PathsJson:
    from rattler.package import PathsJson

    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            raise OSError(f"sha256 {actual} differs from the channel's repodata")
    return PathsJson.from_package_archive(path)


def _key(record: rattler.RepoDataRecord) -> str | None:
    return record.sha256.hex() if record.sha256 else None


def _cached(cache: Path, record: rattler.RepoDataRecord) -> dict[str, str] | None:
    key = _key(record)
    if key is None:
        return None
    path = cache / f"{key}.json"
    known = _known.get(str(path))
    if known is not None:
        return dict(known)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        dists = {str(k): str(v) for k, v in data["dists"].items()}
    except (OSError, ValueError, KeyError, AttributeError):
        return None
    _remember(path, dists)
    return dict(dists)


def _store(cache: Path, record: rattler.RepoDataRecord, dists: dict[str, str]) -> None:
    key = _key(record)
    if key is None:
        return
    path = cache / f"{key}.json"
    atomic_write(path, json.dumps({"file": record.file_name, "dists": dists}).encode("utf-8"))
    _remember(path, dists)


def _remember(path: Path, dists: dict[str, str]) -> None:
    """Keep a cache file's content for the process: it is named for the package's sha256,
    so it never changes, and reading it again costs more than the rest of a warm solve."""
    if len(_known) >= _KNOWN_KEPT:
        _known.clear()
    _known[str(path)] = dict(dists)


_KNOWN_KEPT = 16384
_known: dict[str, dict[str, str]] = {}


def file_list(sha256: str) -> list[str] | None:
    """The file list this process read for the package archive of `sha256`, if any: read
    from the archive as conda_check would read it (a local one after its hash matched)."""
    paths = _lists.get(sha256)
    return None if paths is None else list(paths)


def _keep_list(record: rattler.RepoDataRecord, paths: list[str]) -> None:
    key = _key(record)
    if key is None:
        return
    if len(_lists) >= _LISTS_KEPT:
        _lists.clear()
    _lists[key] = tuple(paths)


_LISTS_KEPT = 4096
_lists: dict[str, tuple[str, ...]] = {}
