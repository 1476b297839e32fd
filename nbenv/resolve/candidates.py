"""Which file of which version can serve a target: tags, Requires-Python, yanks."""

from __future__ import annotations

from dataclasses import dataclass

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from nbenv.resolve.index import ProjectPage
from nbenv.resolve.model import DistFile
from nbenv.resolve.target import Target

__all__ = ["Release", "TargetReleases", "python_ok", "releases_for_target"]


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


def _version_of(name: NormalizedName, filename: str) -> Version | None:
    """The file's version, or None when it is not a wheel or sdist of `name`."""
    try:
        if filename.endswith(".whl"):
            wheel_name, version, _build, _tags = parse_wheel_filename(filename)
        else:
            wheel_name, version = parse_sdist_filename(filename)
        return version if wheel_name == name else None
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None


def _rank(file: DistFile, target: Target) -> tuple[int, int] | None:
    """Lower is better; wheels by tag priority, then sdists. None: unusable here."""
    if file.filename.endswith(".whl"):
        wheel_tags = parse_wheel_filename(file.filename)[3]
        ranks = [target.tag_priority[t] for t in wheel_tags if t in target.tag_priority]
        return (0, min(ranks)) if ranks else None
    # sdists can be built anywhere; .tar.gz is the standard format, .zip legacy
    return (1, 0 if file.filename.endswith(".tar.gz") else 1)


def releases_for_target(page: ProjectPage, target: Target) -> TargetReleases:
    by_version: dict[Version, list[DistFile]] = {}
    for file in page.files:
        version = _version_of(page.name, file.filename)
        if version is not None:
            by_version.setdefault(version, []).append(file)
    usable = []
    for version in sorted(by_version, reverse=True):
        best: tuple[tuple[int, int, int], DistFile] | None = None
        for file in by_version[version]:
            rank = _rank(file, target)
            if rank is None or not python_ok(file.requires_python, target):
                continue
            key = (1 if file.yanked is not None else 0, *rank)
            if best is None or key < best[0]:
                best = (key, file)
        if best is not None:
            file = best[1]
            usable.append(Release(page.name, version, file, yanked=file.yanked is not None))
    versions = tuple(sorted(by_version, reverse=True))
    names = {v: tuple(sorted(f.filename for f in by_version[v])) for v in versions}
    return TargetReleases(tuple(usable), versions, names)
