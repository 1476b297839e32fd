"""Notebook locks: the envs a notebook declares, resolved once and pinned beside it.

analysis.ipynb          the notebook (its cells declare envs: %%pypi, %%conda, %pypi)
analysis.nbenv.lock     TOML: `version = 1`, then one `[envs.<declaration key>]` per env with
                        `declared`, `env-id` and the PEP 751 `pylock` table of its packages,
                        plus a `conda` table (the solved conda packages) for %%conda envs

The magics and `nbenv run` build envs from these entries (no resolution, no index pages);
`nbenv lock NOTEBOOK.ipynb` writes them all, `--upgrade` resolves again, `--embed` copies
them into the notebook's metadata (`metadata.nbenv.locks`) so the .ipynb alone suffices.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import filelock
import tomli_w

from nbenv.cellspec import CellDeclaration
from nbenv.errors import LockFileError
from nbenv.files import atomic_write
from nbenv.ipynb import read_notebook, write_notebook
from nbenv.lock import Lock, lock_from_dict
from nbenv.notebook_index import record_lock
from nbenv.paths import nbenv_home
from nbenv.resolve.mixed import MixedLock

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found]  # needs tomli on 3.10

__all__ = [
    "LOCK_SUFFIX",
    "WORKDIR_LOCK",
    "EnvLock",
    "LockEntry",
    "LockLocation",
    "NotebookLock",
    "Source",
    "canonical",
    "embed_locks",
    "embedded_lock",
    "locate_lock",
    "lock_path_for",
    "notebook_location",
    "notebook_of",
    "open_lock",
]

LOCK_SUFFIX = ".nbenv.lock"
WORKDIR_LOCK = "nbenv.lock"  # no notebook path known: one lock per working directory
_VERSION = 1
_HEADER = (
    "# nbenv notebook lock: the environments this notebook declares, pinned.\n"
    "# Written by nbenv; `nbenv lock NOTEBOOK.ipynb --upgrade` resolves them again.\n"
)
_ACTION = (
    "Restore it from version control, or delete it and lock again "
    "(`nbenv lock NOTEBOOK.ipynb`, or run the notebook)."
)

Source = Literal[
    "NBENV_LOCK",
    "JPY_SESSION_NAME",
    "__session__",
    "__vsc_ipynb_file__",
    "working directory",
    "command line",
]


# -- where the lock file is ---------------------------------------------------------------


def lock_path_for(notebook: Path) -> Path:
    """`analysis.ipynb` -> `analysis.nbenv.lock` in the same directory."""
    return notebook.with_name(notebook.stem + LOCK_SUFFIX)


@dataclass(frozen=True)
class LockLocation:
    path: Path  # the lock file (it may not exist yet)
    notebook: Path | None  # the notebook it belongs to, when known
    source: Source  # what told us

    def describe(self) -> str:
        """e.g. `lock file analysis.nbenv.lock beside analysis.ipynb (from JPY_SESSION_NAME)`."""
        if self.source == "working directory":
            return (
                f"lock file {self.path.name} in {self.path.parent} (the working directory: "
                "the notebook's path is unknown here; set NBENV_LOCK to choose the file)"
            )
        if self.notebook is not None and self.notebook.parent == self.path.parent:
            return f"lock file {self.path.name} beside {self.notebook.name} (from {self.source})"
        return f"lock file {self.path} (from {self.source})"


def notebook_location(notebook: Path) -> LockLocation:
    """The lock of a notebook named on the command line."""
    return LockLocation(lock_path_for(notebook), notebook, "command line")


def locate_lock(
    user_ns: Mapping[str, object] | None = None, environ: Mapping[str, str] | None = None
) -> LockLocation:
    """Find the lock file for the running kernel's notebook.

    NBENV_LOCK comes first: it is the explicit choice, and `nbenv run` (or papermill started
    from inside a notebook) runs kernels that inherit the parent's JPY_SESSION_NAME. Then the
    notebook path Jupyter gives the kernel (JPY_SESSION_NAME, `__session__`, VS Code's
    `__vsc_ipynb_file__`); nbconvert and papermill give none: then `nbenv.lock` in the working
    directory, which entries keyed by declaration let several notebooks share safely.
    """
    env = os.environ if environ is None else environ
    namespace = user_ns or {}
    cwd = Path.cwd()
    chosen = env.get("NBENV_LOCK", "").strip()
    if chosen:
        return _explicit(Path(os.path.abspath(Path(chosen).expanduser())))
    candidates: list[tuple[Source, object]] = [
        ("JPY_SESSION_NAME", env.get("JPY_SESSION_NAME")),
        ("__session__", namespace.get("__session__")),
        ("__vsc_ipynb_file__", namespace.get("__vsc_ipynb_file__")),
    ]
    for source, value in candidates:
        notebook = _session_notebook(value, cwd)
        if notebook is not None:
            return LockLocation(lock_path_for(notebook), notebook, source)
    return LockLocation(cwd / WORKDIR_LOCK, None, "working directory")


def _explicit(path: Path) -> LockLocation:
    """NBENV_LOCK names a notebook, a directory or the lock file itself."""
    if path.suffix == ".ipynb":
        return LockLocation(lock_path_for(path), path, "NBENV_LOCK")
    if path.is_dir():
        return LockLocation(path / WORKDIR_LOCK, None, "NBENV_LOCK")
    notebook = None
    if path.name.endswith(LOCK_SUFFIX):
        sibling = path.with_name(path.name[: -len(LOCK_SUFFIX)] + ".ipynb")
        notebook = sibling if sibling.is_file() else None
    return LockLocation(path, notebook, "NBENV_LOCK")


def _session_notebook(value: object, cwd: Path) -> Path | None:
    if not isinstance(value, str) or not value.strip():
        return None
    path = Path(value.strip()).expanduser()
    # Consoles get a session name that is no file: not a notebook.
    if path.suffix != ".ipynb" and not (path.is_absolute() and path.is_file()):
        return None
    if path.is_absolute():
        return path
    if (cwd / path).exists():
        return cwd / path
    # Older servers give a path relative to their root; kernels start in the notebook's dir.
    return cwd / path.name


# -- the lock file ------------------------------------------------------------------------


EnvLock = Lock | MixedLock  # a PyPI env's lock, or a conda/mixed env's


@dataclass(frozen=True)
class LockEntry:
    declared: str  # what the cell asked for, for people reading the file
    lock: EnvLock

    @property
    def env_id(self) -> str:
        return self.lock.env_id


class NotebookLock:
    """The locks of one notebook. `put`/`remove` change it in memory; `save` merges those
    changes into the file as it is on disk at that moment, so two kernels saving at once
    both keep their entries."""

    def __init__(self, path: Path, entries: Mapping[str, LockEntry] | None = None) -> None:
        self.path = path
        self._entries: dict[str, LockEntry] = dict(entries or {})
        self._changes: dict[str, LockEntry | None] = {}

    @classmethod
    def load(cls, path: Path) -> NotebookLock:
        """The file's entries; a missing file is an empty lock, a corrupt one an error."""
        return cls(path, _read_entries(path))

    @property
    def entries(self) -> Mapping[str, LockEntry]:
        return MappingProxyType(self._entries)

    def get(self, key: str) -> EnvLock | None:
        entry = self._entries.get(key)
        return entry.lock if entry is not None else None

    def put(self, key: str, declaration: CellDeclaration, lock: EnvLock) -> None:
        if isinstance(lock, MixedLock) and lock.pypi is None:
            raise ValueError("a notebook's conda env has a kernel, so a PyPI pass")
        entry = LockEntry(declaration.describe(), canonical(lock))
        self._entries[key] = entry
        self._changes[key] = entry

    def remove(self, key: str) -> None:
        self._entries.pop(key, None)
        self._changes[key] = None

    def fill_from(self, other: NotebookLock) -> int:
        """Take the entries of `other` that this lock lacks (as changes); how many."""
        added = 0
        for key, entry in other.entries.items():
            if key not in self._entries:
                self._entries[key] = entry
                self._changes[key] = entry
                added += 1
        return added

    def dumps(self) -> str:
        return _dumps(self._entries)

    def save(self) -> bool:
        """Write atomically, only when the bytes change; True when the file was written."""
        with _file_lock(self.path):
            merged = _read_entries(self.path)
            for key, entry in self._changes.items():
                if entry is None:
                    merged.pop(key, None)
                else:
                    merged[key] = entry
            self._entries = merged
            self._changes = {}
            if not merged and not self.path.exists():
                return False  # nothing declared, nothing to keep: no empty file
            data = _dumps(merged).encode("utf-8")
            try:
                written = self.path.read_bytes() != data
            except FileNotFoundError:
                written = True
            if written:
                atomic_write(self.path, data, durable=True)
        # the store's index of which notebooks use which envs (the inspector shows it)
        record_lock(self.path, [entry.env_id for entry in merged.values()])
        return written


