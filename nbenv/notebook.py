"""Notebooks and their envs: what the cells declare, resolved into the notebook's lock
(nbenv.notebook_lock) and built from it.

`nbenv lock NOTEBOOK.ipynb` locks every declared env (`lock_notebook`); the magics and
`nbenv run` build each declaration's env from its lock entry (`ensure_env`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from nbenv.cellspec import CellDeclaration, parse_cell
from nbenv.errors import LockFileError, NbenvError, UsageError
from nbenv.ipynb import read_notebook
from nbenv.lock import build_lock, load_lock
from nbenv.notebook_index import record_use
from nbenv.notebook_lock import (
    EnvLock,
    LockLocation,
    NotebookLock,
    canonical,
    notebook_location,
    notebook_of,
    open_lock,
)
from nbenv.report import NullReporter, Reporter
from nbenv.resolve.cache import CachePolicy
from nbenv.resolve.mixed import MixedLock

if TYPE_CHECKING:
    from nbenv.envs import BuildOptions, CreateResult
    from nbenv.resolve.conda_model import CondaRequest

__all__ = [
    "LockedEnv",
    "NotebookEnv",
    "NotebookLockResult",
    "conda_request",
    "declarations",
    "ensure_env",
    "lock_notebook",
    "locked_packages",
    "resolve_declaration",
    "version_changes",
]

_CELL_MAGIC = re.compile(r"^%%(pypi|conda)\b(.*)$")
_LINE_MAGIC = re.compile(r"^[ \t]*%pypi\b(.*)$")  # `%%pypi` does not match: `%` then `%pypi`


# -- what a notebook declares -------------------------------------------------------------


def declarations(notebook: Path) -> list[CellDeclaration]:
    """The envs the notebook's code cells declare, once each, in order: a `%%pypi`/`%%conda`
    first line (with its stacked header lines), and every `%pypi` line in other cells
    (the notebook-level env). Cells under another cell magic (`%%bash`...) are skipped."""
    node = read_notebook(notebook)
    found: dict[str, CellDeclaration] = {}
    for number, cell in enumerate(node.cells, start=1):
        if cell.get("cell_type") != "code":
            continue
        try:
            for declaration in _cell_declarations(str(cell.get("source", ""))):
                found.setdefault(declaration.key, declaration)
        except NbenvError as exc:
            raise UsageError(f"{notebook.name}, cell {number}: {exc}") from None
    return list(found.values())


def _cell_declarations(source: str) -> list[CellDeclaration]:
    lines = source.lstrip("\r\n").splitlines(keepends=True)
    if not lines:
        return []
    first = _CELL_MAGIC.match(lines[0].rstrip("\r\n"))
    if first is not None:
        return [parse_cell(first.group(1), first.group(2), "".join(lines[1:]))]
    if lines[0].startswith("%%"):
        return []  # another cell magic: its body is not Python with line magics
    found = []
    for line in lines:
        match = _LINE_MAGIC.match(line.rstrip("\r\n"))
        if match is not None:
            found.append(parse_cell("pypi", match.group(1), ""))
    return found


# -- resolving and building declared envs -------------------------------------------------


def _check(declaration: CellDeclaration) -> None:
    if not declaration.pypi.requirements and not declaration.conda:
        raise UsageError("A %%pypi declaration names no requirement, e.g. `%%pypi pandas`.")
    conda_request(declaration)  # a bad %conda line fails before anything is resolved


def conda_request(declaration: CellDeclaration) -> CondaRequest | None:
    """The declaration's `%%conda` lines as one conda request (None: a PyPI-only env)."""
    if not declaration.conda:
        return None
    from nbenv.resolve.conda import parse_conda_args

    request = parse_conda_args([word for line in declaration.conda for word in line])
    if request.platform is not None:
        raise UsageError("%%conda --platform is for `nbenv lock`; a cell runs on this machine")
    return request


