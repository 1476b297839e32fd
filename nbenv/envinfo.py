"""What is inside one env: its packages (version, source, size, what requires them) and the
requirement tree that answers "why is X here". Read from the env itself (installed
distributions' METADATA and RECORD, conda-meta records) and its lock (where each package
came from); `nbenv show` and the inspector both use it.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections import deque
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path
from typing import Literal

from packaging.markers import InvalidMarker, UndefinedEnvironmentName, default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from nbenv.files import atomic_write

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found]

__all__ = ["EnvPackages", "PackageInfo", "env_packages", "lock_packages"]


@dataclass(frozen=True)
class PackageInfo:
    name: str  # as the distribution spells it
    key: str  # canonical name
    version: str
    kind: Literal["pypi", "conda"]
    source: str  # the index (PyPI packages) or channel (conda packages) it came from
    size: int  # bytes of its installed files (RECORD / conda-meta), .pyc compiled later aside
    requires: tuple[str, ...]  # canonical names of the packages in this env it depends on
    required_by: tuple[str, ...] = ()
    requested: bool = False  # asked for directly (a root of the requirement tree)


@dataclass(frozen=True)
class EnvPackages:
    packages: tuple[PackageInfo, ...]  # sorted by canonical name
    roots: tuple[str, ...]  # canonical names asked for directly
    _by_key: dict[str, PackageInfo] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_key.update({p.key: p for p in self.packages})

    def get(self, name: str) -> PackageInfo | None:
        return self._by_key.get(str(canonicalize_name(name)))

    def why(self, name: str, limit: int = 10) -> list[tuple[str, ...]]:
        """Chains from a requested package down to `name` (shortest first): why it is here.
        `[(name,)]` when it was asked for itself; [] when nothing requires it."""
        target = str(canonicalize_name(name))
        if target not in self._by_key:
            return []
        paths: list[tuple[str, ...]] = []
        queue: deque[tuple[str, ...]] = deque([(target,)])
        while queue and len(paths) < limit:
            chain = queue.popleft()
            head = self._by_key[chain[0]]
            if head.requested:
                paths.append(chain)
            for parent in head.required_by:
                if parent not in chain:  # dependency cycles exist (rarely)
                    queue.append((parent, *chain))
        return [tuple(self._by_key[k].name for k in p) for p in paths]

    def tree(self, max_depth: int = 12) -> list[tuple[int, str, bool]]:
        """(depth, package label, shown before) rows of the requirement tree from the roots;
        a package already expanded is listed again but not expanded twice."""
        rows: list[tuple[int, str, bool]] = []
        expanded: set[str] = set()

        def walk(key: str, depth: int) -> None:
            info = self._by_key[key]
            again = key in expanded
            rows.append((depth, f"{info.name} {info.version}", again))
            if again or depth >= max_depth:
                return
            expanded.add(key)
            for child in info.requires:
                walk(child, depth + 1)

        for root in self.roots:
            if root in self._by_key:
                walk(root, 0)
        for info in self.packages:  # anything no root reaches (installed by hand, say)
            if info.key not in expanded and not info.required_by and info.key not in self.roots:
                walk(info.key, 0)
        return rows


def env_packages(
    env_dir: Path, requirements: tuple[str, ...], python: str, lock_path: Path | None = None
) -> EnvPackages:
    """The packages of the env at `env_dir`; `requirements` (what was asked) are the roots,
    `python` (X.Y.Z) evaluates the markers of their dependencies."""
    sources = _lock_sources(lock_path) if lock_path else {}
    found: dict[str, tuple[PackageInfo, list[Requirement]]] = {}
    for info, deps in _conda_packages(env_dir):
        found[info.key] = (info, deps)
    for info, deps in _python_dists(env_dir, sources):
        found.setdefault(info.key, (info, deps))  # a conda package provides it already
    roots: list[str] = []
    extras: dict[str, set[str]] = {}
    for text in requirements:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        key = str(canonicalize_name(req.name))
        roots.append(key)
        extras.setdefault(key, set()).update(req.extras)
    # Every env nbenv builds for a kernel also gets these: roots when present.
    for extra_root in ("ipykernel", "ipywidgets"):
        if extra_root in found and extra_root not in roots:
            roots.append(extra_root)
    edges = _edges(found, roots, extras, python)
    required_by: dict[str, set[str]] = {}
    for parent, children in edges.items():
        for child in children:
            required_by.setdefault(child, set()).add(parent)
    packages = []
    for key in sorted(found):
        info = found[key][0]
        packages.append(
            PackageInfo(
                name=info.name, key=key, version=info.version, kind=info.kind,
                source=info.source, size=info.size, requires=tuple(sorted(edges.get(key, ()))),
                required_by=tuple(sorted(required_by.get(key, ()))), requested=key in roots,
            )
        )  # fmt: skip
    return EnvPackages(tuple(packages), tuple(roots))


def _edges(
    found: dict[str, tuple[PackageInfo, list[Requirement]]],
    roots: list[str],
    extras: dict[str, set[str]],
    python: str,
) -> dict[str, set[str]]:
    """parent -> children among installed packages, markers evaluated for this env; extras
    a parent asks of a child bring the child's extra dependencies (to a fixed point)."""
    base: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    base["python_full_version"] = python
    base["python_version"] = ".".join(python.split(".")[:2])
    edges: dict[str, set[str]] = {}
    changed = True
    while changed:
        changed = False
        for key, (_info, deps) in found.items():
            wanted = {""} | extras.get(key, set())
            for dep in deps:
                child = str(canonicalize_name(dep.name))
                if child not in found or child == key:
                    continue
                if dep.marker is not None and not any(
                    _evaluates(dep, {**base, "extra": extra}) for extra in wanted
                ):
                    continue
                if child not in edges.setdefault(key, set()):
                    edges[key].add(child)
                    changed = True
                if not dep.extras <= extras.setdefault(child, set()):
                    extras[child] |= dep.extras
                    changed = True
    return edges


