"""Conda + PyPI in one env: conda is solved first, then the PyPI pass with conda's Python
fixed and the Python dists conda installs taken as they are.

Decisions:
- The conda solution's `python` (when the specs bring one) is the env's interpreter: the
  PyPI pass resolves for its X.Y.Z. Without one, the env is a venv from the chosen
  interpreter layered over the conda prefix, and the PyPI pass resolves for that.
- The dists conda installs (read from the packages' files, see conda_dists) are the only
  candidates for their names in the PyPI pass; nothing is installed for them, and a PyPI
  requirement they do not satisfy is a ProvidedConflictError naming both sides.
- ipykernel and ipywidgets (an env's kernel packages) join the PyPI pass like any other
  requirement: when the conda specs include them, conda's copies satisfy it and PyPI adds
  nothing; otherwise they come from PyPI into the same prefix.
- The env id hashes what gets installed: the platform and each conda package's sha256,
  plus the PyPI lock's id. Specs, channels and the request never enter it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from packaging.version import Version

from nbenv.errors import LockFileError, UsageError
from nbenv.lock import ENV_ID_LENGTH, Lock, build_lock, lock_from_dict
from nbenv.net.http import HttpClient
from nbenv.report import NullReporter, Reporter
from nbenv.resolve.cache import CachePolicy
from nbenv.resolve.conda_model import CondaRequest, CondaSolution
from nbenv.resolve.model import ProvidedDist
from nbenv.resolve.target import Target
from nbenv.settings import IndexSettings
from nbenv.spec import EnvRequest

__all__ = [
    "CONDA_LOCK_FILE",
    "MixedLock",
    "mixed_env_id",
    "provided_dists",
    "resolve_mixed",
    "wheel_platform",
]

CONDA_LOCK_FILE = "conda-lock.json"  # in an env dir, beside pylock.toml
_FORMAT = 1

# The wheel platform a conda subdir's machines take: the oldest systems conda-forge builds
# for (glibc 2.28 unless --glibc says), the same defaults as the conda solve's.
_WHEEL_PLATFORM = {
    "linux-64": "manylinux_{glibc}_x86_64",
    "linux-aarch64": "manylinux_{glibc}_aarch64",
    "linux-ppc64le": "manylinux_{glibc}_ppc64le",
    "osx-64": "macosx_10_15_x86_64",
    "osx-arm64": "macosx_11_0_arm64",
    "win-64": "win_amd64",
}


@dataclass(frozen=True)
class MixedLock:
    """What a conda or mixed env is built from: the conda solution and the PyPI pass (None:
    a bare conda prefix, no venv, no kernel)."""

    conda: CondaSolution
    pypi: Lock | None
    env_id: str

    @classmethod
    def of(cls, conda: CondaSolution, pypi: Lock | None) -> MixedLock:
        return cls(conda, pypi, mixed_env_id(conda, pypi))

    @property
    def layered(self) -> bool:
        """A venv over the conda prefix (conda brings no python, PyPI packages go on top)."""
        return self.conda.python_version is None and self.pypi is not None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "version": _FORMAT,
            "env-id": self.env_id,
            "conda": _no_none(self.conda.to_dict()),
        }
        if self.pypi is not None:
            data["pylock"] = dict(self.pypi.pylock.to_dict())
        return data

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True, default=str) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<conda lock>") -> MixedLock:
        if not isinstance(data.get("conda"), Mapping):
            raise LockFileError(source, "has no `conda` table, so it is no conda env lock.")
        try:
            conda = CondaSolution.from_dict(dict(data["conda"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise LockFileError(source, f"has an unreadable `conda` table ({exc}).") from None
        pylock = data.get("pylock")
        pypi = lock_from_dict(_with_times(pylock), source) if isinstance(pylock, Mapping) else None
        return cls.of(conda, pypi)

    @classmethod
    def load(cls, path: Path) -> MixedLock:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise LockFileError(str(path), "does not exist.") from None
        except (OSError, ValueError) as exc:
            raise LockFileError(str(path), f"cannot be read ({exc}).") from None
        return cls.loads(text, str(path))

    @classmethod
    def loads(cls, text: str, source: str = "<conda lock>") -> MixedLock:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise LockFileError(source, f"is not a readable JSON lock ({exc}).") from None
        if not isinstance(data, Mapping):
            raise LockFileError(source, "is not a JSON object.")
        return cls.from_dict(data, source)


def _no_none(value: Any) -> Any:
    """TOML (the notebook lock) has no null: absent keys read back as None."""
    if isinstance(value, Mapping):
        return {k: _no_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_no_none(v) for v in value]
    return value


def _with_times(table: Mapping[str, Any]) -> dict[str, Any]:
    """JSON holds PEP 751 `upload-time` as text; pylock wants datetimes back."""
    from datetime import datetime

    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, Mapping):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if key == "upload-time" and isinstance(value, str):
            try:
                return datetime.fromisoformat(value)
            except ValueError:
                return value
        return value

    return dict(walk(table))


def mixed_env_id(conda: CondaSolution, pypi: Lock | None) -> str:
    content = {
        "platform": conda.platform,
        "conda": sorted(p.sha256 for p in conda.packages),
        "pypi": pypi.env_id if pypi is not None else None,
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:ENV_ID_LENGTH]


def provided_dists(solution: CondaSolution) -> dict[str, ProvidedDist]:
    """The solution's Python dists as the PyPI pass takes them."""
    found = {}
    for name, version in solution.python_dists.items():
        owner = solution.package(solution.dist_packages.get(name, ""))
        by = f"the conda package {owner.describe()}" if owner else "a conda package of the env"
        found[name] = ProvidedDist(Version(version), by)
    return found


