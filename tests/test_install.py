"""Installing wheels: real venvs, real wheels, checked with the env's python and real pip."""

from __future__ import annotations

import base64
import contextlib
import csv
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest
from support.wheels import build_wheel, sha256_file

from nbenv import linking as linking_module
from nbenv import wheelcache as wheelcache_module
from nbenv.errors import (
    InstallConflictError,
    InstallError,
    InvalidWheelError,
    UnsafeWheelError,
)
from nbenv.install import Unpacker, install_wheels
from nbenv.venv import compile_bytecode, create_venv, env_python
from nbenv.wheelcache import WheelCache, WheelToInstall

ALPHA_MODULES = {
    "alpha/__init__.py": '__version__ = "1.0"\n',
    "alpha/cli.py": "def main():\n    print('alpha cli ok')\n",
}
ALPHA_DATA = {
    "scripts/alpha-tool": "#!python\nprint('alpha tool ok')\n",
    "data/share/alpha/readme.txt": "hello from alpha\n",
    "headers/alpha.h": "#define ALPHA 1\n",
}


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []
        self._lock = threading.Lock()

    def stage(self, name: str) -> None:
        with self._lock:
            self.events.append(("stage", name))

    def progress(self, name: str, done: int, total: int | None) -> None:
        with self._lock:
            self.events.append(("progress", name, str(done), str(total)))

    def note(self, message: str) -> None:
        with self._lock:
            self.events.append(("note", message))

    def cached(self, name: str, hits: int, total: int) -> None:
        with self._lock:
            self.events.append(("cached", name, str(hits), str(total)))

    def notes(self) -> list[str]:
        return [event[1] for event in self.events if event[0] == "note"]


@pytest.fixture(autouse=True)
def no_implicit_bytecode(monkeypatch: pytest.MonkeyPatch) -> None:
    # Imports in the envs must not write .pyc: only compile_bytecode may.
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")


@pytest.fixture
def wheel_dir(tmp_path: Path) -> Path:
    return tmp_path / "wheels"


@pytest.fixture
def cache_root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def to_install(path: Path, *, requested: bool = False) -> WheelToInstall:
    return WheelToInstall(path, sha256_file(path), requested=requested)


def alpha_wheel(out: Path, version: str = "1.0") -> WheelToInstall:
    wheel = build_wheel(
        out,
        "alpha",
        version,
        modules=ALPHA_MODULES,
        console_scripts={"alpha-cli": "alpha.cli:main"},
        data_files=ALPHA_DATA,
    )
    return to_install(wheel, requested=True)


def beta_wheel(out: Path) -> WheelToInstall:
    return to_install(build_wheel(out, "beta", "2.0", requires_dist=["alpha"]))


def make_env(tmp_path: Path, name: str = "env") -> Path:
    env = tmp_path / name
    create_venv(Path(sys.executable), env)
    return env


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kwargs)


def env_paths(env: Path) -> dict[str, str]:
    code = "import json, sysconfig; print(json.dumps(sysconfig.get_paths()))"
    return json.loads(run([str(env_python(env)), "-c", code], check=True).stdout)  # type: ignore[no-any-return]


def site_packages(env: Path) -> Path:
    return Path(env_paths(env)["purelib"])


