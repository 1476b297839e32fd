"""The environment store: NBENV_HOME/envs/<env id>, built once, shared, never half-built.

envs/<id>/                 a complete environment (it only appears by atomic rename)
envs/<id>/nbenv-env.json   its record: request, interpreter, created (written before
                           the rename, so a directory without it is not an env)
envs/<id>/pylock.toml      the lock it was built from
envs/<id>/.nbenv-size.json its size on disk, cached (Store.cached_size says when it is stale)
envs/<id>/.nbenv-compiling the pid of its background bytecode compiler (the size grows until
                           it ends)
envs/.build-<id>-<random>/ a build in progress (or a killed one, removed by gc)
envs/.<id>.lock            held while <id> is built, so a second creator waits
names/<name>.json          a human name -> env id
requests/<key>.json        a request already resolved -> env id (no network next time)
notebooks/<key>.json       a notebook lock and the env ids it uses (nbenv.notebook_index)
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from nbenv.errors import NbenvError, UsageError
from nbenv.files import atomic_write
from nbenv.paths import nbenv_home

if TYPE_CHECKING:
    import filelock

__all__ = ["EnvRecord", "EnvSize", "Store", "in_use", "stop_compiling"]

RECORD = "nbenv-env.json"
LOCK_FILE = "pylock.toml"
_LAST_USED = ".nbenv-last-used"
_SIZE = ".nbenv-size.json"
_COMPILING = ".nbenv-compiling"


@dataclass(frozen=True)
class EnvSize:
    """Bytes on disk of an env: `total` counts each file once however many hardlinks it
    has; `unique` is what removing the env frees (files no other env or cache links)."""

    total: int
    unique: int


@dataclass(frozen=True)
class EnvRecord:
    env_id: str
    name: str | None
    requirements: tuple[str, ...]
    python: str  # X.Y.Z of the env's interpreter
    base_interpreter: str  # the interpreter the venv was made from
    created: float
    indexes: tuple[str, ...] = ()  # credentials stripped
    kernel_name: str | None = None
    kind: str = "pypi"  # "pypi", "conda" or "mixed": what the env was built from

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EnvRecord:
        data: dict[str, Any] = json.loads(text)
        data["requirements"] = tuple(data.get("requirements", ()))
        data["indexes"] = tuple(data.get("indexes", ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


class Store:
    def __init__(self, home: Path | None = None) -> None:
        self.home = home or nbenv_home()
        self.envs = self.home / "envs"
        self.names = self.home / "names"
        self.requests = self.home / "requests"
        # one lock object per env: holds nested in one thread (finishing a create around
        # its build) reenter instead of waiting on themselves
        self._locks: dict[str, filelock.BaseFileLock] = {}
        self._locks_guard = threading.Lock()

    # -- lookups ---------------------------------------------------------------------------
    def path(self, env_id: str) -> Path:
        return self.envs / env_id

    def exists(self, env_id: str) -> bool:
        return (self.path(env_id) / RECORD).is_file()

    def record(self, env_id: str) -> EnvRecord:
        try:
            return EnvRecord.from_json((self.path(env_id) / RECORD).read_text())
        except (OSError, ValueError, TypeError) as exc:
            raise NbenvError(f"Environment {env_id} has no readable record ({exc})") from None

    def env_ids(self) -> list[str]:
        if not self.envs.is_dir():
            return []
        return sorted(p.name for p in self.envs.iterdir() if (p / RECORD).is_file())

    def resolve_ref(self, ref: str) -> str:
        """An env id, a unique id prefix, or a name -> env id."""
        alias = self.alias(ref)
        if alias is not None and self.exists(alias):
            return alias
        ids = self.env_ids()
        if ref in ids:
            return ref
        matches = [i for i in ids if i.startswith(ref)] if len(ref) >= 4 else []
        if len(matches) == 1:
            return matches[0]
        known = ", ".join(sorted(self.aliases())) or "none"
        if len(matches) > 1:
            raise UsageError(f"{ref!r} matches several environments: {', '.join(matches)}")
        raise UsageError(
            f"No environment named or with id {ref!r}. Names: {known}. See `nbenv list`."
        )

    # -- names and request shortcuts ------------------------------------------------------
    def alias(self, name: str) -> str | None:
        return _read_id(self.names / f"{name}.json")

    def aliases(self) -> dict[str, str]:
        if not self.names.is_dir():
            return {}
        out = {}
        for path in sorted(self.names.glob("*.json")):
            env_id = _read_id(path)
            if env_id is not None:
                out[path.stem] = env_id
        return out

    def set_alias(self, name: str, env_id: str) -> None:
        _write_json(self.names / f"{name}.json", {"env_id": env_id})

    def remove_aliases_of(self, env_id: str) -> list[str]:
        removed = [n for n, i in self.aliases().items() if i == env_id]
        for name in removed:
            (self.names / f"{name}.json").unlink(missing_ok=True)
        return removed

    def remembered(self, request_key: str) -> str | None:
        """The env a request resolved to before, if it still exists (no network needed)."""
        env_id = _read_id(self.requests / f"{request_key}.json")
        return env_id if env_id is not None and self.exists(env_id) else None

    def remember(self, request_key: str, env_id: str) -> None:
        _write_json(self.requests / f"{request_key}.json", {"env_id": env_id})

    # -- building ---------------------------------------------------------------------------
    def _env_lock(self, env_id: str) -> filelock.BaseFileLock:
        with self._locks_guard:
            lock = self._locks.get(env_id)
            if lock is None:
                import filelock  # here: listing envs never needs it

                self.envs.mkdir(parents=True, exist_ok=True)
                lock = filelock.FileLock(str(self.envs / f".{env_id}.lock"))
                self._locks[env_id] = lock
            return lock

    @contextmanager
    def holding(self, env_id: str) -> Iterator[None]:
        """Hold the env's lock (waiting for it): while held, `gc` leaves the env alone. A
        create holds it from its build (or reuse) until the env's kernel is registered."""
        with self._env_lock(env_id):
            yield

    @contextmanager
    def try_holding(self, env_id: str) -> Iterator[bool]:
        """Hold the env's lock if nobody does (True), else yield False at once."""
        import filelock

        lock = self._env_lock(env_id)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    @contextmanager
    def building(self, env_id: str) -> Iterator[Path | None]:
        """Hold the env's build lock. Yields a fresh build dir, or None if the env exists
        (another process may just have built it while we waited for the lock)."""
        with self._env_lock(env_id):
            if self.exists(env_id):
                yield None
                return
            stale = self.path(env_id)
            if stale.exists():  # a directory without a record: a foreign or broken leftover
                shutil.rmtree(stale, ignore_errors=True)
            build = self.envs / f".build-{env_id}-{secrets.token_hex(4)}"
            build.mkdir()
            try:
                yield build
            except BaseException:
                shutil.rmtree(build, ignore_errors=True)
                raise
            if build.exists():  # the caller did not commit: nothing half-built survives
                shutil.rmtree(build, ignore_errors=True)

    def commit(self, build: Path, record: EnvRecord) -> Path:
        """Write the record and move the build into place: the env now exists, whole."""
        (build / RECORD).write_text(record.to_json())
        final = self.path(record.env_id)
        os.rename(build, final)
        self.touch(record.env_id)
        return final

    # -- use and removal --------------------------------------------------------------------
    def touch(self, env_id: str) -> None:
        marker = self.path(env_id) / _LAST_USED
        # a read-only store still works; only `gc --older-than` loses precision
        with contextlib.suppress(OSError):
            marker.touch()

    def last_used(self, env_id: str) -> float:
        path = self.path(env_id)
        for candidate in (path / _LAST_USED, path / RECORD):
            try:
                return candidate.stat().st_mtime
            except OSError:
                continue
        return 0.0

    def remove(self, env_id: str) -> None:
        """Remove an env: renamed away first, so it stops being an env at once."""
        path = self.path(env_id)
        if not path.exists():
            return
        trash = self.envs / f".trash-{env_id}-{secrets.token_hex(4)}"
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        self.remove_aliases_of(env_id)

    def leftovers(self) -> list[Path]:
        """Build and trash dirs from killed processes: a build dir is only ever made under
        its env's lock, so one whose lock nobody holds is dead."""
        import filelock

        if not self.envs.is_dir():
            return []
        out = []
        for path in self.envs.iterdir():
            if not path.name.startswith((".build-", ".trash-")):
                continue
            env_id = path.name.split("-")[1]
            lock = filelock.FileLock(str(self.envs / f".{env_id}.lock"))
            try:
                lock.acquire(timeout=0)
            except filelock.Timeout:
                continue  # a build is running right now
            lock.release()
            out.append(path)
        return out

    # -- sizes, cached beside the record ---------------------------------------------------
    @overload
    def cached_size(self, env_id: str, *, refresh: bool = ...) -> EnvSize: ...
    @overload
    def cached_size(self, env_id: str, *, refresh: bool = ..., walk: bool) -> EnvSize | None: ...
    def cached_size(
        self, env_id: str, *, refresh: bool = False, walk: bool = True
    ) -> EnvSize | None:
        """The env's size without walking its files, when the cached figure is current.

        Walked once (on first ask) and kept in `.nbenv-size.json` with a stamp: the mtime of
        the env's site-packages (installing or removing a package changes it) and the pid of
        the background bytecode compiler if it was still running (its .pyc files grow the
        env: the figure is walked again once it has ended). `walk=False`: None rather than
        a walk when no current figure is cached."""
        path = self.path(env_id)
        stamp = _stamp(path)
        if not refresh:
            try:
                data = json.loads((path / _SIZE).read_text())
                # a figure taken while the compiler ran is redone until one is taken after
                if data.get("stamp") == stamp and data.get("compiler") is None:
                    return EnvSize(int(data["total"]), int(data["unique"]))
            except (OSError, ValueError, TypeError, KeyError, AttributeError):
                pass
        if not walk:
            return None
        compiler = self._compiler(env_id)
        total, unique = self.size(env_id)
        data = {"total": total, "unique": unique, "stamp": stamp, "compiler": compiler}
        with contextlib.suppress(OSError):  # a read-only store still answers
            atomic_write(path / _SIZE, json.dumps(data).encode(), make_parents=False)
        return EnvSize(total, unique)

    def compiling(self, env_id: str, pid: int) -> None:
        """Remember the env's bytecode compiler, so a size taken meanwhile is redone."""
        with contextlib.suppress(OSError):
            atomic_write(self.path(env_id) / _COMPILING, str(pid).encode(), make_parents=False)

    def _compiler(self, env_id: str) -> int | None:
        try:
            pid = int((self.path(env_id) / _COMPILING).read_text())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def size(self, env_id: str, seen: set[tuple[int, int]] | None = None) -> tuple[int, int]:
        """(bytes on disk counting every hardlinked file once, bytes unique to this env)."""
        seen = set() if seen is None else seen
        total = unique = 0
        for root, _dirs, files in os.walk(self.path(env_id)):
            for name in files:
                if name == _SIZE:  # the figure does not count itself
                    continue
                try:
                    st = os.lstat(os.path.join(root, name))
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                total += st.st_size
                if st.st_nlink == 1:
                    unique += st.st_size
        return total, unique


