"""Which notebook locks use which envs: a small index in the store, for the inspector and
`nbenv list`/`show` ("used by analysis.ipynb").

NBENV_HOME/notebooks/<key>.json, one file per notebook lock (key: a hash of its path):

    {"lock": "/abs/analysis.nbenv.lock", "notebook": "/abs/analysis.ipynb" | null,
     "env_ids": ["1a2b...", ...], "mtime_ns": <the lock file's mtime when recorded>}

Written when a notebook lock is saved (the env ids of all its entries) and when the magics or
`nbenv run` build or find an env from a lock (that env id is added). Reading drops what went
stale: a record whose lock file is gone is deleted; one whose lock file changed since (an
edit, a `git checkout`) is re-read from the file. One file per lock keeps two kernels that
save different notebooks from contending; the same lock's writers hold a file lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbenv.files import atomic_write
from nbenv.paths import nbenv_home

__all__ = ["NotebookUse", "notebooks_by_env", "record_lock", "record_use"]

_DIR = "notebooks"
_LOCK_SUFFIX = ".nbenv.lock"


@dataclass(frozen=True)
class NotebookUse:
    lock: Path
    notebook: Path | None  # None: a working-directory nbenv.lock, no notebook known

    @property
    def label(self) -> str:
        """What a person reads: the notebook's path, else the lock file's."""
        return str(self.notebook or self.lock)


def _record_path(home: Path, lock: Path) -> Path:
    key = hashlib.sha256(str(lock).encode()).hexdigest()[:24]
    return home / _DIR / f"{key}.json"


def _notebook_of(lock: Path) -> Path | None:
    if not lock.name.endswith(_LOCK_SUFFIX):
        return None
    notebook = lock.with_name(lock.name[: -len(_LOCK_SUFFIX)] + ".ipynb")
    return notebook if notebook.is_file() else None


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _update(home: Path | None, lock: Path, env_ids: Iterable[str], *, add: bool) -> None:
    home = home or nbenv_home()
    lock = Path(lock).absolute()
    where = _record_path(home, lock)
    with contextlib.suppress(OSError):  # a read-only store must not fail a build
        where.parent.mkdir(parents=True, exist_ok=True)
        import filelock

        with filelock.FileLock(str(where) + ".lock", timeout=30):
            old = _read(where) if add else None
            ids = set(env_ids) | (set(old["env_ids"]) if old else set())
            notebook = _notebook_of(lock)
            data = {
                "lock": str(lock),
                "notebook": str(notebook) if notebook else None,
                "env_ids": sorted(ids),
                "mtime_ns": _mtime(lock),
            }
            if data != old:
                atomic_write(where, json.dumps(data).encode())


def record_lock(lock: Path, env_ids: Iterable[str], home: Path | None = None) -> None:
    """The lock file now holds exactly these envs (it was just saved)."""
    _update(home, lock, env_ids, add=False)


def record_use(lock: Path, env_id: str, home: Path | None = None) -> None:
    """An env was built or found from an entry of this lock."""
    _update(home, lock, [env_id], add=True)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("env_ids"), list):
        return None
    return data


def notebooks_by_env(home: Path | None = None) -> dict[str, list[NotebookUse]]:
    """env id -> the notebook locks that use it, stale records dropped or refreshed."""
    home = home or nbenv_home()
    folder = home / _DIR
    found: dict[str, list[NotebookUse]] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob("*.json")):
        data = _read(path)
        if data is None:
            _forget(path)
            continue
        lock = Path(data["lock"])
        mtime = _mtime(lock)
        if mtime is None:  # the lock (and likely its notebook) is gone
            _forget(path)
            continue
        env_ids = [str(i) for i in data["env_ids"]]
        if mtime != data.get("mtime_ns"):
            env_ids = _env_ids_in(lock)
            record_lock(lock, env_ids, home)
        notebook = data.get("notebook")
        use = NotebookUse(lock, Path(notebook) if notebook else None)
        for env_id in env_ids:
            found.setdefault(env_id, []).append(use)
    return found


def _forget(record: Path) -> None:
    with contextlib.suppress(OSError):  # a read-only store: listed again next time, harmless
        record.unlink(missing_ok=True)


def _env_ids_in(lock: Path) -> list[str]:
    from nbenv.errors import NbenvError
    from nbenv.notebook_lock import NotebookLock

    try:
        return sorted({entry.env_id for entry in NotebookLock.load(lock).entries.values()})
    except NbenvError:
        return []  # unreadable now: it names no env until it is fixed
