"""The store on a small filesystem that fills up mid-install (a tmpfs mounted for the
test; needs root, else the tests skip and say so): a clear error, no env left behind,
every cached file still whole, and the same command works once there is room."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from checks import cache_problems, nbenv, store_problems
from ledger import FaultLog
from support.index_server import Index, IndexServer
from support.wheels import build_wheel

MB = 1024 * 1024


@pytest.fixture
def small_fs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], Path]]:
    """`small_fs(megabytes)`: a tmpfs of that size holding NBENV_HOME (store and caches)."""
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = False

    def make(megabytes: int) -> Path:
        nonlocal mounted
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a small tmpfs needs root and mount(8); not available here")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs",
                               str(mount)], capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted = True
        home = mount / "nbenv"
        monkeypatch.setenv("NBENV_HOME", str(home))
        return home

    yield make
    if mounted:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def resize(home: Path, megabytes: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={megabytes}m", str(home.parent)], check=True)


@pytest.fixture
def big_index(make_index: Callable[..., IndexServer], tmp_path: Path) -> IndexServer:
    """`big` 1.0: a wheel holding 3 MB of incompressible bytes."""
    index = Index()
    index.add(build_wheel(tmp_path / "wheels", "big", "1.0", pad_bytes=3 * MB), pep658=True)
    return make_index(index)


# (where the disk fills, tmpfs size in MB, extra create options)
CASES = [
    ("download", 2, ()),
    ("unpack", 5, ()),
    ("copy into the env", 8, ("--link-mode", "copy")),
]


@pytest.mark.parametrize(("phase", "size", "options"), CASES, ids=[c[0] for c in CASES])
def test_a_full_disk_mid_install(
    phase: str,
    size: int,
    options: tuple[str, ...],
    small_fs: Callable[[int], Path],
    big_index: IndexServer,
    faults: FaultLog,
) -> None:
    home = small_fs(size)
    faults.inject("disk", f"filesystem full during {phase}")
    argv = ("create", "--no-kernel", "--no-compile", "--index-url", big_index.url, *options, "big")
    out = nbenv(*argv)
    assert out.returncode == 1, out.stderr
    assert "No space left on device" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not list((home / "envs").glob("[!.]*"))  # no env, not even one that looks whole
    assert not list((home / "envs").glob(".build-*"))  # and the partial build is gone
    problems = store_problems(home) + cache_problems(home / "cache")
    assert faults.lost(problems) == []
    resize(home, 32)
    again = nbenv(*argv)
    assert again.returncode == 0, again.stderr
    assert faults.lost(store_problems(home) + cache_problems(home / "cache")) == []