def _stamp(env_dir: Path) -> int:
    """Changes when packages are installed into or removed from the env."""
    for site in sorted(env_dir.glob("lib/python*/site-packages")):
        with contextlib.suppress(OSError):
            return site.stat().st_mtime_ns
    try:
        return env_dir.stat().st_mtime_ns
    except OSError:
        return 0


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, under another user
    # a zombie (ended, not yet reaped by its parent) has finished its work
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _read_id(path: Path) -> str | None:
    try:
        value = json.loads(path.read_text()).get("env_id")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(data).encode())


def _env_processes(env_dir: Path) -> list[tuple[int, bool]]:
    """(pid, is nbenv's own bytecode compiler) of processes running from `env_dir`."""
    import psutil  # type: ignore[import-untyped]

    prefix = str(env_dir.resolve()) + os.sep
    found = []
    for proc in psutil.process_iter(["exe", "cmdline"]):
        try:
            exe = proc.info["exe"] or ""
            argv = proc.info["cmdline"] or [""]
        except psutil.Error:
            continue
        if exe.startswith(prefix) or argv[0].startswith(str(env_dir) + os.sep):
            found.append((proc.pid, "compileall" in argv))
    return found


def in_use(env_dir: Path) -> list[int]:
    """Pids of processes running from `env_dir` (a kernel started from the env), not
    counting the background bytecode compiler that nbenv itself started."""
    return [pid for pid, compiling in _env_processes(env_dir) if not compiling]


def stop_compiling(env_dir: Path) -> None:
    """End the background bytecode compiler of an env about to be removed."""
    import psutil

    for pid, compiling in _env_processes(env_dir):
        if compiling:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
