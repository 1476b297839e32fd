"""Conda: parse `%%conda` headers, solve with py-rattler against a local channel of real
packages, install a prefix, and run what it holds. No test reaches a real channel."""

from __future__ import annotations

import asyncio
import bz2
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from support.conda_channel import PYTHON_VERSION, CondaChannel, serve_channel, solve_on

from nbenv.conda import (
    activation_env,
    install_prefix,
    prefix_python_dists,
    read_rattler_lock,
    write_rattler_lock,
)
from nbenv.errors import (
    CondaChannelError,
    CondaInstallError,
    CondaSolveError,
    CondaSpecError,
    UsageError,
)
from nbenv.resolve.conda import (
    CondaSolution,
    parse_conda_args,
    solve,
    with_platform,
)
from nbenv.resolve.conda_dists import dists_in_paths

pytestmark = pytest.mark.usefixtures("no_machine_conda_settings")


def _run(prefix: Path, *argv: str) -> str:
    env = {**os.environ, **activation_env(prefix)}
    done = subprocess.run(list(argv), env=env, capture_output=True, text=True, check=True)
    return done.stdout


# -- the header grammar -------------------------------------------------------------------


def test_header_grammar() -> None:
    request = parse_conda_args(
        ["-c", "my-channel", "--channel", "https://example.org/ch", "--python", "3.11",
         "numpy>=1.26", "openmpi=4.1.*=h*", "conda-forge::pkg"]
    )  # fmt: skip
    assert request.channels == ("my-channel", "https://example.org/ch")
    assert request.specs == ("numpy>=1.26", "openmpi=4.1.*=h*", "conda-forge::pkg", "python 3.11.*")
    assert request.python == "3.11"
    assert request.is_native


def test_no_channel_means_conda_forge_and_local_paths_become_urls(tmp_path: Path) -> None:
    assert parse_conda_args(["numpy"]).effective_channels == ("conda-forge",)
    request = parse_conda_args(["-c", str(tmp_path), "numpy"])
    assert request.channels == (tmp_path.resolve().as_uri() + "/",)


def test_bad_matchspec_is_quoted_with_a_caret() -> None:
    with pytest.raises(CondaSpecError) as info:
        parse_conda_args(["numpy", "scipy>>1"])
    message = str(info.value)
    assert "Invalid conda spec 'scipy>>1'" in message
    lines = message.splitlines()
    assert lines[1].strip() == "scipy>>1"
    assert lines[2].index("^") == lines[1].index(">>")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--platform", "linux-65", "x"], "Unknown conda platform 'linux-65'"),
        (["--cuda", "twelve", "x"], "--cuda wants a version"),
        (["--python", "3", "x"], "--python wants a version like 3.11"),
        (["--platform", "osx-arm64", "--glibc", "2.28", "x"], "--glibc applies to linux"),
        (["--bogus", "x"], "unknown option '--bogus'"),
        ([], "at least one package spec"),
    ],
)
def test_bad_options(argv: list[str], expected: str) -> None:
    with pytest.raises(UsageError, match=expected.replace(".", r"\.")):
        parse_conda_args(argv)


# -- the channel fixture is in the real formats --------------------------------------------


def test_channel_holds_real_package_formats(conda_channel: CondaChannel) -> None:
    subdir = conda_channel.path / conda_channel.subdir
    with zipfile.ZipFile(subdir / "libfoo-2.0-h0_0.conda") as archive:
        names = archive.namelist()
    assert names == ["metadata.json", "pkg-libfoo-2.0-h0_0.tar.zst", "info-libfoo-2.0-h0_0.tar.zst"]
    data = bz2.decompress((subdir / "hello-tool-1.0-h0_0.tar.bz2").read_bytes())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        paths = json.load(tar.extractfile("info/paths.json"))  # type: ignore[arg-type]
        assert tar.getmember("bin/hello-tool").mode == 0o755
    (entry,) = paths["paths"]
    assert entry["_path"] == "bin/hello-tool" and len(entry["sha256"]) == 64
    assert entry["prefix_placeholder"] == "/opt/anaconda1anaconda2anaconda3"
    repodata = json.loads((subdir / "repodata.json").read_text())
    assert "libfoo-2.0-h0_0.conda" in repodata["packages.conda"]
    assert "libfoo-1.0-h0_0.tar.bz2" in repodata["packages"]
    assert (conda_channel.path / "noarch" / "repodata.json").is_file()