def wheel_platform(request: CondaRequest) -> str | None:
    """The wheel platform tag of the request's conda platform (None: this machine)."""
    if request.is_native:
        return None
    pattern = _WHEEL_PLATFORM.get(request.subdir)
    if pattern is None:
        raise UsageError(f"nbenv cannot resolve PyPI packages for the conda platform "
                         f"{request.subdir}")  # fmt: skip
    return pattern.format(glibc=(request.glibc or "2.28").replace(".", "_"))


def pypi_target(
    solution: CondaSolution, request: CondaRequest, pythons: Sequence[str], base: Target | None
) -> Target:
    """What the PyPI pass resolves for: conda's python, else the layered venv's (`base`)."""
    if solution.python_version is not None:
        major, minor, *rest = [*solution.python_version.split("."), "0"][:3]
        short = f"{major}.{minor}"
        if pythons and pythons[0] != short:
            raise UsageError(
                f"The conda packages bring Python {solution.python_version}, but the PyPI "
                f"side asks for --python {pythons[0]}: give the version once, with "
                f"`%%conda --python {pythons[0]}`."
            )
        patch = int(rest[0]) if rest and rest[0].isdigit() else None
        return Target(python=short, platform=wheel_platform(request), patch=patch)
    if not request.is_native:
        if not pythons:
            raise UsageError(
                f"Locking for {request.subdir}: say which Python, with `--python X.Y` or a "
                "`python` conda spec (this machine's interpreter may not be the one there)."
            )
        return Target(python=pythons[0], platform=wheel_platform(request))
    if base is None:
        raise UsageError("the conda packages bring no python and no interpreter was chosen")
    return base


def resolve_mixed(
    conda: CondaRequest,
    pypi: EnvRequest,
    *,
    base: Target | None,
    kernel_requirements: Sequence[str] = (),
    policy: CachePolicy = CachePolicy.DEFAULT,
    reporter: Reporter | None = None,
    client: HttpClient | None = None,
    settings: IndexSettings | None = None,
    cache_dir: Path | None = None,
) -> MixedLock:
    """Solve `conda`, then resolve `pypi` (plus `kernel_requirements`) on top of it. `base`
    is the target of the interpreter a venv would be layered from (None: conda's python
    must serve). With no PyPI requirement and no kernel, the env is the conda prefix alone."""
    from packaging.requirements import Requirement

    from nbenv.resolve.conda import solve
    from nbenv.resolve.pypi import resolve

    reporter = reporter or NullReporter()
    solution = solve(
        conda, cache_dir=cache_dir, reporter=reporter, offline=policy is CachePolicy.OFFLINE
    )
    if not pypi.requirements and not kernel_requirements:
        return MixedLock.of(solution, None)
    target = pypi_target(solution, conda, pypi.pythons, base)
    named = {Requirement(str(r)).name.lower() for r in pypi.requirements}
    extra = tuple(Requirement(r) for r in kernel_requirements
                  if Requirement(r).name.lower() not in named)  # fmt: skip
    full = replace(pypi, requirements=(*pypi.requirements, *extra), pythons=(), platforms=())
    resolutions = resolve(
        full,
        client=client,
        cache_root=cache_dir,
        policy=policy,
        reporter=reporter,
        settings=settings,
        targets=[target],
        provided=provided_dists(solution),
    )
    return MixedLock.of(solution, build_lock(resolutions, pypi))
