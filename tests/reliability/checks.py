"""Checks run after every injected fault: is everything nbenv keeps whole, and does any file
or message hold a secret? Each returns a list of problems (empty: all is well)."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from nbenv.errors import NbenvError
from nbenv.lock import load_lock
from nbenv.notebook_lock import NotebookLock

__all__ = [
    "cache_problems",
    "env_problems",
    "find_secret",
    "kernelspec_problems",
    "lock_problems",
    "nbenv",
    "store_problems",
]


def nbenv(*args: str, timeout: float = 300, **kw: object) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, in this test's isolated environment."""
    return subprocess.run(
        [sys.executable, "-m", "nbenv", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=timeout,
        **kw,  # type: ignore[arg-type]
    )


def env_problems(env: Path) -> list[str]:
    """An env that looks complete must be: record, lock matching its id, python, and every
    file every installed RECORD lists, with its hash."""
    problems: list[str] = []
    try:
        record = json.loads((env / "nbenv-env.json").read_text())
    except (OSError, ValueError) as exc:
        return [f"{env.name}: unreadable record ({exc})"]
    if record.get("env_id") != env.name:
        problems.append(f"{env.name}: record names {record.get('env_id')!r}")
    try:
        lock = load_lock(env / "pylock.toml")
        if lock.env_id != env.name:
            problems.append(f"{env.name}: its lock hashes to {lock.env_id}")
        locked = {str(p.name) for p in lock.pylock.packages}
    except NbenvError as exc:
        return [*problems, f"{env.name}: {exc}"]
    if not (env / "bin" / "python").exists():
        problems.append(f"{env.name}: no bin/python")
    site = next(env.glob("lib/python*/site-packages"), None)
    if site is None:
        return [*problems, f"{env.name}: no site-packages"]
    installed = set()
    for record_file in site.glob("*.dist-info/RECORD"):
        installed.add(record_file.parent.name.split("-")[0].lower().replace("_", "-"))
        for row in csv.reader(record_file.read_text().splitlines()):
            if not row or not row[0]:
                continue
            path = (site / row[0]).resolve()
            if len(row) > 1 and row[1].startswith("sha256="):
                try:
                    digest = hashlib.sha256(path.read_bytes()).digest()
                except OSError:
                    problems.append(f"{env.name}: {row[0]} is missing")
                    continue
                expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
                if row[1] != f"sha256={expected}":
                    problems.append(f"{env.name}: {row[0]} does not match its RECORD")
    normalized = {name.lower().replace("_", "-") for name in locked}
    missing = normalized - installed
    if missing:
        problems.append(f"{env.name}: locked but not installed: {sorted(missing)}")
    return problems


def store_problems(home: Path) -> list[str]:
    """Every visible entry of NBENV_HOME/envs is a complete env; names and request
    shortcuts are whole JSON. Hidden `.build-*`/`.trash-*` dirs are leftovers gc removes:
    allowed, because nothing treats them as envs."""
    problems: list[str] = []
    envs = home / "envs"
    if envs.is_dir():
        for entry in sorted(envs.iterdir()):
            if entry.name.startswith("."):
                continue
            if not (entry / "nbenv-env.json").is_file():
                problems.append(f"envs/{entry.name} is a directory without a record")
                continue
            problems += env_problems(entry)
    for folder in ("names", "requests"):
        for path in sorted((home / folder).glob("*.json")):
            try:
                json.loads(path.read_text())["env_id"]
            except (OSError, ValueError, KeyError) as exc:
                problems.append(f"{folder}/{path.name} is torn ({exc!r})")
    return problems


def cache_problems(cache: Path) -> list[str]:
    """Files in the download cache match the hash they are filed under; unpacked wheels
    have their manifest and every file it lists."""
    problems: list[str] = []
    for path in sorted((cache / "files").glob("*/*/*")):
        if path.name.endswith((".part", ".lock")) or path.name.startswith("."):
            continue
        if hashlib.sha256(path.read_bytes()).hexdigest() != path.parent.name:
            problems.append(f"cache file {path.name} does not match its sha256")
    unpacked = cache / "unpacked"
    if unpacked.is_dir():
        for home in sorted(unpacked.iterdir()):
            if home.name.startswith(".") or home.name.endswith(".lock"):
                continue
            try:
                manifest = json.loads((home / "manifest.json").read_text())
            except (OSError, ValueError):
                problems.append(f"unpacked {home.name[:12]} has no readable manifest")
                continue
            for relative, _digest, size, _x in manifest["files"]:
                member = home / "tree" / relative
                if not member.is_file() or member.stat().st_size != int(size):
                    problems.append(f"unpacked {home.name[:12]}: {relative} missing or short")
    return problems


def kernelspec_problems(jupyter_data: Path) -> list[str]:
    """Every kernelspec dir has a whole kernel.json; an nbenv one points at an env that
    exists (one whose env is gone is an orphan `nbenv gc` removes: reported by the test)."""
    problems: list[str] = []
    for spec in sorted((jupyter_data / "kernels").glob("*")):
        try:
            data = json.loads((spec / "kernel.json").read_text())
        except (OSError, ValueError) as exc:
            problems.append(f"kernelspec {spec.name} is broken ({type(exc).__name__})")
            continue
        if not Path(data["argv"][0]).exists():
            problems.append(f"kernelspec {spec.name} names a python that does not exist")
    return problems


def lock_problems(path: Path, *, notebook_lock: bool = False) -> list[str]:
    """A lock file is absent or whole; no temp file of a write is left beside it."""
    problems = [f"{p.name} left beside {path.name}" for p in path.parent.glob(f".{path.name}.*")]
    if not path.exists():
        return problems
    try:
        if notebook_lock:
            NotebookLock.load(path)
        else:
            load_lock(path)
    except NbenvError as exc:
        problems.append(f"{path.name} is torn: {exc}")
    return problems


def _files(roots: Iterable[Path]) -> Iterable[Path]:
    for root in roots:
        if root.is_file():
            yield root
            continue
        for folder, _dirs, names in os.walk(root):
            for name in names:
                yield Path(folder, name)


def find_secret(secret: str, roots: Iterable[Path], messages: Iterable[str] = ()) -> list[str]:
    """Where `secret` (or its percent/base64 forms) appears: files under `roots` (symlinks
    not followed: env pythons point at the base interpreter) and the given messages."""
    forms = {secret, base64.b64encode(secret.encode()).decode()}
    needles = [f.encode() for f in forms]
    hits = []
    for path in _files(roots):
        if path.is_symlink():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if any(n in data for n in needles):
            hits.append(str(path))
    for number, text in enumerate(messages):
        if any(f in text for f in forms):
            hits.append(f"message #{number}: {text[:200]!r}")
    return hits
