"""A locked env in the formats other tools read: pip requirements with hashes, pylock.toml,
a conda environment.yml with a `pip:` section, and Metaflow `@pypi` decorator arguments.
Conda and mixed envs export their conda packages too: environment.yml lists them (pinned to
version and build) under their channels; Metaflow gets `@conda` (and, for a mixed env,
`@conda` + `@pypi` on one step, which only the Netflix extension supports).

Every format pins every package of the lock (the kernel packages nbenv adds included): the
point is the same env elsewhere, not a looser request that resolves differently later.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from packaging.pylock import Package, PackageSdist, PackageWheel

from nbenv.cellspec import CellDeclaration
from nbenv.errors import UsageError
from nbenv.lock import Lock, load_lock

if TYPE_CHECKING:  # conda's model pulls in asyncio and rattler's helpers: not for `--help`
    from nbenv.resolve.conda_model import CondaPackage, CondaSolution
    from nbenv.resolve.mixed import MixedLock

__all__ = ["FORMATS", "ExportSource", "Format", "export_lock", "find_export_source"]

Format = Literal["requirements", "pylock", "environment-yml", "metaflow"]
FORMATS: tuple[str, ...] = get_args(Format)
PYPI = "https://pypi.org/simple/"
_SAFE_YAML = re.compile(r"^[A-Za-z0-9_.\-=<>!~,*+ ]+$")  # plain scalar needs no quoting


@dataclass(frozen=True)
class ExportSource:
    lock: Lock | MixedLock
    label: str  # where it came from, for people: `ml-demo`, `analysis.ipynb: pandas`
    name: str | None = None  # a human env name, when the store has one
    python: str | None = None  # X.Y, when known better than from the lock

    @property
    def pypi(self) -> Lock | None:
        return self.lock if isinstance(self.lock, Lock) else self.lock.pypi

    @property
    def conda(self) -> CondaSolution | None:
        return None if isinstance(self.lock, Lock) else self.lock.conda

    @property
    def env_id(self) -> str:
        return self.lock.env_id

    @property
    def pypi_packages(self) -> list[Package]:
        pypi = self.pypi
        return list(pypi.pylock.packages) if pypi is not None else []


def find_export_source(target: str, *, env: str | None = None) -> ExportSource:
    """NOTEBOOK.ipynb (its lock; `env` picks one of several), a pylock.toml file, or an env
    name / id / id prefix from the store."""
    if target.endswith(".ipynb"):
        return _from_notebook(Path(target), env)
    if env is not None:
        raise UsageError("--env picks an environment of a notebook; give NOTEBOOK.ipynb")
    path = Path(target)
    if target.endswith(".toml") and path.is_file():
        return ExportSource(load_lock(path), str(path))
    if target.endswith(".json") and path.is_file():
        from nbenv.resolve.mixed import MixedLock

        return ExportSource(MixedLock.load(path), str(path))
    from nbenv.conda_envs import load_env_lock
    from nbenv.store import LOCK_FILE, Store

    store = Store()
    env_id = store.resolve_ref(target)
    record = store.record(env_id)
    names = sorted(n for n, i in store.aliases().items() if i == env_id)
    name = names[0] if names else record.name
    python = ".".join(record.python.split(".")[:2]) or None
    lock: Lock | MixedLock | None = load_env_lock(store.path(env_id))
    if lock is None:
        lock = load_lock(store.path(env_id) / LOCK_FILE)
    return ExportSource(lock, name or "", name, python)


def _from_notebook(notebook: Path, env: str | None) -> ExportSource:
    from nbenv.notebook import declarations
    from nbenv.notebook_lock import notebook_location, open_lock

    found = declarations(notebook)
    lock = open_lock(notebook_location(notebook))
    if not found:
        raise UsageError(f"{notebook} declares no environment (%%pypi, %pypi): nothing to export")
    chosen = found
    if env is not None:
        chosen = [d for d in found if d.key.startswith(env) or d.describe() == env]
        if not chosen:
            raise UsageError(f"--env {env!r} matches no environment of {notebook}:\n" +
                             _listing(found))  # fmt: skip
    if len(chosen) > 1:
        raise UsageError(
            f"{notebook} declares {len(chosen)} environments; choose one with --env KEY:\n"
            + _listing(chosen)
        )
    declaration = chosen[0]
    locked = lock.get(declaration.key)
    if locked is None:
        raise UsageError(
            f"`{declaration.describe()}` of {notebook} is not locked yet: run "
            f"`nbenv lock {notebook}` first."
        )
    return ExportSource(locked, f"{notebook.name}: {declaration.describe()}")


def _listing(found: Sequence[CellDeclaration]) -> str:
    return "\n".join(f"  {d.key}  {d.describe()}" for d in found)


def export_lock(source: ExportSource, fmt: str) -> str:
    """The text of `source` in format `fmt` (one of FORMATS)."""
    if fmt in ("pylock", "requirements") and source.pypi is None:
        raise UsageError(f"{source.label or source.env_id} holds conda packages only: export it "
                         "as environment-yml or metaflow")  # fmt: skip
    if fmt == "pylock":
        assert source.pypi is not None
        return source.pypi.dumps()
    if fmt == "requirements":
        return _requirements(source)
    if fmt == "environment-yml":
        return _environment_yml(source)
    if fmt == "metaflow":
        return _metaflow(source)
    raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _header(source: ExportSource) -> str:
    label = f" ({source.label})" if source.label else ""
    return f"# nbenv env {source.env_id}{label}"


def _pin(package: Package) -> str:
    pin = f"{package.name}=={package.version}"
    return f"{pin} ; {package.marker}" if package.marker is not None else pin


def _indexes(lock: Lock | None) -> list[str]:
    if lock is None:
        return []
    indexes = sorted({p.index for p in lock.pylock.packages if p.index})
    # PyPI first when present: it is pip's default and must stay the --index-url.
    return sorted(indexes, key=lambda i: i.rstrip("/") != PYPI.rstrip("/"))


def _index_options(lock: Lock | None) -> list[str]:
    indexes = _indexes(lock)
    if not indexes or indexes == [PYPI] or indexes == [PYPI.rstrip("/")]:
        return []
    first, *rest = indexes
    return [f"--index-url {first}", *(f"--extra-index-url {i}" for i in rest)]


def _hashes(package: Package) -> list[str]:
    files: list[PackageWheel | PackageSdist] = [*(package.wheels or ())]
    files += [package.sdist] if package.sdist else []
    return sorted(dict.fromkeys(f.hashes["sha256"] for f in files if "sha256" in f.hashes))


def _requirements(source: ExportSource) -> str:
    lines = [
        _header(source),
        "# pip install --require-hashes --no-deps -r THIS_FILE",
        *_index_options(source.pypi),
    ]
    for package in source.pypi_packages:
        hashes = _hashes(package)
        lines.append(_pin(package) + (" \\" if hashes else ""))
        lines += [
            f"    --hash=sha256:{h}" + (" \\" if i < len(hashes) - 1 else "")
            for i, h in enumerate(hashes)
        ]
    return "\n".join(lines) + "\n"


def _python(source: ExportSource) -> str | None:
    if source.python:
        return source.python
    conda = source.conda
    if conda is not None and conda.python_version:
        return ".".join(conda.python_version.split(".")[:2])
    if source.pypi is None:
        return None
    requires = source.pypi.pylock.requires_python
    match = re.fullmatch(r"==(\d+\.\d+)(?:\.\*)?", str(requires or ""))
    return match.group(1) if match else None  # a range (several targets): leave it open


def _yaml_item(text: str) -> str:
    return text if _SAFE_YAML.match(text) else "'" + text.replace("'", "''") + "'"


def _conda_pin(package: CondaPackage) -> str:
    return f"{package.name}={package.version}={package.build}"


def _environment_yml(source: ExportSource) -> str:
    python = _python(source)
    name = source.name or f"nbenv-{source.env_id}"
    pip = [*_index_options(source.pypi), *map(_pin, source.pypi_packages)]
    conda = source.conda
    lines = [_header(source), "# conda env create -f THIS_FILE", f"name: {_yaml_item(name)}"]
    if conda is None:
        lines += ["channels:", "  - conda-forge", "dependencies:",
                  f"  - python={python}" if python else "  - python"]  # fmt: skip
    else:
        lines.append(f"# solved for {conda.platform}"
                     + (f" assuming {', '.join(conda.virtual_packages)}"
                        if conda.virtual_packages else ""))  # fmt: skip
        lines += ["channels:", *(f"  - {_yaml_item(c)}" for c in conda.channels)]
        lines.append("dependencies:")
        lines += [f"  - {_yaml_item(_conda_pin(p))}" for p in conda.packages]
        if pip and conda.python_version is None:
            # the PyPI part went into a venv of another interpreter; conda needs one for pip
            lines.append(f"  - python={python}" if python else "  - python")
    if pip:
        if conda is None or conda.package("pip") is None:
            lines.append("  - pip")
        lines += ["  - pip:", *(f"      - {_yaml_item(item)}" for item in pip)]
    return "\n".join(lines) + "\n"


def _metaflow(source: ExportSource) -> str:
    python = _python(source)
    plain = [p for p in source.pypi_packages if p.marker is None]
    marked = [p for p in source.pypi_packages if p.marker is not None]
    lines = [_header(source)]
    conda = source.conda
    if conda is not None:
        return _metaflow_conda(source, conda, python, plain, marked)
    indexes = [i for i in _indexes(source.pypi) if i.rstrip("/") != PYPI.rstrip("/")]
    if indexes:
        lines.append(
            f"# packages come from {', '.join(indexes)}: give Metaflow's pip that index "
            "(pip.conf or PIP_INDEX_URL / PIP_EXTRA_INDEX_URL)"
        )
    # @pypi's packages= maps names to versions and cannot say where a package applies.
    lines += [f"# not expressible in @pypi (environment marker): {_pin(p)}" for p in marked]
    lines.append("@pypi(")
    if python:
        lines.append(f"    python={json.dumps(python)},")
    lines.append("    packages={")
    lines += [f"        {json.dumps(str(p.name))}: {json.dumps(str(p.version))}," for p in plain]
    lines += ["    },", ")"]
    return "\n".join(lines) + "\n"


def _metaflow_conda(
    source: ExportSource,
    conda: CondaSolution,
    python: str | None,
    plain: Sequence[Package],
    marked: Sequence[Package],
) -> str:
    libraries = [p for p in conda.packages if p.name != "python"]
    lines = [_header(source), f"# conda packages solved for {conda.platform}"]
    if plain or marked:
        lines += [
            "# A mixed Conda + PyPI environment. Built-in Metaflow cannot mix @conda and @pypi",
            "# in one step; this needs the Netflix extension (pip install metaflow-netflixext),",
            "# whose @conda and @pypi on one step make one environment.",
        ]
        lines += [f"# not expressible in @pypi (environment marker): {_pin(p)}" for p in marked]
    lines.append("@conda(")
    if python:
        lines.append(f"    python={json.dumps(python)},")
    if plain or marked:  # the extension's @conda takes channels; built-in Metaflow's does not
        lines.append(f"    channels={json.dumps(list(conda.channels))},")
    else:
        lines.insert(2, f"# channels: {', '.join(conda.channels)} (METAFLOW_CONDA_CHANNELS)")
    lines.append("    libraries={")
    lines += [f"        {json.dumps(p.name)}: {json.dumps(p.version)}," for p in libraries]
    lines += ["    },", ")"]
    if plain:
        lines += ["@pypi(", "    packages={"]
        lines += [
            f"        {json.dumps(str(p.name))}: {json.dumps(str(p.version))}," for p in plain
        ]
        lines += ["    },", ")"]
    return "\n".join(lines) + "\n"