def record_digest_of(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def rewrite_wheel(source: Path, target: Path, edit: dict[str, bytes | None]) -> Path:
    """A copy of `source` with members replaced (bytes) or dropped (None); RECORD untouched
    unless edited."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            if info.filename in edit:
                data = edit[info.filename]
                if data is not None:
                    new.writestr(info, data)
            else:
                new.writestr(info, old.read(info))
    return target


# --- venv ----------------------------------------------------------------------------------


def test_create_venv_gives_a_python_without_pip(tmp_path: Path) -> None:
    env = tmp_path / "env"
    python = create_venv(Path(sys.executable), env)
    assert python == env_python(env)
    done = run([str(python), "-c", "import sys; print(sys.prefix)"], check=True)
    assert Path(done.stdout.strip()).resolve() == env.resolve()
    assert not list(site_packages(env).glob("pip*"))


def test_create_venv_failure_is_an_nbenv_error(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="could not create"):
        create_venv(tmp_path / "no-such-python", tmp_path / "env")


# --- installing ----------------------------------------------------------------------------


def test_installed_env_imports_runs_scripts_and_places_data(
    tmp_path: Path, wheel_dir: Path, cache_root: Path
) -> None:
    env = make_env(tmp_path)
    recorder = Recorder()
    wheels = [alpha_wheel(wheel_dir), beta_wheel(wheel_dir)]
    report = install_wheels(env, wheels, cache_root=cache_root, reporter=recorder)

    python = str(env_python(env))
    code = "import alpha, beta; print(alpha.__version__, beta.__version__, alpha.__file__)"
    out = run([python, "-c", code], check=True).stdout.split()
    assert out[:2] == ["1.0", "2.0"]
    assert Path(out[2]).is_relative_to(env)

    bin_dir = env_python(env).parent
    assert run([str(bin_dir / "alpha-cli")], check=True).stdout == "alpha cli ok\n"
    tool = bin_dir / "alpha-tool"
    assert run([str(tool)], check=True).stdout == "alpha tool ok\n"
    assert tool.read_text().splitlines()[0] == f"#!{env_python(env)}"  # shebang rewritten

    assert (env / "share" / "alpha" / "readme.txt").read_text() == "hello from alpha\n"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    header = env / "include" / "site" / f"python{version}" / "alpha" / "alpha.h"
    assert header.read_text() == "#define ALPHA 1\n"

    assert report.wheels == 2 and report.unpacked == 2
    assert report.copied == 0 and report.linked >= 10  # modules, data, dist-info files
    # INSTALLER + RECORD each, REQUESTED for alpha, and the two scripts
    assert report.written == 2 * 2 + 1 + 2
    assert ("stage", "installing wheels") in recorder.events
    assert ("progress", "installing wheels", "2", "2") in recorder.events


def test_auto_mode_hardlinks_from_the_cache_but_writes_scripts(
    tmp_path: Path, wheel_dir: Path, cache_root: Path
) -> None:
    env = make_env(tmp_path)
    wheel = alpha_wheel(wheel_dir)
    install_wheels(env, [wheel], cache_root=cache_root)
    cached = WheelCache(cache_root).unpacked(wheel).tree

    installed = site_packages(env) / "alpha" / "__init__.py"
    assert installed.stat().st_ino == (cached / "alpha" / "__init__.py").stat().st_ino
    assert installed.stat().st_nlink >= 2
    data = env / "share" / "alpha" / "readme.txt"
    cached_data = cached / "alpha-1.0.data" / "data" / "share" / "alpha" / "readme.txt"
    assert data.stat().st_ino == cached_data.stat().st_ino

    for script in ("alpha-cli", "alpha-tool"):  # their shebangs are this env's: never shared
        path = env_python(env).parent / script
        assert path.stat().st_nlink == 1
        assert os.access(path, os.X_OK)


def test_copy_mode_shares_no_inode(tmp_path: Path, wheel_dir: Path, cache_root: Path) -> None:
    env = make_env(tmp_path)
    wheel = alpha_wheel(wheel_dir)
    report = install_wheels(env, [wheel], cache_root=cache_root, link_mode="copy")
    cached = WheelCache(cache_root).unpacked(wheel).tree / "alpha" / "__init__.py"
    installed = site_packages(env) / "alpha" / "__init__.py"
    assert installed.read_bytes() == cached.read_bytes()
    assert installed.stat().st_ino != cached.stat().st_ino
    assert installed.stat().st_nlink == 1 and cached.stat().st_nlink == 1
    assert report.linked == 0 and report.copied >= 5
    assert run([str(env_python(env)), "-c", "import alpha"]).returncode == 0


def test_auto_mode_copies_when_links_cannot_cross_filesystems(
    tmp_path: Path, wheel_dir: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(source: str, target: str) -> None:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(linking_module.os, "link", no_links)
    env = make_env(tmp_path)
    recorder = Recorder()
    report = install_wheels(env, [alpha_wheel(wheel_dir)], cache_root=cache_root, reporter=recorder)
    assert report.linked == 0 and report.copied >= 5
    assert len(recorder.notes()) == 1 and "copying" in recorder.notes()[0]
    assert run([str(env_python(env)), "-c", "import alpha"]).returncode == 0

    with pytest.raises(InstallError, match="Cannot hardlink"):
        install_wheels(
            make_env(tmp_path, "env2"),
            [alpha_wheel(wheel_dir)],
            cache_root=cache_root,
            link_mode="hardlink",
        )


def test_record_lists_every_installed_file_with_its_hash(
    tmp_path: Path, wheel_dir: Path, cache_root: Path
) -> None:
    env = make_env(tmp_path)
    install_wheels(env, [alpha_wheel(wheel_dir), beta_wheel(wheel_dir)], cache_root=cache_root)
    site = site_packages(env)
    for dist, requested in (("alpha-1.0", True), ("beta-2.0", False)):
        dist_info = site / f"{dist}.dist-info"
        assert (dist_info / "INSTALLER").read_text() == "nbenv\n"
        assert (dist_info / "REQUESTED").exists() is requested
        with (dist_info / "RECORD").open(newline="") as stream:
            rows = list(csv.reader(stream))
        listed = {(site / path).resolve(): (digest, size) for path, digest, size in rows}
        record = (dist_info / "RECORD").resolve()
        assert listed.pop(record) == ("", "")
        for path, (digest, size) in listed.items():
            assert path.is_file(), path
            assert digest == record_digest_of(path), path
            assert int(size) == path.stat().st_size, path
        owned = {p.resolve() for p in (site / dist.split("-")[0]).rglob("*") if p.is_file()}
        owned |= {p.resolve() for p in dist_info.iterdir()} - {record}
        assert owned <= set(listed)

    alpha_listed = (site / "alpha-1.0.dist-info" / "RECORD").read_text()
    for expected in ("alpha-cli", "alpha-tool", "share/alpha/readme.txt", "alpha/alpha.h"):
        assert expected in alpha_listed


def test_pip_lists_and_uninstalls_what_was_installed(
    tmp_path: Path, wheel_dir: Path, cache_root: Path
) -> None:
    pytest.importorskip("pip")
    env = make_env(tmp_path)
    wheel = alpha_wheel(wheel_dir)
    install_wheels(env, [wheel, beta_wheel(wheel_dir)], cache_root=cache_root)
    pip = [sys.executable, "-m", "pip", "--python", str(env_python(env))]
    pip += ["--disable-pip-version-check", "--no-input"]

    listed = run([*pip, "list", "--format", "json"], check=True).stdout
    versions = {item["name"]: item["version"] for item in json.loads(listed)}
    assert versions == {"alpha": "1.0", "beta": "2.0"}

    done = run([*pip, "uninstall", "-y", "alpha", "beta"])
    assert done.returncode == 0, done.stderr
    site = site_packages(env)
    assert not (site / "alpha").exists() and not (site / "beta").exists()
    assert not list(site.glob("*.dist-info"))
    assert not (env_python(env).parent / "alpha-cli").exists()
    assert not (env_python(env).parent / "alpha-tool").exists()
    assert not (env / "share" / "alpha" / "readme.txt").exists()
    # the cache keeps its copy: uninstalling unlinks, never writes through
    cached = WheelCache(cache_root).unpacked(wheel).tree / "alpha" / "__init__.py"
    assert cached.read_text() == '__version__ = "1.0"\n'
    assert cached.stat().st_nlink == 1


def test_scripts_name_the_final_dir_when_the_env_will_be_moved(
    tmp_path: Path, wheel_dir: Path, cache_root: Path
) -> None:
    building, final = tmp_path / "store" / ".tmp-build", tmp_path / "store" / "final"
    create_venv(Path(sys.executable), building, final_dir=final)
    install_wheels(building, [alpha_wheel(wheel_dir)], cache_root=cache_root, final_dir=final)
    building.rename(final)
    assert run([str(final / "bin" / "alpha-cli")], check=True).stdout == "alpha cli ok\n"
    assert str(building) not in (final / "bin" / "activate").read_text()
    assert str(final) in (final / "bin" / "activate").read_text()


# --- bytecode ------------------------------------------------------------------------------


def test_compile_bytecode_writes_pyc_for_installed_modules(
    tmp_path: Path, wheel_dir: Path, cache_root: Path
) -> None:
    env = make_env(tmp_path)
    install_wheels(env, [alpha_wheel(wheel_dir)], cache_root=cache_root)
    cache_dir = site_packages(env) / "alpha" / "__pycache__"
    run([str(env_python(env)), "-c", "import alpha.cli"], check=True)
    assert not cache_dir.exists()  # nothing compiles implicitly here

    process = compile_bytecode(env)  # in the background
    assert process.wait(timeout=120) == 0
    tag = sys.implementation.cache_tag
    assert {p.name for p in cache_dir.iterdir()} == {f"__init__.{tag}.pyc", f"cli.{tag}.pyc"}
    # the cache's copy has no __pycache__: bytecode lives in each env
    assert not list(WheelCache(cache_root).root.rglob("__pycache__"))


def test_killing_the_compiler_midway_leaves_a_usable_env(
    tmp_path: Path, wheel_dir: Path, cache_root: Path
) -> None:
    modules = {f"many/m{i}.py": f"VALUE = {i}\n" * 200 for i in range(200)}
    modules["many/__init__.py"] = ""
    wheel = to_install(build_wheel(wheel_dir, "many", "1.0", modules=modules))
    env = make_env(tmp_path)
    install_wheels(env, [wheel], cache_root=cache_root)
    process = compile_bytecode(env)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # its own session: the workers go too
    process.wait(timeout=60)
    code = "import many.m0, many.m199; print(many.m199.VALUE)"
    assert run([str(env_python(env)), "-c", code], check=True).stdout == "199\n"
    assert compile_bytecode(env, wait=True).returncode == 0
    assert run([str(env_python(env)), "-c", code], check=True).stdout == "199\n"


# --- the cache -----------------------------------------------------------------------------


def test_a_wheel_is_unpacked_once_and_shared_by_envs(
    tmp_path: Path, wheel_dir: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = alpha_wheel(wheel_dir)
    first, second = make_env(tmp_path, "one"), make_env(tmp_path, "two")
    assert install_wheels(first, [wheel], cache_root=cache_root).unpacked == 1

    def must_not_unpack(*args: object) -> None:
        raise AssertionError("unpacked again")

    monkeypatch.setattr(wheelcache_module, "_unpack", must_not_unpack)
    report = install_wheels(second, [wheel], cache_root=cache_root)
    assert report.unpacked == 0 and report.linked >= 5
    one = site_packages(first) / "alpha" / "cli.py"
    two = site_packages(second) / "alpha" / "cli.py"
    assert one.stat().st_ino == two.stat().st_ino
    assert one.stat().st_nlink == 3  # the cache and two envs
    assert sorted(p.name for p in WheelCache(cache_root).root.iterdir()) == sorted(
        [wheel.sha256, f"{wheel.sha256}.lock"]
    )


def test_concurrent_requests_unpack_a_wheel_once(wheel_dir: Path, cache_root: Path) -> None:
    wheel = alpha_wheel(wheel_dir)
    cache = WheelCache(cache_root)
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def get() -> None:
        barrier.wait()
        results.append(cache.get(wheel)[1])

    threads = [threading.Thread(target=get) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, False, False, True]
    assert not list(cache.root.glob(".tmp-*"))


def test_an_unpacker_unpacks_each_wheel_once_and_install_uses_its_work(
    tmp_path: Path, wheel_dir: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = alpha_wheel(wheel_dir)
    calls: list[str] = []
    real_unpack = wheelcache_module._unpack

    def counting_unpack(item: WheelToInstall, home: Path) -> object:
        calls.append(item.sha256)
        return real_unpack(item, home)

    monkeypatch.setattr(wheelcache_module, "_unpack", counting_unpack)
    env = make_env(tmp_path, "early")
    with Unpacker(cache_root) as unpacker:
        early = unpacker.submit(wheel)  # as a download callback does
        assert unpacker.submit(wheel) is early
        report = install_wheels(env, [wheel], cache_root=cache_root, unpacker=unpacker)
    assert calls == [wheel.sha256]
    assert report.unpacked == 1 and report.linked >= 5
    assert (site_packages(env) / "alpha" / "cli.py").is_file()


def test_an_unpack_failure_from_the_unpacker_is_raised_by_install(
    tmp_path: Path, wheel_dir: Path, cache_root: Path
) -> None:
    wheel = alpha_wheel(wheel_dir)
    wrong = WheelToInstall(wheel.path, "0" * 64)
    with Unpacker(cache_root) as unpacker, pytest.raises(InvalidWheelError, match="sha256"):
        install_wheels(make_env(tmp_path, "bad"), [wrong], cache_root=cache_root,
                       unpacker=unpacker)  # fmt: skip


def test_a_wrong_sha256_is_refused_and_caches_nothing(wheel_dir: Path, cache_root: Path) -> None:
    wheel = alpha_wheel(wheel_dir)
    wrong = WheelToInstall(wheel.path, "0" * 64)
    with pytest.raises(InvalidWheelError, match="sha256"):
        WheelCache(cache_root).unpacked(wrong)
    assert not (cache_root / "unpacked" / wrong.sha256).exists()


# --- refusals ------------------------------------------------------------------------------


def traversal_wheel(out: Path, member: str) -> WheelToInstall:
    """A wheel, valid but for one member that climbs out (RECORD lists it, hash right)."""
    good = build_wheel(out / "good", "evil", "1.0")
    target = out / "evil-1.0-py3-none-any.whl"
    payload = b"print('pwned')\n"
    with zipfile.ZipFile(good) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            data = old.read(info)
            if info.filename.endswith("/RECORD"):
                digest = base64.urlsafe_b64encode(hashlib.sha256(payload).digest())
                row = f"{member},sha256={digest.rstrip(b'=').decode()},{len(payload)}\n"
                data = row.encode() + data
            new.writestr(info, data)
        new.writestr(zipfile.ZipInfo(member), payload)
    return to_install(target)


@pytest.mark.parametrize(
    "member",
    [
        "../../evil.py",
        "evil/../../../evil.py",
        "/tmp/evil.py",
        "C:/evil.py",
        "a\\..\\b",
        "./../evil.py",
        "evil//../../evil.py",
        "evil/..",
    ],
)
def test_a_wheel_with_a_path_traversal_entry_is_refused_before_writing(
    tmp_path: Path, wheel_dir: Path, cache_root: Path, member: str
) -> None:
    env = make_env(tmp_path)
    wheel = traversal_wheel(wheel_dir, member)
    before = files_under(env)
    with pytest.raises(UnsafeWheelError) as caught:
        install_wheels(env, [alpha_wheel(wheel_dir), wheel], cache_root=cache_root)
    assert caught.value.member == member
    assert caught.value.wheel == wheel.path.name
    assert "outside the environment" in str(caught.value)
    assert files_under(env) == before  # the good wheel was not installed either
    unpacked = cache_root / "unpacked"
    assert not (unpacked / wheel.sha256).exists()
    assert not list(unpacked.glob(".tmp-*"))
    assert not list(tmp_path.rglob("evil.py"))


def test_an_entry_point_script_that_climbs_out_is_refused(
    tmp_path: Path, wheel_dir: Path, cache_root: Path
) -> None:
    wheel = build_wheel(wheel_dir, "sneaky", "1.0", console_scripts={"../../sneak": "os:getcwd"})
    with pytest.raises(UnsafeWheelError, match="sneak"):
        install_wheels(make_env(tmp_path), [to_install(wheel)], cache_root=cache_root)


def test_a_wheel_without_record_is_refused(
    tmp_path: Path, wheel_dir: Path, cache_root: Path
) -> None:
    good = build_wheel(wheel_dir / "good", "alpha", "1.0")
    bad = rewrite_wheel(good, wheel_dir / good.name, {"alpha-1.0.dist-info/RECORD": None})
    with pytest.raises(InvalidWheelError, match=r"no alpha-1\.0\.dist-info/RECORD"):
        install_wheels(make_env(tmp_path), [to_install(bad)], cache_root=cache_root)


def test_a_wheel_whose_file_does_not_match_record_is_refused_and_not_cached(
    tmp_path: Path, wheel_dir: Path, cache_root: Path
) -> None:
    good = build_wheel(wheel_dir / "good", "alpha", "1.0")
    bad = rewrite_wheel(good, wheel_dir / good.name, {"alpha/__init__.py": b"tampered = 1\n"})
    wheel = to_install(bad)
    env = make_env(tmp_path)
    with pytest.raises(InvalidWheelError, match=r"alpha/__init__.py does not match its RECORD"):
        install_wheels(env, [wheel], cache_root=cache_root)
    assert not (cache_root / "unpacked" / wheel.sha256).exists()
    assert not list((cache_root / "unpacked").glob(".tmp-*"))
    assert not (site_packages(env) / "alpha").exists()


def test_a_file_missing_from_record_is_refused(
    tmp_path: Path, wheel_dir: Path, cache_root: Path
) -> None:
    good = build_wheel(wheel_dir / "good", "alpha", "1.0")
    bad = wheel_dir / good.name
    rewrite_wheel(good, bad, {})
    with zipfile.ZipFile(bad, "a") as archive:
        archive.writestr("alpha/extra.py", "x = 1\n")
    with pytest.raises(InvalidWheelError, match="not mentioned in RECORD"):
        install_wheels(make_env(tmp_path), [to_install(bad)], cache_root=cache_root)


def test_two_wheels_writing_one_path_differently_conflict(
    tmp_path: Path, wheel_dir: Path, cache_root: Path
) -> None:
    one = build_wheel(wheel_dir, "one", "1.0", modules={"shared/thing.py": "A = 1\n"})
    two = build_wheel(wheel_dir, "two", "1.0", modules={"shared/thing.py": "A = 2\n"})
    env = make_env(tmp_path)
    before = files_under(env)
    with pytest.raises(InstallConflictError) as caught:
        install_wheels(env, [to_install(one), to_install(two)], cache_root=cache_root)
    assert caught.value.path.endswith(os.path.join("shared", "thing.py"))
    assert set(caught.value.wheels) == {one.name, two.name}
    assert files_under(env) == before  # found before anything was written


def test_identical_shared_files_are_allowed(
    tmp_path: Path, wheel_dir: Path, cache_root: Path
) -> None:
    namespace = "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"
    one = build_wheel(
        wheel_dir, "ns-one", "1.0", modules={"ns/__init__.py": namespace, "ns/one.py": ""}
    )
    two = build_wheel(
        wheel_dir, "ns-two", "1.0", modules={"ns/__init__.py": namespace, "ns/two.py": ""}
    )
    env = make_env(tmp_path)
    install_wheels(env, [to_install(one), to_install(two)], cache_root=cache_root)
    assert run([str(env_python(env)), "-c", "import ns.one, ns.two"]).returncode == 0


def test_installing_over_an_existing_file_is_a_conflict(
    tmp_path: Path, wheel_dir: Path, cache_root: Path
) -> None:
    env = make_env(tmp_path)
    wheel = alpha_wheel(wheel_dir)
    install_wheels(env, [wheel], cache_root=cache_root)
    with pytest.raises(InstallConflictError, match="already in the environment"):
        install_wheels(env, [wheel], cache_root=cache_root)


def test_stale_bytecode_and_install_time_files_in_a_wheel_are_not_installed(
    tmp_path: Path, wheel_dir: Path, cache_root: Path
) -> None:
    modules = {
        "alpha/__init__.py": "",
        "alpha/__pycache__/__init__.cpython-311.pyc": "not bytecode",
        "alpha-1.0.dist-info/INSTALLER": "pip\n",
    }
    wheel = to_install(build_wheel(wheel_dir, "alpha", "1.0", modules=modules))
    env = make_env(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # installer warns about __pycache__ it is handed
        install_wheels(env, [wheel], cache_root=cache_root)
    site = site_packages(env)
    assert not (site / "alpha" / "__pycache__").exists()
    assert (site / "alpha-1.0.dist-info" / "INSTALLER").read_text() == "nbenv\n"


def test_a_data_directory_outside_the_schemes_is_refused(
    tmp_path: Path, wheel_dir: Path, cache_root: Path
) -> None:
    wheel = build_wheel(wheel_dir, "alpha", "1.0", data_files={"elsewhere/x.txt": "x"})
    with pytest.raises(InvalidWheelError, match=r"not in a valid \.data subdirectory"):
        install_wheels(make_env(tmp_path), [to_install(wheel)], cache_root=cache_root)


# --- unpacking in worker processes, members read straight from the archive ---------------


def recompressed(source: Path, target: Path, method: int) -> Path:
    """`source` with every member stored with `method` (zipfile.ZIP_STORED, ZIP_LZMA...)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            copy = zipfile.ZipInfo(info.filename, info.date_time)
            copy.external_attr = info.external_attr
            copy.compress_type = method
            new.writestr(copy, old.read(info))
    return target


def tree_of(unpacked: Any) -> dict[str, tuple[bytes, bool]]:
    return {
        f.path: ((unpacked.tree / f.path).read_bytes(), os.access(unpacked.tree / f.path, os.X_OK))
        for f in unpacked.files
    }


def test_worker_processes_unpack_exactly_what_threads_do(wheel_dir: Path, tmp_path: Path) -> None:
    deflated = alpha_wheel(wheel_dir / "deflated")  # executable script in .data, entry points
    padded = to_install(build_wheel(wheel_dir / "padded", "padded", "1.0", pad_bytes=300_000))
    stored = to_install(recompressed(deflated.path, wheel_dir / "stored" / deflated.path.name,
                                     zipfile.ZIP_STORED))  # fmt: skip
    lzma = to_install(recompressed(padded.path, wheel_dir / "lzma" / padded.path.name,
                                   zipfile.ZIP_LZMA))  # fmt: skip
    wheels = [deflated, padded, stored, lzma]
    with Unpacker(tmp_path / "threads") as threads:
        by_threads = [threads.submit(w).result() for w in wheels]
    with Unpacker(tmp_path / "procs", processes=2) as procs:
        futures = [procs.submit(w) for w in wheels]
        assert procs.submit(deflated) is futures[0]  # once per wheel, as on threads
        by_procs = [f.result() for f in futures]
    for (ours, fresh_t), (theirs, fresh_p) in zip(by_threads, by_procs, strict=True):
        assert fresh_t and fresh_p
        assert ours.files == theirs.files and ours.scripts == theirs.scripts
        assert tree_of(ours) == tree_of(theirs)
        assert theirs.home.parent == tmp_path / "procs" / "unpacked"
    assert tree_of(by_procs[0][0])["alpha-1.0.data/scripts/alpha-tool"][1]  # kept executable
    assert tree_of(by_procs[0][0]) == tree_of(by_procs[2][0])  # stored = deflated
    with Unpacker(tmp_path / "procs", processes=1) as again:
        assert again.submit(deflated).result()[1] is False  # cached: not unpacked again


@pytest.mark.parametrize("processes", [0, 2])
def test_broken_wheels_are_refused_alike_on_threads_and_in_processes(
    wheel_dir: Path, cache_root: Path, processes: int
) -> None:
    good = build_wheel(wheel_dir / "good", "alpha", "1.0")
    tampered = rewrite_wheel(good, wheel_dir / "tampered" / good.name,
                             {"alpha/__init__.py": b"tampered = 1\n"})  # fmt: skip
    evil = build_wheel(wheel_dir / "evil", "evil", "1.0",
                       modules={"../escape.py": "x = 1\n"})  # fmt: skip
    corrupt = wheel_dir / "corrupt" / good.name
    corrupt.parent.mkdir(parents=True)
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as archive:
        info = archive.getinfo("alpha-1.0.dist-info/METADATA")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start : start + info.compress_size] = b"\xff" * info.compress_size  # not deflate
    corrupt.write_bytes(bytes(data))
    expected = [
        (tampered, InvalidWheelError, r"alpha/__init__.py does not match its RECORD entry"),
        (evil, UnsafeWheelError, r"'\.\./escape\.py', which would be written outside"),
        (corrupt, InvalidWheelError, r"METADATA: its data is corrupt"),
    ]
    with Unpacker(cache_root, processes=processes) as unpacker:
        for path, kind, message in expected:
            with pytest.raises(kind, match=message) as caught:
                unpacker.submit(to_install(path)).result()
            assert type(caught.value) is kind
    unpacked = cache_root / "unpacked"
    assert not [p.name for p in unpacked.iterdir() if not p.name.endswith(".lock")]