def resolve_declaration(
    declaration: CellDeclaration,
    *,
    policy: CachePolicy = CachePolicy.DEFAULT,
    reporter: Reporter | None = None,
) -> EnvLock:
    """Resolve a declaration for this machine's interpreter (or its --python) into the lock
    `create_env` would build: the same request, kernel packages included, so the same id."""
    from nbenv.envs import target_for, with_kernel_requirements
    from nbenv.interpreters import find_interpreter
    from nbenv.resolve.pypi import resolve

    _check(declaration)
    request = declaration.pypi
    interpreter = find_interpreter(request.pythons[0] if request.pythons else None)
    conda = conda_request(declaration)
    if conda is not None:
        from nbenv.envs import KERNEL_REQUIREMENTS
        from nbenv.resolve.mixed import resolve_mixed

        mixed = resolve_mixed(conda, request, base=target_for(interpreter),
                              kernel_requirements=KERNEL_REQUIREMENTS, policy=policy,
                              reporter=reporter)  # fmt: skip
        return canonical(mixed)
    resolutions = resolve(
        with_kernel_requirements(request),
        policy=policy,
        reporter=reporter or NullReporter(),
        targets=[target_for(interpreter)],
    )
    return canonical(build_lock(resolutions, request))


Status = Literal["kept", "added", "upgraded", "unchanged"]


@dataclass(frozen=True)
class LockedEnv:
    key: str
    declared: str
    env_id: str
    status: Status  # kept: already locked; added: newly resolved; upgraded/unchanged: --upgrade
    changes: tuple[str, ...] = ()  # `alpha 2.0 -> 2.1`, `+ delta 1.0`, `- gamma 1.1`


@dataclass(frozen=True)
class NotebookLockResult:
    location: LockLocation
    envs: tuple[LockedEnv, ...]
    removed: tuple[str, ...]  # keys of entries no cell declares any more
    written: bool  # False: the file already held exactly this


def lock_notebook(
    notebook: Path,
    *,
    upgrade: bool = False,
    policy: CachePolicy = CachePolicy.DEFAULT,
    reporter: Reporter | None = None,
) -> NotebookLockResult:
    """Lock every env the notebook declares, reusing entries unless `upgrade`; entries no
    cell declares any more are dropped. Writes the lock file beside the notebook."""
    location = notebook_location(notebook)
    found = declarations(notebook)
    for declaration in found:
        _check(declaration)
    lock = open_lock(location)
    envs = []
    for declaration in found:
        old = lock.get(declaration.key)
        if old is not None and not upgrade:
            envs.append(LockedEnv(declaration.key, lock.entries[declaration.key].declared,
                                  old.env_id, "kept"))  # fmt: skip
            continue
        # Upgrading refetches index pages: a cached page would hide new releases.
        new = resolve_declaration(
            declaration, policy=CachePolicy.REFRESH if upgrade else policy, reporter=reporter
        )
        lock.put(declaration.key, declaration, new)
        status: Status = "added" if old is None else "upgraded"
        changes = version_changes(old, new) if old is not None else ()
        if old is not None and old.env_id == new.env_id:
            status = "unchanged"
        envs.append(LockedEnv(declaration.key, declaration.describe(), new.env_id, status,
                              changes))  # fmt: skip
    declared = {d.key for d in found}
    removed = tuple(sorted(k for k in lock.entries if k not in declared))
    for key in removed:
        lock.remove(key)
    written = lock.save()
    return NotebookLockResult(location, tuple(envs), removed, written)


def locked_packages(lock: EnvLock) -> dict[str, str]:
    """name -> version of what a lock installs; conda packages as `conda:NAME`."""
    if isinstance(lock, MixedLock):
        found = {f"conda:{p.name}": p.version for p in lock.conda.packages}
        if lock.pypi is not None:
            found.update(locked_packages(lock.pypi))
        return found
    return {str(p.name): str(p.version) for p in lock.pylock.packages}