def _evaluates(req: Requirement, environment: dict[str, str]) -> bool:
    try:
        return bool(req.marker and req.marker.evaluate(environment))
    except (InvalidMarker, UndefinedEnvironmentName):
        return False


def _lock_table(lock_path: Path) -> list[dict[str, object]] | None:
    # tomllib alone: the lock was validated when the env was built, and a listing of 50
    # envs must not validate 50 locks
    try:
        data = tomllib.loads(lock_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    packages = data.get("packages", [])
    return [p for p in packages if isinstance(p, dict)] if isinstance(packages, list) else []


_PACKAGES_CACHE = ".nbenv-packages.json"


def lock_packages(lock_path: Path) -> list[dict[str, str]] | None:
    """[{name, version}] of the env's lock; None when it has no readable lock.

    Kept beside the lock (`.nbenv-packages.json`, keyed by the lock's size and mtime): an
    env's lock never changes, and parsing 50 locks' TOML is most of a listing's time."""
    cache = lock_path.with_name(_PACKAGES_CACHE)
    try:
        st = lock_path.stat()
    except OSError:
        return None
    stamp = [st.st_size, st.st_mtime_ns]
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
        if data.get("stamp") == stamp and isinstance(data.get("packages"), list):
            return [{"name": str(p[0]), "version": str(p[1])} for p in data["packages"]]
    except (OSError, ValueError, AttributeError, IndexError, TypeError):
        pass
    table = _lock_table(lock_path)
    if table is None:
        return None
    packages = [{"name": str(p.get("name")), "version": str(p.get("version"))} for p in table]
    rows = [[p["name"], p["version"]] for p in packages]
    with contextlib.suppress(OSError):  # a read-only store still answers
        data = json.dumps({"stamp": stamp, "packages": rows}).encode()
        atomic_write(cache, data, make_parents=False)
    return packages


def _lock_sources(lock_path: Path) -> dict[str, str]:
    """canonical name -> the index it was locked from."""
    out: dict[str, str] = {}
    for package in _lock_table(lock_path) or []:
        if isinstance(package.get("name"), str):
            out[canonicalize_name(str(package["name"]))] = str(package.get("index") or "")
    return out


def _site_packages(env_dir: Path) -> list[Path]:
    return sorted(env_dir.glob("lib/python*/site-packages")) + sorted(
        env_dir.glob("Lib/site-packages")
    )


def _python_dists(
    env_dir: Path, sources: dict[str, str]
) -> list[tuple[PackageInfo, list[Requirement]]]:
    out = []
    for site in _site_packages(env_dir):
        for dist_info in sorted(site.glob("*.dist-info")):
            try:
                meta = HeaderParser().parsestr(
                    (dist_info / "METADATA").read_text(encoding="utf-8", errors="replace")
                )
            except OSError:
                continue
            name, version = meta.get("Name"), meta.get("Version")
            if not name or not version:
                continue
            installer = _read(dist_info / "INSTALLER").strip()
            if installer == "conda":
                continue  # listed with its conda package
            deps = []
            for text in meta.get_all("Requires-Dist") or ():
                try:
                    deps.append(Requirement(text))
                except InvalidRequirement:
                    continue
            key = str(canonicalize_name(name))
            info = PackageInfo(name, key, version, "pypi", sources.get(key, installer or "?"),
                               _record_size(dist_info / "RECORD"), ())  # fmt: skip
            out.append((info, deps))
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _record_size(record: Path) -> int:
    total = 0
    for line in _read(record).splitlines():
        size = line.rsplit(",", 1)[-1]
        if size.isdigit():
            total += int(size)
    return total


def _conda_packages(env_dir: Path) -> list[tuple[PackageInfo, list[Requirement]]]:
    """conda-meta/<name>-<version>-<build>.json records of a conda (or mixed) env."""
    out = []
    for path in sorted((env_dir / "conda-meta").glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or not data.get("name"):
            continue
        paths = (data.get("paths_data") or {}).get("paths") or []
        size = sum(int(p.get("size_in_bytes") or 0) for p in paths if isinstance(p, dict))
        deps = []
        for spec in data.get("depends") or ():
            name = str(spec).split()[0]
            try:
                deps.append(Requirement(name))
            except InvalidRequirement:
                continue
        name = str(data["name"])
        source = str(data.get("channel") or data.get("url") or "")
        version = str(data.get("version", ""))
        key = str(canonicalize_name(name))
        info = PackageInfo(
            name, key, version, "conda", source, size or int(data.get("size") or 0), ()
        )
        out.append((info, deps))
    return out