@pytest.fixture(params=["whole", "stream"])
def inflating(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Deflated members inflated whole by libdeflate, or as a stream (isal or zlib) where
    libdeflate is missing. Gives the sizes libdeflate was asked to inflate, so a test can
    tell the whole path ran."""
    calls: list[int] = []
    if request.param == "stream":
        monkeypatch.setattr(wheelcache_module, "_libdeflate", None)
        return calls
    libdeflate = wheelcache_module._libdeflate
    assert libdeflate is not None  # a dependency: this is the path users get
    inflate = libdeflate.deflate_decompress

    def counted(data: Any, size: int) -> bytearray:
        calls.append(size)
        return inflate(data, size)

    monkeypatch.setattr(libdeflate, "deflate_decompress", counted)
    return calls


def test_whole_and_streamed_inflation_unpack_the_same_files(
    wheel_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "".join(f"line_{i} = {i * i}\n" for i in range(20_000))  # ~300 KB, deflated
    big = to_install(build_wheel(wheel_dir / "big", "big", "1.0",
                                 modules={"big/__init__.py": text}, pad_bytes=50_000))  # fmt: skip
    wheels = [alpha_wheel(wheel_dir / "alpha"), big]
    libdeflate = wheelcache_module._libdeflate
    assert libdeflate is not None
    inflate = libdeflate.deflate_decompress
    trees, whole = [], []
    for way in ("whole", "stream", "mixed"):
        sizes: list[int] = []
        with monkeypatch.context() as patch:
            counted = lambda data, size, seen=sizes: seen.append(size) or inflate(data, size)  # noqa: E731
            patch.setattr(libdeflate, "deflate_decompress", counted)
            if way == "stream":
                patch.setattr(wheelcache_module, "_libdeflate", None)
            if way == "mixed":  # members above the threshold stream, the rest are whole
                patch.setattr(wheelcache_module, "_ONE_SHOT", 100_000)
            cache = WheelCache(tmp_path / way)
            unpacked = [cache.get(w)[0] for w in wheels]
        trees.append([(u.files, tree_of(u)) for u in unpacked])
        whole.append(sizes)
    assert trees[0] == trees[1] == trees[2]
    assert len(text) in whole[0] and not whole[1] and len(text) not in whole[2]
    assert len(whole[2]) == len(whole[0]) - 1  # only the big member streamed
    assert trees[0][1][1]["big/__init__.py"][0] == text.encode()


def test_a_member_longer_than_its_record_says_is_refused(
    tmp_path: Path, wheel_dir: Path, cache_root: Path, inflating: list[int]
) -> None:
    text = "x = 1\n" * 1000
    good = build_wheel(wheel_dir / "good", "alpha", "1.0", modules={"alpha/__init__.py": text})
    record_name = "alpha-1.0.dist-info/RECORD"
    with zipfile.ZipFile(good) as archive:
        rows = archive.read(record_name).decode().splitlines()
    row = next(r for r in rows if r.startswith("alpha/__init__.py,"))
    short = row.rpartition(",")[0] + f",{len(text) - 1}"  # right hash, one byte too few
    record = "\n".join(short if r == row else r for r in rows) + "\n"
    bad = rewrite_wheel(good, wheel_dir / good.name, {record_name: record.encode()})
    wheel = to_install(bad)
    with pytest.raises(InvalidWheelError, match=r"alpha/__init__.py does not match its RECORD"):
        WheelCache(cache_root).get(wheel)
    assert not (cache_root / "unpacked" / wheel.sha256).exists()
    assert not list((cache_root / "unpacked").glob(".tmp-*"))
    if wheelcache_module._libdeflate is not None:
        assert len(text) - 1 in inflating  # tried whole first, then streamed to say why


def test_a_worker_process_that_dies_is_a_clear_error(wheel_dir: Path, cache_root: Path) -> None:
    wheel = alpha_wheel(wheel_dir)
    from nbenv.unpacking import UnpackWorkers

    workers = UnpackWorkers(cache_root, 1)
    try:
        workers._procs[0].kill()  # what the OOM killer does
        workers._procs[0].wait()
        with pytest.raises(InstallError, match=r"process unpacking alpha-1\.0-.*\.whl died"):
            workers.submit(wheel).result(timeout=60)
    finally:
        workers.close()
    assert not (cache_root / "unpacked" / wheel.sha256).exists()


def test_how_many_unpacking_processes(
    wheel_dir: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nbenv.errors import UsageError
    from nbenv.install import unpack_processes

    big = 64 * 1024 * 1024
    monkeypatch.delenv("NBENV_UNPACK_PROCESSES", raising=False)
    cpus = len(os.sched_getaffinity(0))
    assert unpack_processes(cache_root, [("a" * 64, 1000), ("b" * 64, None)]) == 0  # little
    assert unpack_processes(cache_root, [("a" * 64, big)]) == (min(cpus, 4) if cpus > 1 else 0)
    wheel = alpha_wheel(wheel_dir)
    Unpacker(cache_root).submit(wheel).result()
    assert unpack_processes(cache_root, [(wheel.sha256, big)]) == 0  # already unpacked
    monkeypatch.setenv("NBENV_UNPACK_PROCESSES", "3")
    assert unpack_processes(cache_root, []) == 3
    monkeypatch.setenv("NBENV_UNPACK_PROCESSES", "many")
    with pytest.raises(UsageError, match="NBENV_UNPACK_PROCESSES='many'"):
        unpack_processes(cache_root, [])


def test_an_adaptive_unpacker_starts_processes_once_enough_new_wheels_are_expected(
    wheel_dir: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbenv.install

    monkeypatch.delenv("NBENV_UNPACK_PROCESSES", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(nbenv.install, "_PROCESS_THRESHOLD", 1000)
    alpha, beta = alpha_wheel(wheel_dir), beta_wheel(wheel_dir)
    with Unpacker(cache_root) as threads:
        threads.submit(alpha).result()  # unpacked already: expecting it adds no work

    with Unpacker(cache_root, adaptive=True) as unpacker:
        unpacker.expect(alpha.sha256, 5000)
        unpacker.expect(beta.sha256, 600)
        assert unpacker.processes == 0  # 600 new bytes: below the threshold, threads
        unpacker.expect("c" * 64, 600)
        assert unpacker.processes == 2  # 1,200 new bytes: the two CPUs' processes
        unpacked, fresh = unpacker.submit(beta).result(timeout=60)
        unpacker.expect("d" * 64, 10**9)
        assert unpacker.processes == 2  # started once
    assert fresh and unpacked.distribution == "beta"
    assert (cache_root / "unpacked" / beta.sha256 / "manifest.json").exists()

    monkeypatch.setenv("NBENV_UNPACK_PROCESSES", "0")  # the override wins
    with Unpacker(cache_root, adaptive=True) as forced:
        forced.expect("e" * 64, 10**9)
        assert forced.processes == 0
    monkeypatch.setenv("NBENV_UNPACK_PROCESSES", "1")
    with Unpacker(cache_root, adaptive=True) as forced:
        assert forced.processes == 1  # from the start, whatever is expected


@pytest.mark.parametrize("processes", [0, 2])
def test_linking_each_wheel_as_it_unpacks_still_checks_conflicts(
    tmp_path: Path, wheel_dir: Path, cache_root: Path, processes: int
) -> None:
    namespace = "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"
    one = build_wheel(wheel_dir, "ns-one", "1.0", modules={"ns/__init__.py": namespace,
                                                            "ns/one.py": ""})  # fmt: skip
    two = build_wheel(wheel_dir, "ns-two", "1.0", modules={"ns/__init__.py": namespace,
                                                            "ns/two.py": ""})  # fmt: skip
    clash = build_wheel(wheel_dir, "clash", "1.0", modules={"ns/one.py": "other = 1\n"})
    env = make_env(tmp_path)
    recorder = Recorder()
    with Unpacker(cache_root, processes=processes) as unpacker:
        report = install_wheels(env, [to_install(one), to_install(two)], cache_root=cache_root,
                                unpacker=unpacker, link_early=True, reporter=recorder)  # fmt: skip
    assert report.wheels == 2 and report.unpacked == 2
    assert ("progress", "installing wheels", "2", "2") in recorder.events
    assert run([str(env_python(env)), "-c", "import ns.one, ns.two"]).returncode == 0
    other = make_env(tmp_path, "other")
    unpacker = Unpacker(cache_root, processes=processes)
    with unpacker, pytest.raises(InstallConflictError) as caught:
        install_wheels(other, [to_install(one), to_install(clash)], cache_root=cache_root,
                       unpacker=unpacker, link_early=True)  # fmt: skip
    assert caught.value.path.endswith(os.path.join("ns", "one.py"))
    assert set(caught.value.wheels) == {one.name, clash.name}


# --- installing in the worker processes -----------------------------------------------------


def tree_with_records(env: Path) -> dict[str, Any]:
    """Every installed file of an env: bytes, executable bit, and each RECORD's rows in
    order-free form (the venv's own activate scripts aside: they name the env)."""
    out: dict[str, Any] = {}
    for root in (site_packages(env), env_python(env).parent, env / "share"):
        for path in sorted(root.rglob("*")):
            if path.name.lower().startswith("activate"):
                continue
            if path.is_file() and not path.is_symlink():
                key = str(path.relative_to(env))
                data = path.read_bytes()
                if path.name == "RECORD":
                    out[key] = sorted(data.decode().splitlines())
                else:
                    out[key] = (data.replace(str(env).encode(), b"<env>"),
                                os.access(path, os.X_OK))  # fmt: skip
    return out


@pytest.mark.parametrize("fork", [True, False])
def test_worker_processes_install_what_threads_install(
    tmp_path: Path, wheel_dir: Path, cache_root: Path, fork: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbenv.unpacking as unpacking

    monkeypatch.setattr(unpacking, "can_fork", lambda: fork)
    wheels = [alpha_wheel(wheel_dir), beta_wheel(wheel_dir)]  # scripts, .data, REQUESTED
    env = make_env(tmp_path)  # one path for both: scripts (and RECORD) name it
    with Unpacker(cache_root) as threads:
        install_wheels(env, wheels, cache_root=cache_root, unpacker=threads, link_early=True)
    by_threads = tree_with_records(env)
    env.rename(tmp_path / "threads")
    make_env(tmp_path)
    recorder = Recorder()
    workers = unpacking.UnpackWorkers(cache_root, 2, fork=fork)
    with Unpacker(cache_root, started=workers) as procs:
        kind = type(workers._procs[0]).__name__
        report = install_wheels(env, wheels, cache_root=cache_root, unpacker=procs,
                                link_early=True, reporter=recorder)  # fmt: skip
    assert kind == ("Forked" if fork else "Popen")
    assert tree_with_records(env) == by_threads
    assert report.wheels == 2 and report.linked > 0 and report.written > 0
    assert ("progress", "installing wheels", "2", "2") in recorder.events
    cached = WheelCache(cache_root).unpacked(wheels[0]).tree / "alpha" / "__init__.py"
    assert cached.stat().st_nlink == 3  # the cache and both envs: linked, not copied
    done = run([str(env / "bin" / "alpha-cli")])
    assert done.stdout == "alpha cli ok\n", done.stderr


def test_a_path_a_worker_finds_taken_is_a_conflict_unless_shared(
    tmp_path: Path, wheel_dir: Path, cache_root: Path
) -> None:
    # The parent checks conflicts before sending a wheel; a worker that finds a path taken
    # reports it, and only the parent (which knows every wheel's paths) may call it shared.
    from nbenv.unpacking import UnpackWorkers
    from nbenv.venv import query_layout

    namespace = "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"
    modules = {"ns/__init__.py": namespace, "ns/one.py": ""}
    one = to_install(build_wheel(wheel_dir / "ns", "ns-one", "1.0", modules=modules),
                     requested=True)  # fmt: skip
    env = make_env(tmp_path)
    stray = site_packages(env) / "ns" / "__init__.py"  # put there by something else
    stray.parent.mkdir()
    stray.write_text("stray = 1\n")
    with (
        Unpacker(cache_root, processes=1) as unpacker,
        pytest.raises(
            InstallConflictError,
            match=r"ns_one-1.0-py3-none-any.whl would overwrite .*ns/__init__.py, already in",
        ),
    ):
        install_wheels(env, [one], cache_root=cache_root, unpacker=unpacker, link_early=True)
    assert stray.read_text() == "stray = 1\n"

    other = make_env(tmp_path, "other")
    layout = query_layout(env_python(other), other)
    (Path(layout.purelib) / "ns").mkdir()
    (Path(layout.purelib) / "ns" / "__init__.py").write_text(namespace)  # another wheel's
    workers = UnpackWorkers(cache_root, 1)
    try:
        unpacked, _ = workers.submit(one).result(timeout=60)
        done = workers.install(unpacked, layout, str(env_python(other)), "auto",
                               requested=True).result(timeout=60)  # fmt: skip
    finally:
        workers.close()
    assert done.taken == (os.path.join(layout.purelib, "ns", "__init__.py"),)
    assert (Path(layout.purelib) / "ns" / "one.py").exists()
    assert (Path(layout.purelib) / "ns_one-1.0.dist-info" / "REQUESTED").exists()


_FORK_SCRIPT = """
import json, os, sys
from pathlib import Path
from nbenv.unpacking import UnpackWorkers, can_fork
from nbenv.wheelcache import WheelToInstall
print(json.dumps(can_fork()))
workers = UnpackWorkers(Path(sys.argv[1]), 2, fork=True)
print(json.dumps([type(p).__name__ for p in workers._procs]))
pids = [p.pid for p in workers._procs]
wheel = WheelToInstall(Path(sys.argv[2]), sys.argv[3], verified=False)
unpacked, fresh = workers.submit(wheel).result(timeout=60)
print(json.dumps([fresh, unpacked.filename]))
mine = os.getpriority(os.PRIO_PROCESS, 0)
print(json.dumps([os.getpriority(os.PRIO_PROCESS, pid) - mine for pid in pids]))
victim = workers._procs[0]
workers.close()
print(json.dumps([p.poll() for p in workers._procs]))
gone = []
for pid in pids:
    try:
        os.kill(pid, 0)
        gone.append(False)
    except ProcessLookupError:
        gone.append(True)
print(json.dumps(gone))
"""


def test_workers_are_forked_from_a_one_thread_process_and_end_with_it(
    wheel_dir: Path, cache_root: Path
) -> None:
    wheel = alpha_wheel(wheel_dir)
    done = run([sys.executable, "-c", _FORK_SCRIPT, str(cache_root), str(wheel.path),
                wheel.sha256])  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0] is (sys.platform == "linux")
    assert lines[1] == (["Forked"] * 2 if sys.platform == "linux" else ["Popen"] * 2)
    assert lines[2] == [True, wheel.path.name]
    assert lines[3] == [min(10, 19 - os.getpriority(os.PRIO_PROCESS, 0))] * 2  # yield to the CLI
    assert lines[4] == [0, 0]  # each saw its end of the pipe and exited cleanly
    assert lines[5] == [True, True]  # reaped: no zombie left


def test_started_workers_run_at_a_lower_priority_too(
    cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbenv.unpacking as unpacking

    monkeypatch.setattr(unpacking, "can_fork", lambda: False)
    workers = unpacking.UnpackWorkers(cache_root, 1)
    try:
        proc = workers._procs[0]
        assert type(proc).__name__ == "Popen"
        wanted = min(10, 19 - os.getpriority(os.PRIO_PROCESS, 0))
        deadline = time.monotonic() + 30  # it lowers its own priority as it starts
        while True:
            drop = os.getpriority(os.PRIO_PROCESS, proc.pid) - os.getpriority(os.PRIO_PROCESS, 0)
            if drop == wanted or time.monotonic() > deadline:
                break
            time.sleep(0.02)
    finally:
        workers.close()
    assert drop == wanted


def test_workers_are_started_not_forked_unless_asked(cache_root: Path) -> None:
    from nbenv.unpacking import UnpackWorkers

    workers = UnpackWorkers(cache_root, 1)  # as an Unpacker makes them: any caller, any time
    try:
        assert type(workers._procs[0]).__name__ == "Popen"
    finally:
        workers.close()


def test_a_process_with_threads_does_not_fork_its_workers() -> None:
    code = (
        "import threading, time\n"
        "from nbenv.unpacking import can_fork\n"
        "threading.Thread(target=time.sleep, args=(1,), daemon=True).start()\n"
        "print(can_fork())\n"
    )
    done = run([sys.executable, "-c", code])
    assert done.stdout.strip() == "False", done.stderr
