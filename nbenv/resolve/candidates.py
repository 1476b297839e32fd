"""Which file of which version can serve a target: tags, Requires-Python, yanks."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import (
    InvalidSdistFilename,
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
)
from packaging.version import InvalidVersion, Version

from nbenv.resolve.index import ProjectPage
from nbenv.resolve.model import DistFile
from nbenv.resolve.target import Target

__all__ = ["Release", "TargetReleases", "parse_filename", "python_ok", "releases_for_target"]


@dataclass(frozen=True)
class Release:
    """One version of a project as seen from a target, with the file to use."""

    name: NormalizedName
    version: Version
    file: DistFile
    yanked: bool  # every usable file of this version is yanked


@dataclass(frozen=True)
class TargetReleases:
    usable: tuple[Release, ...]  # newest first
    all_versions: tuple[Version, ...]  # every version listed, newest first
    files_by_version: dict[Version, tuple[str, ...]]  # for "what exists" messages


def python_ok(requires_python: str | None, target: Target) -> bool:
    if not requires_python:
        return True
    try:
        spec = SpecifierSet(requires_python)
    except InvalidSpecifier:
        return True  # an unparsable constraint from the index: pip ignores it too
    return spec.contains(target.python_full_version, prereleases=True)


@lru_cache(maxsize=1 << 16)
def _parse_version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


@lru_cache(maxsize=1 << 17)
def parse_filename(filename: str) -> tuple[NormalizedName, Version, frozenset[str] | None] | None:
    """(project, version, wheel tag strings or None for an sdist); None if neither.

    A fast path over the file names of big index pages (numpy lists thousands); the
    strict parsers of packaging.utils are used for sdists, whose names are ambiguous.
    """
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")
        if len(parts) not in (5, 6):
            return None
        version = _parse_version(parts[1])
        if version is None:
            return None
        python, abi, plat = parts[-3:]
        tags = frozenset(
            f"{i}-{a}-{p}"
            for i in python.split(".")
            for a in abi.split(".")
            for p in plat.split(".")
        )
        return canonicalize_name(parts[0]), version, tags
    try:
        name, version = parse_sdist_filename(filename)
    except (InvalidSdistFilename, InvalidVersion):
        return None
    return name, version, None


def _rank(tags: frozenset[str] | None, filename: str, target: Target) -> tuple[int, int] | None:
    """Lower is better; wheels by tag priority, then sdists. None: unusable here."""
    if tags is not None:
        ranks = [target.tag_rank[t] for t in tags if t in target.tag_rank]
        return (0, min(ranks)) if ranks else None
    # sdists can be built anywhere; .tar.gz is the standard format, .zip legacy
    return (1, 0 if filename.endswith(".tar.gz") else 1)


def releases_for_target(page: ProjectPage, target: Target) -> TargetReleases:
    by_version: dict[Version, list[tuple[DistFile, frozenset[str] | None]]] = {}
    for file in page.files:
        parsed = parse_filename(file.filename)
        if parsed is not None and parsed[0] == page.name:
            by_version.setdefault(parsed[1], []).append((file, parsed[2]))
    usable = []
    for version in sorted(by_version, reverse=True):
        best: tuple[tuple[int, int, int], DistFile] | None = None
        for file, tags in by_version[version]:
            rank = _rank(tags, file.filename, target)
            if rank is None or not python_ok(file.requires_python, target):
                continue
            key = (1 if file.yanked is not None else 0, *rank)
            if best is None or key < best[0]:
                best = (key, file)
        if best is not None:
            file = best[1]
            usable.append(Release(page.name, version, file, yanked=file.yanked is not None))
    versions = tuple(sorted(by_version, reverse=True))
    names = {v: tuple(sorted(f.filename for f, _ in by_version[v])) for v in versions}
    return TargetReleases(tuple(usable), versions, names)