def version_changes(old: EnvLock, new: EnvLock) -> tuple[str, ...]:
    """What an upgrade changed, by package name."""
    before = locked_packages(old)
    after = locked_packages(new)
    changes = []
    for name in sorted(before.keys() | after.keys()):
        a, b = before.get(name), after.get(name)
        if a == b:
            continue
        if a is None:
            changes.append(f"+ {name} {b}")
        elif b is None:
            changes.append(f"- {name} {a}")
        else:
            changes.append(f"{name} {a} -> {b}")
    return tuple(changes)


@dataclass(frozen=True)
class NotebookEnv:
    declaration: CellDeclaration
    result: CreateResult
    lock: EnvLock
    status: Literal["locked", "added", "upgraded"]  # locked: built/found from the lock


def ensure_env(
    declaration: CellDeclaration,
    lock: NotebookLock,
    *,
    upgrade: bool = False,
    reporter: Reporter | None = None,
    register_kernel: bool = True,
    kernel_prefix: str | None = None,
) -> NotebookEnv:
    """The env of a declaration: built from its lock entry (no resolution), or resolved and
    put in `lock` when it has none (or `upgrade`). The caller saves `lock`."""
    from packaging.pylock import PylockSelectError

    from nbenv.envs import BuildOptions, create_env
    from nbenv.store import LOCK_FILE

    _check(declaration)
    locked = None if upgrade else lock.get(declaration.key)
    conda = conda_request(declaration)
    options = BuildOptions(
        policy=CachePolicy.REFRESH if upgrade else CachePolicy.DEFAULT,
        register_kernel=register_kernel,
        kernel_prefix=kernel_prefix,
    )
    if conda is not None or isinstance(locked, MixedLock):
        env = _ensure_conda_env(declaration, conda, lock, locked, options, upgrade=upgrade,
                                reporter=reporter)  # fmt: skip
        record_use(lock.path, env.result.record.env_id)  # the store's notebook -> env index
        return env
    try:
        result = create_env(declaration.pypi, options, lock=locked, reporter=reporter)
    except PylockSelectError as exc:
        raise LockFileError(
            str(lock.path),
            f"the entry for `{declaration.describe()}` does not fit this machine ({exc}). "
            f"Resolve it again for this machine: `nbenv lock {notebook_of(lock.path)} "
            "--upgrade`.",
        ) from None
    record_use(lock.path, result.record.env_id)  # the store's notebook -> env index
    if locked is not None:
        return NotebookEnv(declaration, result, locked, "locked")
    built = load_lock(result.path / LOCK_FILE)
    lock.put(declaration.key, declaration, built)
    status: Literal["added", "upgraded"] = "upgraded" if upgrade else "added"
    return NotebookEnv(declaration, result, built, status)


def _ensure_conda_env(
    declaration: CellDeclaration,
    conda: CondaRequest | None,
    lock: NotebookLock,
    locked: EnvLock | None,
    options: BuildOptions,
    *,
    upgrade: bool,
    reporter: Reporter | None,
) -> NotebookEnv:
    from nbenv.conda_envs import create_conda_env, load_env_lock

    if conda is None or (locked is not None and not isinstance(locked, MixedLock)):
        raise LockFileError(
            str(lock.path),
            f"the entry for `{declaration.describe()}` is not a conda env lock. Resolve it "
            f"again: `nbenv lock {notebook_of(lock.path)} --upgrade`.",
        )
    if locked is not None and locked.conda.platform != conda.subdir:
        raise LockFileError(
            str(lock.path),
            f"the entry for `{declaration.describe()}` is for {locked.conda.platform}, not this "
            f"machine ({conda.subdir}). Resolve it again for this machine: `nbenv lock "
            f"{notebook_of(lock.path)} --upgrade`.",
        )
    result = create_conda_env(conda, declaration.pypi, options, lock=locked, reporter=reporter)
    if locked is not None:
        return NotebookEnv(declaration, result, locked, "locked")
    built = load_env_lock(result.path)
    if built is None:
        raise LockFileError(str(result.path), "holds no conda lock; remove the env and retry.")
    entry = canonical(built)
    lock.put(declaration.key, declaration, entry)
    status: Literal["added", "upgraded"] = "upgraded" if upgrade else "added"
    return NotebookEnv(declaration, result, entry, status)
