"""nbenv.conda_check: a conda package's file list is checked before rattler links it, read
from what rattler would link, and a safe verdict is remembered by sha256."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support.conda_channel import build_conda_package, index_channel, native_subdir, serve_channel

from nbenv import conda_check
from nbenv.conda import install_prefix
from nbenv.conda_check import check_packages, escaping_path
from nbenv.errors import CondaInstallError, UnsafeCondaPackageError
from nbenv.resolve.conda import parse_conda_args, solve
from nbenv.resolve.conda_runtime import conda_client


@pytest.mark.parametrize(
    ("paths", "bad"),
    [
        (["bin/tool", "share/a b/c.txt", "lib/python3.11/site-packages/x..y.py"], None),
        (["bin/tool", "/etc/passwd"], "/etc/passwd"),
        (["share/../../up"], "share/../../up"),
        (["../up"], "../up"),
        (["C:/Windows/x.dll"], "C:/Windows/x.dll"),
        (["Lib\\..\\..\\x"], "Lib\\..\\..\\x"),
        ([""], ""),
    ],
)
def test_escaping_paths(paths: list[str], bad: str | None) -> None:
    assert escaping_path(paths) == bad


@pytest.fixture
def channel(tmp_path: Path) -> Path:
    root = tmp_path / "channel"
    build_conda_package(root, "good", "1.0", subdir=native_subdir(),
                        files={"share/good.txt": "g\n"})  # fmt: skip
    build_conda_package(root, "evil", "1.0", subdir=native_subdir(),
                        files={"/tmp/nbenv-check-evil.txt": "x\n"}, fmt="conda")  # fmt: skip
    index_channel(root)
    return root


def _forget() -> None:
    conda_check._safe.clear()


@pytest.fixture(autouse=True)
def _fresh_process() -> None:
    """Verdicts kept in memory by earlier tests (same sha256s) would skip the reads."""
    _forget()


def test_a_safe_verdict_is_kept_and_read_from_rattlers_cache(channel: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    solution = solve(parse_conda_args(["-c", channel.as_uri(), "good"]), cache_dir=cache)
    install_prefix(solution, tmp_path / "env", cache_dir=cache)
    (good,) = solution.packages
    marks = cache / "conda" / "checked"
    assert [p.name for p in marks.iterdir()] == [good.sha256]
    pkgs = cache / "conda" / "pkgs"
    # with the archive gone, the file list comes from rattler's extracted copy
    shutil.rmtree(channel)
    _forget()
    (marks / good.sha256).unlink()
    check_packages(solution.packages, pkgs, conda_client(), "env")
    assert (marks / good.sha256).exists()
    # what is checked is what rattler would link: a tampered copy is refused
    paths_json = pkgs / "good-1.0-h0_0" / "info" / "paths.json"
    data = json.loads(paths_json.read_text())
    data["paths"].append({"_path": "/etc/nbenv-tampered", "path_type": "hardlink"})
    paths_json.write_text(json.dumps(data))
    _forget()
    (marks / good.sha256).unlink()
    with pytest.raises(UnsafeCondaPackageError) as info:
        check_packages(solution.packages, pkgs, conda_client(), "env")
    assert info.value.path == "/etc/nbenv-tampered"
    assert info.value.package == "good-1.0-h0_0.tar.bz2"
    # a verdict already given is not read again (that is what keeps creates cheap)
    (marks / good.sha256).touch()
    check_packages(solution.packages, pkgs, conda_client(), "env")


def test_a_cache_entry_of_another_archive_is_not_trusted(channel: Path, tmp_path: Path) -> None:
    """rattler's `<stem>.lock` names the sha256 it extracted: another build of the same
    name-version-build in the cache does not vouch for this one."""
    cache = tmp_path / "cache"
    pkgs = cache / "conda" / "pkgs"
    solution = solve(parse_conda_args(["-c", channel.as_uri(), "good"]), cache_dir=cache)
    install_prefix(solution, tmp_path / "env", cache_dir=cache)
    lock = pkgs / "good-1.0-h0_0.lock"
    lock.write_bytes(lock.read_bytes()[:8] + bytes(32))
    _forget()
    shutil.rmtree(cache / "conda" / "checked")
    shutil.rmtree(channel)  # so the archive cannot be read either
    with pytest.raises(CondaInstallError) as info:
        check_packages(solution.packages, pkgs, conda_client(), "env")
    assert "cannot read the file list of good-1.0-h0_0.tar.bz2" in str(info.value)


def test_an_unsafe_package_over_http_is_refused_before_any_download(
    channel: Path, tmp_path: Path
) -> None:
    """A `.conda` over HTTP: its file list is read by range requests; the package is
    refused, and rattler never fetched or linked it."""
    with serve_channel(channel) as server:
        solution = solve(parse_conda_args(["-c", server.url, "evil"]), cache_dir=tmp_path / "c")
        with pytest.raises(UnsafeCondaPackageError) as info:
            install_prefix(solution, tmp_path / "env", cache_dir=tmp_path / "c")
    assert "evil-1.0-h0_0.conda" in str(info.value)
    assert "/tmp/nbenv-check-evil.txt" in str(info.value)
    assert not list((tmp_path / "c" / "conda").glob("pkgs/evil*"))
    assert not (tmp_path / "env").exists()
    assert not Path("/tmp/nbenv-check-evil.txt").exists()
