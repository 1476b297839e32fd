"""Small file helpers every part of nbenv shares: atomic writes and file hashes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from pathlib import Path

__all__ = ["atomic_write", "sha256_file"]


def atomic_write(
    path: Path, data: bytes, *, durable: bool = False, make_parents: bool = True
) -> None:
    """Readers see the old file or the new one, never a torn one; the umask decides the
    mode, as for any file the user creates. `durable` also flushes to disk first (for
    files people keep, like locks; caches skip it for speed). `make_parents=False` raises
    FileNotFoundError when the folder is gone (a cache beside an env being removed must not
    bring its folder back)."""
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    if durable:
        _remove_dead_temps(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _remove_dead_temps(path: Path) -> None:
    """Temp files of earlier writes of `path` whose process died (kill -9 between write and
    rename): files people keep sit in their own folders, where such litter would stay."""
    prefix = f".{path.name}."
    try:
        siblings = [n for n in os.listdir(path.parent) if n.startswith(prefix)]
    except OSError:
        return
    for name in siblings:
        pid_text = name[len(prefix) :].partition("-")[0]
        if not (name.endswith(".tmp") and pid_text.isdigit()) or pid_alive(int(pid_text)):
            continue
        # another writer may have cleaned it first, or it is not ours to remove
        with contextlib.suppress(OSError):
            os.unlink(path.parent / name)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (a writer that died leaves its temp files)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
