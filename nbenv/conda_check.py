"""Refuse conda packages whose file list escapes the prefix, before rattler links them.

py-rattler 0.28 panics on an absolute path in a package's `info/paths.json` while linking,
and rayon turns the panic into an abort of the whole process (a Jupyter kernel included):
nothing can catch it. So every package's paths are checked first: no absolute path, no
drive, no `..` component (conda packages never need one).

Keep it cheap, it runs on every create: a package found safe is remembered by its sha256
(in this process, and as an empty marker file under NBENV cache `conda/checked/`), so each
package is read once per machine. The file list comes from where rattler will link it:
rattler's extracted package cache when its entry holds this sha256, else the archive
(a local file for file:// channels, hashed first; range requests or streaming over HTTP),
read once per process: the solve's read of a Python-holding package serves here too.
Those HTTP reads cannot be checked against the sha256 (only whole archives can): a channel
that answers them with another file list than its archive holds could still get a package
past this check, and then rattler would abort, but nothing would be written outside.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from nbenv.errors import CondaInstallError, UnsafeCondaPackageError
from nbenv.resolve.conda_dists import file_list, read_file_list
from nbenv.resolve.conda_model import CondaPackage
from nbenv.resolve.conda_runtime import redact_channels, run_async

if TYPE_CHECKING:
    import rattler

__all__ = ["check_packages", "escaping_path"]

_DRIVE = re.compile(r"^[A-Za-z]:")
_safe: set[str] = set()  # sha256 of packages found safe in this process


def escaping_path(paths: Iterable[str]) -> str | None:
    """The first path that would land outside the prefix, if any."""
    for path in paths:
        text = path.replace("\\", "/")
        if not text or text.startswith("/") or _DRIVE.match(text) or ".." in text.split("/"):
            return path
    return None


def check_packages(
    packages: Sequence[CondaPackage], pkgs_dir: Path, client: rattler.Client, prefix: str
) -> None:
    """Raise UnsafeCondaPackageError for the first package that names a path outside the
    prefix. `pkgs_dir` is rattler's package cache (its parent holds the verdicts); `prefix`
    names the env being built in other errors."""
    marks = pkgs_dir.parent / "checked"
    todo = []
    for package in packages:
        if package.sha256 in _safe:
            continue
        if (marks / package.sha256).exists():
            _safe.add(package.sha256)
        else:
            todo.append(package)
    if not todo:
        return
    # rattler's extracted copy when it vouches for it (what rattler would link), else the
    # list the solve read from the same archive in this process, else a read of our own
    listed = {p.sha256: _from_cache(p, pkgs_dir) for p in todo}
    for package in todo:
        if listed[package.sha256] is None:
            listed[package.sha256] = file_list(package.sha256)
    fetch = [p for p in todo if listed[p.sha256] is None]
    if fetch:
        read = run_async(_read_all(fetch, client, prefix))
        listed.update((p.sha256, paths) for p, paths in zip(fetch, read, strict=True))
    for package in todo:
        paths = listed[package.sha256] or []
        bad = escaping_path(paths)
        if bad is not None:
            raise UnsafeCondaPackageError(package.filename, bad)
    marks.mkdir(parents=True, exist_ok=True)
    for package in todo:
        (marks / package.sha256).touch()
        _safe.add(package.sha256)


async def _read_all(
    packages: Sequence[CondaPackage], client: rattler.Client, prefix: str
) -> list[list[str]]:
    limit = asyncio.Semaphore(16)

    async def one(package: CondaPackage) -> list[str]:
        async with limit:
            return await _paths(package, client, prefix)

    return list(await asyncio.gather(*(one(p) for p in packages)))


async def _paths(package: CondaPackage, client: rattler.Client, prefix: str) -> list[str]:
    try:
        return await read_file_list(package.url, package.sha256, client)
    except Exception as exc:  # rattler raises its own classes for I/O and format errors
        reason = f"cannot read the file list of {package.filename} ({redact_channels(str(exc))})"
        raise CondaInstallError(prefix, reason) from None


def _from_cache(package: CondaPackage, pkgs_dir: Path) -> list[str] | None:
    """The file list of rattler's extracted copy, if that copy is of this very archive:
    rattler's `<stem>.lock` ends with the sha256 of what it extracted (and it links from
    the copy only then). None when the cache cannot vouch for it."""
    stem = f"{package.name}-{package.version}-{package.build}"
    try:
        lock = (pkgs_dir / f"{stem}.lock").read_bytes()
        if len(lock) != 40 or lock[8:].hex() != package.sha256:
            return None
        info = pkgs_dir / stem / "info"
        try:
            data = json.loads((info / "paths.json").read_text(encoding="utf-8"))
            return [str(entry["_path"]) for entry in data["paths"]]
        except FileNotFoundError:  # old packages list their files in info/files only
            return (info / "files").read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError, KeyError, TypeError):
        return None