# -- solve and install ----------------------------------------------------------------------


def test_solve_install_and_run(conda_channel: CondaChannel, tmp_path: Path) -> None:
    solution = solve_on(conda_channel.url, "hello-tool", "foo-app", "purepy")
    chosen = {p.name: p for p in solution.packages}
    assert sorted(chosen) == ["foo-app", "hello-tool", "libfoo", "purepy", "python"]
    assert chosen["libfoo"].version == "2.0"  # foo-app needs libfoo >=2
    assert chosen["libfoo"].filename.endswith(".conda")
    assert chosen["hello-tool"].filename.endswith(".tar.bz2")
    assert all(len(p.sha256) == 64 and p.url.startswith(conda_channel.url) for p in chosen.values())
    assert solution.platform == conda_channel.subdir

    prefix = tmp_path / "env"
    install_prefix(solution, prefix)
    assert _run(prefix, "hello-tool") == f"hello from hello-tool 1.0 in {prefix}\n"
    assert _run(prefix, "foo-app") == "foo-app 1.0 using libfoo 2.0\n"
    assert (prefix / "lib" / "libfoo.so").resolve().name == "libfoo.so.2"
    # the noarch python package landed in the prefix's site-packages, importable there
    out = _run(prefix, str(prefix / "bin" / "python"), "-c",
               "import sys, purepy; print(sys.prefix, purepy.__version__)")  # fmt: skip
    assert out.split() == [str(prefix), "1.0"]


def test_final_prefix_is_written_into_files(conda_channel: CondaChannel, tmp_path: Path) -> None:
    """The store builds in a temp dir and renames: files must name where the env will be."""
    solution = solve_on(conda_channel.url, "hello-tool")
    build, final = tmp_path / ".build-x", tmp_path / "final"
    install_prefix(solution, build, final_prefix=final)
    assert f"in {final}" in (build / "bin" / "hello-tool").read_text()


def test_python_dists_come_from_the_packages_files(
    conda_channel: CondaChannel, tmp_path: Path
) -> None:
    solution = solve_on(conda_channel.url, "purepy", "hello-tool")
    assert solution.python_version == PYTHON_VERSION
    assert solution.python_dists == {"purepy": "1.0"}
    install_prefix(solution, tmp_path / "env")
    assert prefix_python_dists(tmp_path / "env") == solution.python_dists


def test_python_dists_are_read_once(conda_channel: CondaChannel, isolated_env: object) -> None:
    from nbenv.paths import cache_dir

    first = solve_on(conda_channel.url, "purepy")
    cached = list((cache_dir() / "conda" / "dists").glob("*.json"))
    assert len(cached) == 1  # purepy only: python and the others cannot hold dists
    assert solve_on(conda_channel.url, "purepy").python_dists == first.python_dists


def test_dists_in_paths() -> None:
    paths = [
        "lib/python3.12/site-packages/python_dateutil-2.9.0.dist-info/METADATA",
        "lib/python3.12/site-packages/dateutil/__init__.py",
        "Lib/site-packages/Old.Package-1.2-py3.12.egg-info/PKG-INFO",
        "site-packages/torch-2.3.1.dist-info/RECORD",
        "share/doc/not-a-dist-1.0.dist-info/README",
    ]
    assert dists_in_paths(paths) == {
        "python-dateutil": "2.9.0",
        "old-package": "1.2",
        "torch": "2.3.1",
    }


