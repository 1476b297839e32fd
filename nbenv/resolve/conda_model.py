"""Plain data of the conda pass: the request, the solved packages, the solution.

URLs in CondaPackage and CondaSolution never carry credentials; both are JSON-able
(`to_dict`/`from_dict`) for locks, and a CondaPackage rebuilds the rattler record that
`rattler.install` takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nbenv.errors import CondaSolveError
from nbenv.resolve.conda_runtime import clean_url

if TYPE_CHECKING:
    import rattler

__all__ = ["DEFAULT_CHANNELS", "CondaPackage", "CondaRequest", "CondaSolution", "current_subdir"]

DEFAULT_CHANNELS = ("conda-forge",)


def current_subdir() -> str:
    """This machine's conda subdir (`linux-64`, `osx-arm64`, ...)."""
    import rattler

    return str(rattler.Subdir.current())


@dataclass(frozen=True)
class CondaRequest:
    """What a `%%conda` header line asks for. `channels` may carry credentials: it is never
    written anywhere (use `public_channels`)."""

    specs: tuple[str, ...]
    channels: tuple[str, ...] = ()  # empty: DEFAULT_CHANNELS
    platform: str | None = None  # a conda subdir; None: this machine
    cuda: str | None = None
    glibc: str | None = None
    osx: str | None = None
    python: str | None = None  # X.Y; `python X.Y.*` is then one of `specs`

    @property
    def effective_channels(self) -> tuple[str, ...]:
        return self.channels or DEFAULT_CHANNELS

    @property
    def public_channels(self) -> tuple[str, ...]:
        return tuple(clean_url(c) for c in self.effective_channels)

    @property
    def subdir(self) -> str:
        return self.platform or current_subdir()

    @property
    def is_native(self) -> bool:
        return self.platform is None or self.platform == current_subdir()


@dataclass(frozen=True)
class CondaPackage:
    """One solved conda package; URLs carry no credentials. JSON-able (`to_dict`)."""

    name: str
    version: str
    build: str
    build_number: int
    subdir: str
    channel: str
    url: str
    filename: str
    sha256: str
    md5: str | None = None
    size: int | None = None
    depends: tuple[str, ...] = ()
    constrains: tuple[str, ...] = ()
    noarch: str | None = None  # "python" | "generic" | None
    license: str | None = None
    python_site_packages_path: str | None = None

    def describe(self) -> str:
        return f"{self.name} {self.version} {self.build}"

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CondaPackage:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("depends", "constrains"):
            known[key] = tuple(known.get(key) or ())
        return cls(**known)

    @classmethod
    def from_record(cls, record: rattler.RepoDataRecord) -> CondaPackage:
        if record.sha256 is None:
            raise CondaSolveError(
                (), f"{record.file_name} from {clean_url(record.channel)} has no sha256 in "
                "the channel's repodata; nbenv verifies every package by sha256."
            )  # fmt: skip
        noarch = record.noarch
        return cls(
            name=record.name.normalized,
            version=str(record.version),
            build=str(record.build),
            build_number=record.build_number,
            subdir=record.subdir,
            channel=clean_url(record.channel or ""),
            url=clean_url(record.url),
            filename=record.file_name,
            sha256=record.sha256.hex(),
            md5=record.md5.hex() if record.md5 else None,
            size=record.size,
            depends=tuple(record.depends),
            constrains=tuple(record.constrains),
            noarch=None if noarch.none else "python" if noarch.python else "generic",
            license=record.license,
            python_site_packages_path=record.python_site_packages_path,
        )

    def to_record(self, url: str | None = None) -> rattler.RepoDataRecord:
        """The rattler record to install; `url` replaces ours (one with credentials)."""
        import rattler

        package = rattler.PackageRecord(
            name=self.name,
            version=self.version,
            build=rattler.BuildString.new_unchecked(self.build),
            build_number=self.build_number,
            subdir=self.subdir,
            noarch=self.noarch,  # type: ignore[arg-type]  # "python" | "generic" | None
            depends=list(self.depends),
            constrains=list(self.constrains),
            sha256=bytes.fromhex(self.sha256),
            md5=bytes.fromhex(self.md5) if self.md5 else None,
            size=self.size,
            license=self.license,
            python_site_packages_path=self.python_site_packages_path,
        )
        return rattler.RepoDataRecord(package, self.filename, url or self.url, self.channel)


@dataclass(frozen=True)
class CondaSolution:
    """The packages one solve chose for one platform, sorted by name."""

    platform: str  # conda subdir
    channels: tuple[str, ...]  # credentials stripped
    specs: tuple[str, ...]
    virtual_packages: tuple[str, ...]  # "__cuda=12.4=0": what the solve assumed
    packages: tuple[CondaPackage, ...]
    python_version: str | None = None  # of the `python` package, when solved
    # normalized name -> version of every Python dist the packages install
    python_dists: dict[str, str] = field(default_factory=dict, hash=False)
    # normalized dist name -> the conda package that installs it
    dist_packages: dict[str, str] = field(default_factory=dict, hash=False)

    def package(self, name: str) -> CondaPackage | None:
        return next((p for p in self.packages if p.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "channels": list(self.channels),
            "specs": list(self.specs),
            "virtual-packages": list(self.virtual_packages),
            "python-version": self.python_version,
            "python-dists": dict(sorted(self.python_dists.items())),
            "dist-packages": dict(sorted(self.dist_packages.items())),
            "packages": [p.to_dict() for p in self.packages],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CondaSolution:
        return cls(
            platform=data["platform"],
            channels=tuple(data.get("channels", ())),
            specs=tuple(data.get("specs", ())),
            virtual_packages=tuple(data.get("virtual-packages", ())),
            packages=tuple(CondaPackage.from_dict(p) for p in data.get("packages", ())),
            python_version=data.get("python-version"),
            python_dists=dict(data.get("python-dists") or {}),
            dist_packages=dict(data.get("dist-packages") or {}),
        )
