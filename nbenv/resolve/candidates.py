"""Which file of which version can serve a target: tags, Requires-Python, yanks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
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

from nbenv.errors import IndexAccessError
from nbenv.resolve.cache import ResolveCache
from nbenv.resolve.index import ProjectPage, project_url
from nbenv.resolve.model import DistFile
from nbenv.resolve.target import Target

__all__ = [
    "Release",
    "TargetReleases",
    "files_by_version",
    "parse_filename",
    "python_ok",
    "releases_for_target",
]


@dataclass(frozen=True)
class Release:
    """One version of a project as seen from a target, with the file to use."""

    name: NormalizedName
    version: Version
    file: DistFile
    yanked: bool  # every usable file of this version is yanked


@dataclass(frozen=True)
class TargetReleases:
    page: ProjectPage
    usable: tuple[Release, ...]  # newest first


def python_ok(requires_python: str | None, target: Target) -> bool:
    return not requires_python or _python_ok(requires_python, target.python_full_version)


@lru_cache(maxsize=4096)
def _python_ok(requires_python: str, python: str) -> bool:
    try:
        spec = SpecifierSet(requires_python)
    except InvalidSpecifier:
        return True  # an unparsable constraint from the index: pip ignores it too
    return spec.contains(python, prereleases=True)


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


def releases_for_target(
    page: ProjectPage, target: Target, cache: ResolveCache | None = None
) -> TargetReleases:
    """Usable releases, newest first.

    Computed once per (page content, target) and kept in `cache`: a warm resolve then reads a
    few hundred entries instead of parsing thousands of files for other platforms.
    """
    key = hashlib.sha256(f"{_SUMMARY_FORMAT}\0{page.digest}\0{target.fingerprint}".encode())
    if cache is not None:
        data = cache.get_summary(key.hexdigest())
        if data is not None:
            try:
                return TargetReleases(page, _load_summary(page.name, data))
            except (ValueError, KeyError, TypeError):
                pass  # a summary from another nbenv version: compute it again
    try:
        usable = _compute(page, target)
    except IndexAccessError:
        # Only the page's outline is checked when it arrives (parsing waits until needed):
        # a page that fails now must not stay cached for the next run to fail on.
        if cache is not None:
            for source in page.sources:
                cache.forget_page(project_url(source.index, page.name))
        raise
    if cache is not None:
        cache.put_summary(key.hexdigest(), _dump_summary(usable))
    return TargetReleases(page, usable)


_SUMMARY_FORMAT = 1


def _dump_summary(releases: tuple[Release, ...]) -> bytes:
    rows = []
    for release in releases:
        file = dict(vars(release.file))  # flat: dataclasses.asdict's deep copy cost 0.1 s
        rows.append([str(release.version), file])
    return json.dumps(rows, separators=(",", ":")).encode()


def _load_summary(name: NormalizedName, data: bytes) -> tuple[Release, ...]:
    out = []
    for version, fields in json.loads(data):
        fields["hashes"] = tuple(tuple(pair) for pair in fields["hashes"])
        fields["core_metadata_hashes"] = tuple(tuple(p) for p in fields["core_metadata_hashes"])
        file = DistFile(**fields)
        out.append(Release(name, Version(version), file, yanked=file.yanked is not None))
    return tuple(out)


def _compute(page: ProjectPage, target: Target) -> tuple[Release, ...]:
    # Incompatible wheels are dropped on their tags before anything else is parsed. A
    # page repeats the same few tag strings ("cp311-cp311-manylinux_2_17_x86_64...") over
    # its versions: each is ranked once (set B's pages list 24,863 files).
    best: dict[Version, tuple[tuple[int, int, int], DistFile]] = {}
    tag_rank = target.tag_rank
    ranks: dict[str, int] = {}  # a wheel name's tags -> their best rank, or -1: none fits
    for filename, make, item in page.entries():
        if filename.endswith(".whl"):
            end = len(filename) - 4
            platform = filename.rfind("-", 0, end)
            tags = filename[filename.rfind("-", 0, filename.rfind("-", 0, platform)) + 1 : end]
            wheel_rank = ranks.get(tags)
            if wheel_rank is None:
                wheel_rank = ranks[tags] = _best_rank(tags, tag_rank)
            if wheel_rank < 0:
                continue  # most of a big page (Windows, macOS, ARM, other Pythons)
            rank = (0, wheel_rank)
        else:
            rank = (1, 0 if filename.endswith(".tar.gz") else 1)  # sdists build anywhere
        parsed = parse_filename(filename)
        if parsed is None or parsed[0] != page.name:
            continue
        version = parsed[1]
        current = best.get(version)
        if current is not None and current[0] <= (0, *rank):
            continue  # the best key this file could get does not beat the one kept
        file = make(item)
        if file.requires_python and not python_ok(file.requires_python, target):
            continue
        key = (1 if file.yanked is not None else 0, *rank)
        if current is None or key < current[0]:
            best[version] = (key, file)
    return tuple(
        Release(page.name, version, file, yanked=file.yanked is not None)
        for version, (_key, file) in sorted(best.items(), reverse=True)
    )


def _best_rank(tags: str, tag_rank: Mapping[str, int]) -> int:
    """The best (lowest) rank of the tags a wheel name's "python-abi-platform" part
    expands to (each part may be dotted: "py2.py3-none-any"); -1 when none fits."""
    python, _, rest = tags.partition("-")
    abi, _, platform = rest.partition("-")
    ranks = [
        tag_rank[tag]
        for i in python.split(".")
        for a in abi.split(".")
        for p in platform.split(".")
        if (tag := f"{i}-{a}-{p}") in tag_rank
    ]
    return min(ranks, default=-1)


def files_by_version(page: ProjectPage) -> dict[Version, list[DistFile]]:
    """Every file of every version, newest version first (for "what exists" messages)."""
    out: dict[Version, list[DistFile]] = {}
    for file in page.files:
        parsed = parse_filename(file.filename)
        if parsed is not None and parsed[0] == page.name:
            out.setdefault(parsed[1], []).append(file)
    return dict(sorted(out.items(), reverse=True))