def notebook_of(path: Path) -> str:
    """The notebook a lock file belongs to, for messages (a guess from its name)."""
    if path.name.endswith(LOCK_SUFFIX):
        return str(path.with_name(path.name[: -len(LOCK_SUFFIX)] + ".ipynb"))
    return "NOTEBOOK.ipynb"


def canonical(lock: EnvLock) -> EnvLock:
    # `[tool.nbenv]` records whichever request first built the env; the entry's `declared`
    # says what this notebook asked, and dropping the table keeps the file's bytes
    # independent of that history (the env id never included it).
    if isinstance(lock, MixedLock):
        pypi = canonical(lock.pypi) if lock.pypi is not None else None
        assert not isinstance(pypi, MixedLock)
        return MixedLock(lock.conda, pypi, lock.env_id)
    if lock.pylock.tool is None:
        return lock
    return Lock(pylock=replace(lock.pylock, tool=None), env_id=lock.env_id)


def _document(entries: Mapping[str, LockEntry]) -> dict[str, Any]:
    return {"version": _VERSION, "envs": {key: _table(entries[key]) for key in sorted(entries)}}


def _table(entry: LockEntry) -> dict[str, Any]:
    table: dict[str, Any] = {"declared": entry.declared, "env-id": entry.env_id}
    pypi = entry.lock
    if isinstance(pypi, MixedLock):
        table["conda"] = pypi.to_dict()["conda"]
        assert pypi.pypi is not None  # put() refuses a conda env without a PyPI pass
        pypi = pypi.pypi
    table["pylock"] = dict(pypi.pylock.to_dict())
    return table


