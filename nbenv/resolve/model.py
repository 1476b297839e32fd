"""Plain data that flows from the index through the resolver into the lock."""

from __future__ import annotations

from dataclasses import dataclass

from packaging.requirements import Requirement
from packaging.utils import NormalizedName
from packaging.version import Version

from nbenv.resolve.target import Target

__all__ = ["DistFile", "ProvidedDist", "Resolution", "ResolvedPackage"]


@dataclass(frozen=True)
class DistFile:
    """One file listed on an index page. URLs never carry credentials."""

    filename: str
    url: str
    index: str  # the index base URL the file was listed on
    hashes: tuple[tuple[str, str], ...] = ()  # sorted (algorithm, hexdigest)
    requires_python: str | None = None
    yanked: str | None = None  # None: not yanked; otherwise the reason ("" if none given)
    size: int | None = None
    upload_time: str | None = None  # ISO 8601 as the index gave it
    # PEP 658/714: True when the index says `<url>.metadata` exists; its hashes when given.
    core_metadata: bool | None = None  # None: the index did not say
    core_metadata_hashes: tuple[tuple[str, str], ...] = ()

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")

    @property
    def sha256(self) -> str | None:
        return dict(self.hashes).get("sha256")


@dataclass(frozen=True)
class ResolvedPackage:
    name: NormalizedName
    version: Version
    file: DistFile  # the wheel (or sdist, for sdist-only releases) chosen for the target
    requires_python: str | None
    dependencies: tuple[NormalizedName, ...]  # names it pulls in on the target


@dataclass(frozen=True)
class Resolution:
    """The packages chosen for one target, sorted by name."""

    target: Target
    requirements: tuple[Requirement, ...]
    packages: tuple[ResolvedPackage, ...]


@dataclass(frozen=True)
class ProvidedDist:
    """A Python dist already in the env (a conda package installed it): the PyPI pass takes
    it as it is, at this version, and installs nothing for it."""

    version: Version
    by: str  # what provides it, for messages: `the conda package purepy 1.0 pyh0_0`
