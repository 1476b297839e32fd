"""Wheels built from sdists: once, cached, safely; failures explained without secrets.

The sdists are made here, with an in-tree PEP 517 backend that needs nothing installed, so
the isolated build never touches an index.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import textwrap
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from nbenv.errors import SdistBuildError
from nbenv.resolve.sdist import build_wheel_from_sdist

BACKEND = textwrap.dedent(
    '''
    """A PEP 517 backend in 40 lines: enough for pypa/build, no dependencies."""
    import base64, hashlib, os, sys, zipfile

    NAME, VERSION = "tinypkg", "1.0"
    DIST = f"{NAME}-{VERSION}.dist-info"

    def get_requires_for_build_wheel(config_settings=None):
        return []

    def get_requires_for_build_sdist(config_settings=None):
        return []

    def build_sdist(sdist_directory, config_settings=None):
        raise NotImplementedError("this backend only builds wheels")

    def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
        counter = os.environ.get("TINYPKG_BUILD_COUNTER")
        if counter:
            with open(counter, "a") as f:
                f.write(f"{os.getpid()}\\n")
        if os.path.exists("BROKEN"):
            if os.path.exists("LEAK"):  # a careless tool printing its configuration
                print("index:", os.environ.get("PIP_INDEX_URL"), file=sys.stderr)
                print("extra:", os.environ.get("PIP_EXTRA_INDEX_URL"), file=sys.stderr)
            raise RuntimeError("tinypkg backend exploded: the frobnicator is missing")
        metadata = f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n"
        wheel = "Wheel-Version: 1.0\\nGenerator: tiny\\nRoot-Is-Purelib: true\\n"
        wheel += "Tag: py3-none-any\\n"
        files = {
            f"{NAME}/__init__.py": b"VALUE = 42\\n",
            f"{DIST}/METADATA": metadata.encode(),
            f"{DIST}/WHEEL": wheel.encode(),
        }
        record = []
        for path, data in files.items():
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(data)}")
        record.append(f"{DIST}/RECORD,,")
        files[f"{DIST}/RECORD"] = ("\\n".join(record) + "\\n").encode()
        name = f"{NAME}-{VERSION}-py3-none-any.whl"
        with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as whl:
            for path, data in files.items():
                whl.writestr(path, data)
        return name
    '''
)

PYPROJECT = textwrap.dedent(
    """
    [build-system]
    requires = []
    build-backend = "backend"
    backend-path = ["."]

    [project]
    name = "tinypkg"
    version = "1.0"
    """
)


def make_sdist(directory: Path, *, broken: bool = False, leak: bool = False) -> tuple[Path, str]:
    """A tinypkg-1.0.tar.gz and its sha256."""
    members = {
        "pyproject.toml": PYPROJECT,
        "backend.py": BACKEND,
        "PKG-INFO": "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
        "tinypkg/__init__.py": "VALUE = 42\n",
    }
    if broken:
        members["BROKEN"] = ""
    if leak:
        members["LEAK"] = ""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tinypkg-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(f"tinypkg-1.0/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


class Notes:
    def __init__(self) -> None:
        self.notes: list[str] = []
        self._lock = threading.Lock()

    def stage(self, name: str) -> None:
        pass

    def progress(self, name: str, done: int, total: int | None) -> None:
        pass

    def note(self, message: str) -> None:
        with self._lock:
            self.notes.append(message)

    def cached(self, name: str, hits: int, total: int) -> None:
        pass


@pytest.fixture
def counter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file the backend appends a line to per build; the build env never reaches an index."""
    for key in list(os.environ):
        if key.startswith("PIP_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    path = tmp_path / "builds.txt"
    monkeypatch.setenv("TINYPKG_BUILD_COUNTER", str(path))
    return path


def builds(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def test_builds_once_then_serves_the_cached_wheel(tmp_path: Path, counter: Path) -> None:
    sdist, sha = make_sdist(tmp_path / "dl")
    reporter = Notes()
    cache = tmp_path / "cache"
    wheel = build_wheel_from_sdist(sdist, cache, sdist_sha256=sha, indexes=[], reporter=reporter)
    assert wheel == cache / "built" / sha / "tinypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as whl:
        assert whl.read("tinypkg/__init__.py") == b"VALUE = 42\n"
        assert b"Name: tinypkg" in whl.read("tinypkg-1.0.dist-info/METADATA")
    assert reporter.notes == ["building wheel for tinypkg-1.0.tar.gz"]

    again = build_wheel_from_sdist(sdist, cache, sdist_sha256=sha, indexes=[], reporter=reporter)
    assert again == wheel
    assert builds(counter) == 1
    assert reporter.notes == ["building wheel for tinypkg-1.0.tar.gz"]
    assert [p.name for p in wheel.parent.iterdir()] == [wheel.name]  # no temp dirs left


def test_concurrent_threads_build_once(tmp_path: Path, counter: Path) -> None:
    sdist, sha = make_sdist(tmp_path / "dl")
    cache = tmp_path / "cache"

    def build(_: int) -> Path:
        return build_wheel_from_sdist(sdist, cache, sdist_sha256=sha, indexes=[])

    with ThreadPoolExecutor(max_workers=4) as pool:
        wheels = set(pool.map(build, range(4)))
    assert len(wheels) == 1
    assert builds(counter) == 1


def test_concurrent_processes_build_once(tmp_path: Path, counter: Path) -> None:
    sdist, sha = make_sdist(tmp_path / "dl")
    cache = tmp_path / "cache"
    script = (
        "import sys; from pathlib import Path\n"
        "from nbenv.resolve.sdist import build_wheel_from_sdist\n"
        "print(build_wheel_from_sdist(Path(sys.argv[1]), Path(sys.argv[2]),"
        " sdist_sha256=sys.argv[3], indexes=[]))\n"
    )
    argv = [sys.executable, "-c", script, str(sdist), str(cache), sha]
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    results = [proc.communicate(timeout=300) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), results
    assert len({out.strip() for out, _ in results}) == 1
    assert builds(counter) == 1


def test_a_failed_build_says_why_and_leaves_nothing(tmp_path: Path, counter: Path) -> None:
    sdist, sha = make_sdist(tmp_path / "dl", broken=True)
    cache = tmp_path / "cache"
    with pytest.raises(SdistBuildError) as err:
        build_wheel_from_sdist(sdist, cache, sdist_sha256=sha, indexes=[])
    assert err.value.filename == "tinypkg-1.0.tar.gz"
    assert "the frobnicator is missing" in str(err.value)
    assert str(err.value).startswith("Building a wheel from tinypkg-1.0.tar.gz failed:")
    assert list((cache / "built" / sha).iterdir()) == []
    # failures are not cached: the next call tries again
    with pytest.raises(SdistBuildError):
        build_wheel_from_sdist(sdist, cache, sdist_sha256=sha, indexes=[])
    assert builds(counter) == 2


def test_credentials_never_appear_in_errors_or_notes(tmp_path: Path, counter: Path) -> None:
    sdist, sha = make_sdist(tmp_path / "dl", broken=True, leak=True)
    indexes = [
        "https://alice:s3cr3t%2Fpass@private.example.invalid/simple",
        "https://tok-EN123456@tokens.example.invalid/simple",
    ]
    reporter = Notes()
    with pytest.raises(SdistBuildError) as err:
        build_wheel_from_sdist(
            sdist, tmp_path / "cache", sdist_sha256=sha, indexes=indexes, reporter=reporter
        )
    shown = [str(err.value), err.value.output, *reporter.notes]
    for secret in ("s3cr3t", "tok-EN123456"):
        assert not any(secret in text for text in shown)
    # the backend did print the URLs, so the scrubbing is what kept the secrets out
    assert "index: https://private.example.invalid/simple" in err.value.output
    assert "extra: https://tokens.example.invalid/simple" in err.value.output


def test_a_killed_build_leaves_no_wheel_behind(tmp_path: Path, counter: Path) -> None:
    sdist, sha = make_sdist(tmp_path / "dl")
    cache = tmp_path / "cache"
    # what a build killed mid-way leaves: a temp dir with a partial file, never a *.whl at the top
    leftover = cache / "built" / sha / ".tmp-dead" / "dist"
    leftover.mkdir(parents=True)
    (leftover / "tinypkg-1.0-py3-none-any.whl").write_bytes(b"PK\x03\x04 half a wheel")
    wheel = build_wheel_from_sdist(sdist, cache, sdist_sha256=sha, indexes=[])
    assert zipfile.is_zipfile(wheel)
    assert not (cache / "built" / sha / ".tmp-dead").exists()
    assert builds(counter) == 1


def test_a_hung_build_is_stopped(tmp_path: Path, counter: Path) -> None:
    sdist, sha = make_sdist(tmp_path / "dl")
    hang = tmp_path / "hang.py"  # stands in for the interpreter: ignores its arguments, sleeps
    hang.write_text("import time\nprint('starting', flush=True)\ntime.sleep(120)\n")
    python = tmp_path / "python-that-hangs"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} {hang}\n")
    python.chmod(0o755)
    with pytest.raises(SdistBuildError) as err:
        build_wheel_from_sdist(
            sdist, tmp_path / "cache", sdist_sha256=sha, indexes=[], python=str(python), timeout=2
        )
    assert "longer than 2s" in str(err.value)
    assert "starting" in err.value.output


def test_archives_that_are_not_sdists(tmp_path: Path, counter: Path) -> None:
    cache = tmp_path / "cache"
    garbage = tmp_path / "garbage-1.0.tar.gz"
    garbage.write_bytes(b"not an archive")
    with pytest.raises(SdistBuildError, match="cannot unpack"):
        build_wheel_from_sdist(garbage, cache, sdist_sha256="a" * 64, indexes=[])
    empty = tmp_path / "empty-1.0.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("empty-1.0/README", "nothing to build")
    with pytest.raises(SdistBuildError, match=r"no pyproject\.toml or setup\.py"):
        build_wheel_from_sdist(empty, cache, sdist_sha256="b" * 64, indexes=[])
    with pytest.raises(ValueError, match="sha256"):
        build_wheel_from_sdist(empty, cache, sdist_sha256="../../etc", indexes=[])