def _dumps(entries: Mapping[str, LockEntry]) -> str:
    return _HEADER + tomli_w.dumps(_document(entries))


def _read_entries(path: Path) -> dict[str, LockEntry]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError:
        raise LockFileError(
            str(path), f"is not UTF-8 text, so not an nbenv lock. {_ACTION}"
        ) from None
    except OSError as exc:
        raise LockFileError(str(path), f"cannot be read: {exc.strerror or exc}.") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LockFileError(str(path), f"is not valid TOML ({exc}). {_ACTION}") from None
    return _entries_of(data, str(path))


def _entries_of(data: Mapping[str, Any], source: str) -> dict[str, LockEntry]:
    """Validate a notebook lock document (from the TOML file or the notebook metadata)."""
    version = data.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > _VERSION:
        raise LockFileError(
            source,
            f"was written by a newer nbenv (lock format version {version}; this nbenv reads "
            f"version {_VERSION}). Upgrade nbenv to use it.",
        )
    if version != _VERSION:
        raise LockFileError(source, f"is not an nbenv notebook lock (no `version = 1`). {_ACTION}")
    envs = data.get("envs", {})
    if not isinstance(envs, Mapping):
        raise LockFileError(source, f"`envs` should be a table of environments. {_ACTION}")
    entries = {}
    for key, table in envs.items():
        where = f"[envs.{key}]"
        if not isinstance(table, Mapping) or not isinstance(table.get("pylock"), Mapping):
            raise LockFileError(source, f"{where} has no `pylock` table. {_ACTION}")
        declared = table.get("declared", "")
        if not isinstance(declared, str):
            raise LockFileError(source, f"{where}: `declared` should be a string. {_ACTION}")
        try:
            lock: EnvLock
            if isinstance(table.get("conda"), Mapping):
                lock = MixedLock.from_dict(table, f"{source} {where}")
            else:
                lock = lock_from_dict(table["pylock"], f"{source} {where}")
        except LockFileError as exc:
            raise LockFileError(exc.path, f"{exc.reason} {_ACTION}") from None
        recorded = table.get("env-id")
        if recorded is not None and recorded != lock.env_id:
            # the env id is the hash of the packages: a changed hash, URL or version with
            # the old id means the file was edited, and nbenv will not build what it says
            raise LockFileError(
                source,
                f"{where} was edited: its packages no longer hash to its env-id "
                f"{recorded}, so nbenv will not build it. {_ACTION}",
            )
        entries[str(key)] = LockEntry(declared, lock)
    return entries


def _file_lock(path: Path) -> filelock.BaseFileLock:
    # Kept in NBENV_HOME, not beside the notebook: no stray `.lock` files in the user's repo.
    digest = hashlib.sha256(str(path.absolute()).encode()).hexdigest()[:16]
    where = nbenv_home() / "locks" / f"notebook-{digest}.lock"
    where.parent.mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(str(where), timeout=60)


def open_lock(location: LockLocation) -> NotebookLock:
    """The lock file's entries, plus those embedded in the notebook that the file lacks
    (the file is newer: the magics update it; the embedded copy is a snapshot)."""
    lock = NotebookLock.load(location.path)
    if location.notebook is not None and location.notebook.is_file():
        embedded = embedded_lock(location.notebook)
        if embedded is not None:
            lock.fill_from(embedded)
    return lock


# -- locks inside the notebook ------------------------------------------------------------


def embed_locks(notebook: Path, lock: NotebookLock) -> bool:
    """Store the locks in `metadata.nbenv.locks`, keeping everything else; True if the
    notebook changed."""
    node = read_notebook(notebook, convert=False)
    meta = node.metadata.setdefault("nbenv", {})
    document = _to_json(_document(lock.entries))
    if meta.get("locks") == document:
        return False
    meta["locks"] = document
    write_notebook(notebook, node)
    return True


def embedded_lock(notebook: Path) -> NotebookLock | None:
    """The locks embedded in the notebook (as the lock file beside it), or None."""
    meta = read_notebook(notebook).metadata.get("nbenv", {})
    data = meta.get("locks") if isinstance(meta, Mapping) else None
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise LockFileError(f"{notebook} (metadata.nbenv.locks)", "is not an object.")
    source = f"{notebook} (metadata.nbenv.locks)"
    return NotebookLock(lock_path_for(notebook), _entries_of(_from_json(data), source))


def _to_json(value: Any) -> Any:
    # JSON has no datetime: PEP 751 `upload-time` becomes an ISO string, and back on reading.
    if isinstance(value, Mapping):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _from_json(value: Any, key: str = "") -> Any:
    if isinstance(value, Mapping):
        return {k: _from_json(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if key == "upload-time" and isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value  # pylock validation names the bad value
    return value
