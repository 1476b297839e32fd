"""Build a wheel from an sdist once (PEP 517, isolated, pypa/build in a subprocess), cached.

    cache_root/built/<sdist sha256>/<wheel>   complete wheels only: moved in by rename
    cache_root/built/<sdist sha256>/.tmp-*/   a build under way (or a killed one's leftovers)
    cache_root/built/<sdist sha256>.lock      one builder per sdist, across threads and processes

The sdist is unpacked here rather than handed to `python -m build` as an archive: build
reads archives only since recent releases, and only `.tar.gz` (old sdists are `.zip`).
The build's pip sees the same indexes as the resolver, credentials included; nothing shown
to a person (errors, notes) ever carries them.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

import filelock
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from nbenv.errors import SdistBuildError
from nbenv.net.auth import redact, strip_userinfo
from nbenv.report import NullReporter, Reporter

__all__ = ["build_wheel_from_sdist"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_LOCK_GRACE = 60.0  # seconds, beyond a build's own timeout, to wait for another builder


def build_wheel_from_sdist(
    sdist: Path,
    cache_root: Path,
    *,
    sdist_sha256: str,
    indexes: Sequence[str],
    python: str = sys.executable,
    reporter: Reporter | None = None,
    timeout: float = 600,
) -> Path:
    """The wheel built from `sdist` (whose hash the caller has verified), building it if needed.

    `python` runs the build and must have `build` installed. `indexes` (primary first) are
    where the build's pip finds build requirements; empty means no index at all.
    Raises SdistBuildError with the tail of the build's output.
    """
    if not _SHA256.fullmatch(sdist_sha256):
        raise ValueError(f"not a lowercase hex sha256: {sdist_sha256!r}")
    home = cache_root / "built" / sdist_sha256
    cached = _cached_wheel(home)
    if cached is not None:
        return cached
    home.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(home.parent / f"{sdist_sha256}.lock"))
    try:
        with lock.acquire(timeout=timeout + _LOCK_GRACE):
            cached = _cached_wheel(home)  # built by whoever held the lock before us
            if cached is not None:
                return cached
            for stale in home.glob(".tmp-*"):  # only a dead builder leaves these
                shutil.rmtree(stale, ignore_errors=True)
            (reporter or NullReporter()).note(f"building wheel for {sdist.name}")
            return _build(sdist, home, indexes, python, timeout)
    except filelock.Timeout:
        raise SdistBuildError(
            sdist.name, f"another build of it did not finish in time (lock: {lock.lock_file})"
        ) from None


def _cached_wheel(home: Path) -> Path | None:
    wheels = sorted(home.glob("*.whl")) if home.is_dir() else []
    return wheels[0] if wheels else None


def _build(sdist: Path, home: Path, indexes: Sequence[str], python: str, timeout: float) -> Path:
    work = Path(tempfile.mkdtemp(prefix=".tmp-", dir=home))  # same filesystem: rename is atomic
    try:
        source = _unpack(sdist, work / "src")
        outdir = work / "dist"
        argv = [python, "-m", "build", "--wheel", "--outdir", str(outdir), str(source)]
        code, output = _run(argv, _build_environment(indexes), work, timeout)
        output = _scrub(output, indexes)
        if code != 0:
            raise SdistBuildError(sdist.name, output)
        wheels = list(outdir.glob("*.whl"))
        if len(wheels) != 1:
            raise SdistBuildError(sdist.name, f"{output}\nexpected one wheel, got {len(wheels)}")
        try:
            parse_wheel_filename(wheels[0].name)
        except InvalidWheelFilename as exc:
            raise SdistBuildError(sdist.name, f"{output}\n{exc}") from None
        final = home / wheels[0].name
        os.replace(wheels[0], final)
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _unpack(sdist: Path, dest: Path) -> Path:
    """Unpack safely (no paths outside `dest`, no devices) and return the project directory."""
    dest.mkdir()
    try:
        if zipfile.is_zipfile(sdist):
            with zipfile.ZipFile(sdist) as archive:
                archive.extractall(dest)  # zipfile drops absolute and ".." parts itself
        else:
            with tarfile.open(sdist) as archive:
                _extract_tar(archive, dest)
    except (OSError, tarfile.TarError, zipfile.BadZipFile) as exc:
        raise SdistBuildError(sdist.name, f"cannot unpack it: {exc}") from None
    entries = list(dest.iterdir())
    root = entries[0] if len(entries) == 1 and entries[0].is_dir() else dest
    if not any((root / name).is_file() for name in ("pyproject.toml", "setup.py")):
        raise SdistBuildError(sdist.name, "no pyproject.toml or setup.py at its top level")
    return root


def _extract_tar(archive: tarfile.TarFile, dest: Path) -> None:
    if hasattr(tarfile, "data_filter"):  # 3.10.12+, 3.11.4+
        archive.extractall(dest, filter="data")
        return
    base = dest.resolve()
    for member in archive.getmembers():  # the same refusals as the "data" filter, roughly
        target = (dest / member.name).resolve()
        link_ok = not (member.issym() or member.islnk()) or (
            (target.parent / member.linkname).resolve().is_relative_to(base)
        )
        if not target.is_relative_to(base) or not link_ok or member.isdev():
            raise tarfile.TarError(f"unsafe member {member.name!r}")
    archive.extractall(dest)


def _build_environment(indexes: Sequence[str]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"  # keep the backend's output in order with build's
    if indexes:
        env["PIP_INDEX_URL"] = indexes[0]
        # pip ignores an empty value, which would let configured extras back in; a space is
        # a value, and splits into no extras
        env["PIP_EXTRA_INDEX_URL"] = " ".join(indexes[1:]) or " "
        env["PIP_NO_INDEX"] = "0"  # the indexes were chosen already, pip's no-index included
    else:
        env["PIP_NO_INDEX"] = "1"
    return env


def _run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[int, str]:
    """Run `argv`, output and errors merged; on timeout or interrupt kill its whole group."""
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=env, cwd=cwd, start_new_session=os.name == "posix",
        )  # fmt: skip
    except OSError as exc:
        return 127, f"cannot run {argv[0]}: {exc}"
    with proc:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            stopped = f"\nthe build took longer than {timeout:g}s and was stopped"
            out = _drain(proc) + stopped.encode()
        except BaseException:  # an interrupted notebook cell must not leave a build running
            _kill(proc)
            _drain(proc)
            raise
    return proc.returncode if proc.returncode is not None else -1, out.decode("utf-8", "replace")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL)  # the backend and its compilers too
        else:
            proc.kill()
    except ProcessLookupError:
        pass


def _drain(proc: subprocess.Popen[bytes]) -> bytes:
    try:
        return proc.communicate(timeout=10)[0] or b""
    except subprocess.TimeoutExpired:  # a grandchild escaped the group and holds the pipe
        return b""


def _scrub(text: str, indexes: Sequence[str]) -> str:
    """`text` without the indexes' credentials, however a tool printed them."""
    text = redact(text)
    for url in indexes:
        text = text.replace(url, strip_userinfo(url))
        userinfo = urlsplit(url).netloc.rpartition("@")[0]
        if not userinfo:
            continue
        user, _, password = userinfo.partition(":")
        secret = password or user  # a token alone in the user part is the secret
        for found in sorted({userinfo, unquote(userinfo), secret, unquote(secret)}, key=len)[::-1]:
            if len(found) >= 3:  # shorter would garble the output and hide nothing
                text = text.replace(found, "****")
    return text