def test_conflict_names_the_specs_and_the_clash(conda_channel: CondaChannel) -> None:
    with pytest.raises(CondaSolveError) as info:
        solve_on(conda_channel.url, "foo-app", "conflict-a")
    error = info.value
    assert error.specs == ("foo-app", "conflict-a")
    message = str(error)
    assert message.startswith(
        f"Cannot solve the conda packages foo-app conflict-a for {conda_channel.subdir}"
    )
    for part in ("libfoo >=2", "libfoo <2", "libfoo 2.0", "Loosen or remove"):
        assert part in message


def test_unknown_package(conda_channel: CondaChannel) -> None:
    with pytest.raises(CondaSolveError, match="No candidates were found for nosuchpkg"):
        solve_on(conda_channel.url, "nosuchpkg")


def test_cuda_requirement_needs_the_virtual_package(conda_channel: CondaChannel) -> None:
    with pytest.raises(CondaSolveError) as info:
        solve_on(conda_channel.url, "gpu-lib")
    assert "__cuda >=12" in str(info.value)
    assert "pass --cuda VERSION" in str(info.value)
    solution = solve_on(conda_channel.url, "--cuda", "12.4", "gpu-lib")
    assert [p.name for p in solution.packages] == ["gpu-lib"]
    assert "__cuda=12.4=0" in solution.virtual_packages
    with pytest.raises(CondaSolveError):
        solve_on(conda_channel.url, "--cuda", "11.8", "gpu-lib")


