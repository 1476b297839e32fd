"""What makes the conda path fast stays correct. What the solve keeps per process
(converted records, virtual packages, the Python dists read from packages) never outlives
what it was computed from: a changed repodata entry, another channel, other overrides or
another cache dir all give fresh answers. The install's progress reporter, which rattler
calls only for the callbacks it defines, still hears of every package linked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support.conda_channel import (
    CondaChannel,
    build_conda_package,
    index_channel,
    native_subdir,
    solve_on,
)

from nbenv.conda import install_prefix
from nbenv.errors import CondaSolveError
from nbenv.resolve import conda as conda_solve
from nbenv.resolve import conda_dists
from nbenv.resolve.conda import parse_conda_args, solve, virtual_packages

pytestmark = pytest.mark.usefixtures("no_machine_conda_settings")


def _channel(root: Path) -> str:
    build_conda_package(root, "tool", "1.0", subdir=native_subdir(), depends=["libbar"])
    build_conda_package(root, "libbar", "1.0", subdir=native_subdir())
    index_channel(root)
    return root.as_uri() + "/"


def _patch_repodata(root: Path, name: str, **fields: object) -> None:
    """Change a package's entry as a channel's repodata patch does: same file, same sha256."""
    path = root / native_subdir() / "repodata.json"
    data = json.loads(path.read_text())
    for section in ("packages", "packages.conda"):
        for filename, entry in data.get(section, {}).items():
            if filename.startswith(f"{name}-"):
                entry.update(fields)
    path.write_text(json.dumps(data))


def test_a_patched_repodata_entry_is_converted_anew(tmp_path: Path) -> None:
    url = _channel(tmp_path / "channel")
    first = solve_on(url, "tool")
    tool = first.package("tool")
    assert tool is not None and (tool.license, tool.constrains) == ("BSD-3-Clause", ())
    assert solve_on(url, "tool") == first  # the second solve answers from the kept records

    _patch_repodata(tmp_path / "channel", "tool", license="MIT", constrains=["libbar <2"])
    patched = solve_on(url, "tool").package("tool")
    assert patched is not None
    assert patched.sha256 == tool.sha256  # the same file: only the entry changed
    assert (patched.license, patched.constrains) == ("MIT", ("libbar <2",))


def test_the_same_packages_in_another_channel_keep_their_own_urls(tmp_path: Path) -> None:
    url = _channel(tmp_path / "one")
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    other = (tmp_path / "two").as_uri() + "/"
    first, second = solve_on(url, "tool"), solve_on(other, "tool")
    assert [p.sha256 for p in first.packages] == [p.sha256 for p in second.packages]
    for package in second.packages:
        assert package.channel == other
        assert package.url.startswith(other)
    assert all(p.url.startswith(url) for p in first.packages)


def test_a_kept_conversion_equals_a_fresh_one(tmp_path: Path) -> None:
    url = _channel(tmp_path / "channel")
    warm = solve_on(url, "tool")
    conda_solve._packages.clear()
    conda_solve._virtual_for.cache_clear()
    cold = solve_on(url, "tool")
    assert json.dumps(cold.to_dict()) == json.dumps(warm.to_dict())


def test_virtual_packages_follow_the_override_variables(
    conda_channel: CondaChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = parse_conda_args(["-c", conda_channel.url, "gpu-lib"])
    monkeypatch.setenv("CONDA_OVERRIDE_CUDA", "12.2")
    assert "__cuda=12.2=0" in solve(request).virtual_packages
    monkeypatch.setenv("CONDA_OVERRIDE_CUDA", "11.8")  # gpu-lib needs __cuda >=12
    with pytest.raises(CondaSolveError, match="__cuda"):
        solve(request)
    monkeypatch.setenv("CONDA_OVERRIDE_CUDA", "12.4")
    assert "__cuda=12.4=0" in solve(request).virtual_packages
    # an option beats the variable, and each option value has its own answer
    for cuda in ("12.6", "13.0"):
        optioned = parse_conda_args(["-c", conda_channel.url, "--cuda", cuda, "gpu-lib"])
        assert f"__cuda={cuda}=0" in solve(optioned).virtual_packages


def test_virtual_packages_differ_per_platform_and_are_a_new_list_each_time() -> None:
    native = parse_conda_args(["hello-tool"])
    osx = parse_conda_args(["--platform", "osx-arm64", "--osx", "13.1", "hello-tool"])
    names = {str(v.name.normalized): str(v.version) for v in virtual_packages(osx)}
    assert names["__osx"] == "13.1" and "__glibc" not in names
    packages = virtual_packages(native)
    packages.clear()  # the caller's list: the kept one is untouched
    assert virtual_packages(native)


def test_dists_are_read_again_for_another_cache_dir(
    conda_channel: CondaChannel, tmp_path: Path
) -> None:
    first = solve_on(conda_channel.url, "purepy", cache_dir=tmp_path / "a")
    second = solve_on(conda_channel.url, "purepy", cache_dir=tmp_path / "b")
    assert first.python_dists == second.python_dists == {"purepy": "1.0"}
    for root in ("a", "b"):
        assert len(list((tmp_path / root / "conda" / "dists").glob("*.json"))) == 1
    # kept in memory for the process: a removed file is neither needed nor written again
    (cached,) = (tmp_path / "a" / "conda" / "dists").glob("*.json")
    cached.unlink()
    assert solve_on(conda_channel.url, "purepy", cache_dir=tmp_path / "a") == first
    assert not cached.exists()
    conda_dists._known.clear()  # a new process reads the package again
    assert solve_on(conda_channel.url, "purepy", cache_dir=tmp_path / "a") == first
    assert cached.exists()


def test_a_package_the_solve_read_is_not_read_again_by_the_install_check(
    conda_channel: CondaChannel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rattler.package import PathsJson

    from nbenv import conda_check

    conda_dists._known.clear()  # a new process: nothing read yet
    conda_dists._lists.clear()
    conda_check._safe.clear()
    reads: list[str] = []
    real = PathsJson.from_package_archive

    def counted(path: object) -> object:
        reads.append(Path(str(path)).name)
        return real(path)  # type: ignore[arg-type]

    monkeypatch.setattr(PathsJson, "from_package_archive", staticmethod(counted))
    cache = tmp_path / "cache"

    solution = solve_on(conda_channel.url, "purepy", cache_dir=cache)
    assert solution.python_dists == {"purepy": "1.0"}
    purepy = next(p for p in solution.packages if p.name == "purepy")
    assert reads.count(purepy.filename) == 1  # the solve read it for its dists
    install_prefix(solution, tmp_path / "env", cache_dir=cache)

    # the install's path check used that read: every package's list was read once at most
    assert reads.count(purepy.filename) == 1
    assert sorted(set(reads)) == sorted(reads)
    assert (cache / "conda" / "checked" / purepy.sha256).exists()  # and it was checked


class _Recorder:
    def __init__(self) -> None:
        self.progress_calls: list[tuple[str, int, int | None]] = []

    def stage(self, name: str) -> None:
        pass

    def progress(self, name: str, done: int, total: int | None) -> None:
        self.progress_calls.append((name, done, total))

    def note(self, message: str) -> None:
        pass

    def cached(self, name: str, hits: int, total: int) -> None:
        pass


def test_install_reports_every_package_linked(conda_channel: CondaChannel, tmp_path: Path) -> None:
    solution = solve_on(conda_channel.url, "foo-app", "hello-tool")
    recorder = _Recorder()
    install_prefix(solution, tmp_path / "env", reporter=recorder)
    total = len(solution.packages)
    linked = [(done, of) for name, done, of in recorder.progress_calls if name.startswith("link")]
    assert sorted(linked) == [(n, total) for n in range(1, total + 1)]