def test_conda_override_variables_are_honoured(
    conda_channel: CondaChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONDA_OVERRIDE_CUDA", "12.2")
    assert solve_on(conda_channel.url, "gpu-lib").package("gpu-lib") is not None


def test_another_platform_solves_without_installing(
    conda_channel: CondaChannel, tmp_path: Path
) -> None:
    solution = solve_on(conda_channel.url, "--platform", "osx-arm64", "hello-tool")
    (package,) = solution.packages
    assert (package.subdir, package.build) == ("osx-arm64", "h1_0")
    assert solution.platform == "osx-arm64"
    assert "__osx=11.0=0" in solution.virtual_packages
    assert not any(v.startswith("__glibc") for v in solution.virtual_packages)
    with pytest.raises(UsageError, match="for osx-arm64; it cannot be installed"):
        install_prefix(solution, tmp_path / "env")
    assert not (tmp_path / "env").exists()
    # the same request, re-targeted: one solve per platform of a lock
    native = solve(with_platform(parse_conda_args(["-c", conda_channel.url, "hello-tool"]), None))
    assert native.platform == conda_channel.subdir


def test_solution_round_trips_and_rebuilds(conda_channel: CondaChannel, tmp_path: Path) -> None:
    solution = solve_on(conda_channel.url, "foo-app", "purepy")
    again = CondaSolution.from_dict(json.loads(json.dumps(solution.to_dict())))
    assert again == solution
    install_prefix(again, tmp_path / "env")  # a lock alone rebuilds the env
    assert _run(tmp_path / "env", "foo-app") == "foo-app 1.0 using libfoo 2.0\n"
    lock = tmp_path / "pixi.lock"
    write_rattler_lock([solution], lock)
    assert read_rattler_lock(lock, solution.platform) == list(solution.packages)


def test_activation_env(conda_channel: CondaChannel, tmp_path: Path) -> None:
    prefix = tmp_path / "env"
    install_prefix(solve_on(conda_channel.url, "foo-app"), prefix)
    env = activation_env(prefix, base={"PATH": "/usr/bin"})
    assert env["CONDA_PREFIX"] == str(prefix)
    assert env["PATH"] == f"{prefix / 'bin'}{os.pathsep}/usr/bin"
    assert env["FOO_APP_HOME"] == f"{prefix}/share/foo-app"  # from its activate.d script
    if sys.platform.startswith("linux"):
        assert env["LD_LIBRARY_PATH"] == str(prefix / "lib")
    # for a kernelspec: jupyter_client fills ${PATH} in when it starts the kernel
    assert activation_env(prefix, base={"PATH": "${PATH}"})["PATH"].endswith("${PATH}")


def test_solve_inside_a_running_event_loop(conda_channel: CondaChannel) -> None:
    """A Jupyter kernel runs an event loop in its main thread; magics call solve from it."""

    async def in_kernel() -> CondaSolution:
        return solve_on(conda_channel.url, "hello-tool")

    assert asyncio.run(in_kernel()).package("hello-tool") is not None


# -- channels over HTTP: credentials and a channel that went away ---------------------------


def _leaks(text: str, *secrets: str) -> list[str]:
    return [secret for secret in secrets if secret in text]


def test_token_channel_credentials_stay_out(conda_channel: CondaChannel, tmp_path: Path) -> None:
    with serve_channel(conda_channel.path, token="tk-s3cr3t") as server:
        channel = f"{server.url}t/tk-s3cr3t/"
        solution = solve_on(channel, "hello-tool", "purepy")
        text = json.dumps(solution.to_dict())
        assert not _leaks(text, "tk-s3cr3t", "/t/")
        assert solution.package("purepy").url.startswith(server.url + "noarch/")  # type: ignore[union-attr]
        assert solution.python_dists == {"purepy": "1.0"}  # read through the token URL
        install_prefix(solution, tmp_path / "env", channels=[channel])
        assert _run(tmp_path / "env", "hello-tool").startswith("hello from")
        with pytest.raises(CondaChannelError) as info:
            solve_on(f"{server.url}t/wrong-token/", "hello-tool")
        assert info.value.url == server.url
        assert not _leaks(str(info.value), "wrong-token")
        # the lock has no token: without the channel as given (or rattler's auth file),
        # packages not yet cached cannot be fetched
        with pytest.raises(CondaInstallError) as failed:
            install_prefix(solution, tmp_path / "other", cache_dir=tmp_path / "empty-cache")
        assert not _leaks(str(failed.value), "tk-s3cr3t")


def test_basic_auth_from_url_or_rattler_auth_file(
    conda_channel: CondaChannel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve_channel(conda_channel.path, basic=("alice", "pa55word")) as server:
        channel = server.url.replace("http://", "http://alice:pa55word@")
        solution = solve_on(channel, "hello-tool")
        assert not _leaks(json.dumps(solution.to_dict()), "alice", "pa55word")
        install_prefix(solution, tmp_path / "env", channels=[channel])
        # rattler's own credential store: the channel is given without credentials
        auth = tmp_path / "credentials.json"
        entry = {"BasicHTTP": {"username": "alice", "password": "pa55word"}}
        auth.write_text(json.dumps({"127.0.0.1": entry}))  # rattler keys it by host alone
        monkeypatch.setenv("RATTLER_AUTH_FILE", str(auth))
        assert solve_on(server.url, "hello-tool") == solution


def test_offline_rebuild_with_the_channel_gone(conda_channel: CondaChannel, tmp_path: Path) -> None:
    with serve_channel(conda_channel.path) as server:
        solution = solve_on(server.url, "foo-app", "hello-tool")
        install_prefix(solution, tmp_path / "first")
    # the server is stopped: packages come from the cache, repodata too when asked
    install_prefix(solution, tmp_path / "second")
    assert _run(tmp_path / "second", "foo-app") == "foo-app 1.0 using libfoo 2.0\n"
    assert solve_on(server.url, "foo-app", "hello-tool", offline=True) == solution
    with pytest.raises(CondaChannelError) as info:
        solve_on(server.url, "foo-app")
    assert info.value.url == server.url
    assert "Could not read conda channel" in str(info.value)


def test_missing_package_and_no_channel_is_an_install_error(
    conda_channel: CondaChannel, tmp_path: Path
) -> None:
    with serve_channel(conda_channel.path) as server:
        solution = solve_on(server.url, "hello-tool")
    with pytest.raises(CondaInstallError) as info:
        install_prefix(solution, tmp_path / "env")
    assert "cannot be reached" in str(info.value)
