"""Finding `--python` interpreters: fake ones (shell scripts) on a fake PATH and pyenv root,
plus real checks against the running interpreter and, if this machine has one, real pyenv."""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbenv import interpreters
from nbenv.errors import NoInterpreterError, UsageError
from nbenv.interpreters import Interpreter, clear_cache, discover, find_interpreter

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fake interpreters are sh scripts")

RUNNING = tuple(sys.version_info[:3])


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    clear_cache()
    yield
    clear_cache()


def fake_python(path: Path, answer: str, *, log: Path | None = None, body: str = "") -> Path:
    """An executable that answers nbenv's version query with `answer` ("cpython 3.42.1"),
    appending its own path to `log` each time it is run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["#!/bin/sh"]
    if log is not None:
        lines.append(f'echo "$0" >> {shlex.quote(str(log))}')
    lines.append(body or f"echo {shlex.quote(answer)}")
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)
    return path


def environ(tmp_path: Path, *path_dirs: Path, **extra: str) -> dict[str, str]:
    """A minimal environment: PATH of only `path_dirs`, HOME an empty temp dir."""
    home = tmp_path / "fakehome"
    home.mkdir(exist_ok=True)
    return {"PATH": os.pathsep.join(str(d) for d in path_dirs), "HOME": str(home), **extra}


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_running_interpreter_is_the_default() -> None:
    found = find_interpreter(None)
    assert found.path == Path(os.path.abspath(sys.executable))
    assert found.version == RUNNING
    assert found.implementation == sys.implementation.name
    assert found.short == f"{sys.version_info[0]}.{sys.version_info[1]}"


def test_the_running_interpreter_wins_when_it_matches(tmp_path: Path) -> None:
    newer = f"cpython {RUNNING[0]}.{RUNNING[1]}.{RUNNING[2] + 5}"
    bin_dir = tmp_path / "bin"
    fake_python(bin_dir / f"python{RUNNING[0]}.{RUNNING[1]}", newer)
    env = environ(tmp_path, bin_dir)
    assert find_interpreter(f"{RUNNING[0]}.{RUNNING[1]}", env).version == RUNNING
    assert find_interpreter(str(RUNNING[0]), env).version == RUNNING


def test_a_real_interpreter_by_path_is_queried_for_its_version(tmp_path: Path) -> None:
    # a real subprocess query against the interpreter running the tests
    found = find_interpreter(sys.executable, environ(tmp_path))
    assert found.version == RUNNING
    assert found.implementation == sys.implementation.name
    assert found.path == Path(os.path.abspath(sys.executable))


def test_highest_patch_of_the_requested_minor_is_chosen(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    fake_python(first / "python3.42", "cpython 3.42.1")
    fake_python(second / "python3.42", "cpython 3.42.7")
    fake_python(second / "python3.41", "cpython 3.41.9")
    env = environ(tmp_path, first, second)

    chosen = find_interpreter("3.42", env)
    assert chosen.version == (3, 42, 7)
    assert chosen.path == second / "python3.42"
    assert chosen.short == "3.42"
    assert find_interpreter("3.42.1", env).path == first / "python3.42"
    assert find_interpreter("3.41", env).version == (3, 41, 9)


def test_cpython_is_preferred_over_pypy_of_the_same_version(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_python(bin_dir / "pypy3.42", "pypy 3.42.9")
    fake_python(bin_dir / "python3.42", "cpython 3.42.1")
    assert find_interpreter("3.42", environ(tmp_path, bin_dir)).implementation == "cpython"


def test_each_real_executable_is_queried_once(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    bin_dir = tmp_path / "bin"
    target = fake_python(bin_dir / "python3.42", "cpython 3.42.0", log=log)
    (bin_dir / "python3").symlink_to(target.name)
    (bin_dir / "python").symlink_to(target.name)
    (tmp_path / "bin-link").symlink_to(bin_dir)
    env = environ(tmp_path, bin_dir, tmp_path / "bin-link")

    found = [i for i in discover(env) if i.version == (3, 42, 0)]
    assert [i.path for i in found] == [bin_dir / "python3.42"]  # the most specific name
    assert len(calls(log)) == 1


def test_answers_are_cached_until_the_executable_changes(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    bin_dir = tmp_path / "bin"
    script = fake_python(bin_dir / "python3.42", "cpython 3.42.0", log=log)
    env = environ(tmp_path, bin_dir)
    discover(env)
    discover(env)
    assert find_interpreter("3.42", env).version == (3, 42, 0)
    assert len(calls(log)) == 1

    fake_python(script, "cpython 3.42.11", log=log)  # rebuilt: size and mtime change
    os.utime(script, ns=(0, 10**18))
    assert find_interpreter("3.42", env).version == (3, 42, 11)
    assert len(calls(log)) == 2


def test_things_that_are_not_python_are_skipped(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_python(bin_dir / "python3.40", "", body="echo 'Unknown option: -I' >&2; exit 2")
    fake_python(bin_dir / "python3.41", "hello, I am not python")
    fake_python(bin_dir / "python3.42", "cpython 3.42.2")
    (bin_dir / "python3.43").write_text("not executable")
    fake_python(bin_dir / "python3.42-config", "cpython 3.43.0")  # wrong name: not a candidate
    versions = [i.version for i in discover(environ(tmp_path, bin_dir))]
    assert versions == [RUNNING, (3, 42, 2)]


def test_a_hung_candidate_times_out_and_is_asked_again_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(interpreters, "QUERY_TIMEOUT", 0.3)
    sleep = shutil.which("sleep")  # by path: the fake PATH has no /bin
    assert sleep is not None
    log = tmp_path / "calls.log"
    bin_dir = tmp_path / "bin"
    fake_python(bin_dir / "python3.42", "", log=log, body=f"exec {sleep} 30")
    env = environ(tmp_path, bin_dir)
    assert [i.version for i in discover(env)] == [RUNNING]
    discover(env)
    assert len(calls(log)) == 2  # a timeout is not remembered


def test_pyenv_versions_are_found_and_its_shims_skipped(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    root = tmp_path / "pyenv"
    fake_python(root / "versions" / "3.42.3" / "bin" / "python3", "cpython 3.42.3")
    fake_python(root / "versions" / "3.41.0" / "bin" / "python", "cpython 3.41.0")
    (root / "versions" / "broken").mkdir()
    fake_python(root / "shims" / "python3.42", "cpython 3.42.99", log=log)
    env = environ(tmp_path, root / "shims", PYENV_ROOT=str(root))

    chosen = find_interpreter("3.42", env)
    assert chosen.path == root / "versions" / "3.42.3" / "bin" / "python3"
    assert find_interpreter("3.41", env).version == (3, 41, 0)
    assert calls(log) == []


def test_pyenv_defaults_to_home(tmp_path: Path) -> None:
    env = environ(tmp_path)
    fake_python(
        Path(env["HOME"], ".pyenv", "versions", "3.42.0", "bin", "python3"), "cpython 3.42.0"
    )
    assert find_interpreter("3.42", env).version == (3, 42, 0)


def test_uv_managed_pythons_are_found(tmp_path: Path) -> None:
    root = tmp_path / "uv-pythons"
    fake_python(root / "cpython-3.42.1-linux-x86_64-gnu" / "bin" / "python3", "cpython 3.42.1")
    env = environ(tmp_path, UV_PYTHON_INSTALL_DIR=str(root))
    assert find_interpreter("3.42", env).version == (3, 42, 1)


def test_no_match_lists_what_was_found_and_how_to_get_one(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_python(bin_dir / "python3.41", "cpython 3.41.5")
    with pytest.raises(NoInterpreterError) as caught:
        find_interpreter("3.42", environ(tmp_path, bin_dir))
    error = caught.value
    assert error.requested == "3.42"
    assert [i.version for i in error.found] == [RUNNING, (3, 41, 5)]
    message = str(error)
    assert "No Python 3.42 interpreter was found" in message
    assert f"CPython 3.41.5  {bin_dir / 'python3.41'}" in message
    assert sys.executable in message
    assert "pyenv install 3.42" in message
    assert "--python /path/to/python3.42" in message


def test_an_interpreter_given_by_path(tmp_path: Path) -> None:
    fake = fake_python(tmp_path / "opt" / "py" / "bin" / "python3", "cpython 3.42.4")
    env = environ(tmp_path)
    assert find_interpreter(str(fake), env) == Interpreter(fake, (3, 42, 4), "cpython")

    in_home = fake_python(Path(env["HOME"], "py", "python"), "cpython 3.42.5")
    assert find_interpreter("~/py/python", env).path == in_home


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("missing", "no such file"),
        ("plain", "not an executable file"),
        ("liar", "did not answer as Python 3 does"),
    ],
)
def test_a_bad_path_says_why(tmp_path: Path, setup: str, reason: str) -> None:
    target = tmp_path / "python"
    if setup == "plain":
        target.write_text("x")
    elif setup == "liar":
        fake_python(target, "I am a teapot")
    with pytest.raises(NoInterpreterError, match=re.escape(reason)) as caught:
        find_interpreter(str(target), environ(tmp_path))
    assert str(target) in str(caught.value)


@pytest.mark.parametrize("text", ["3.x", "python", "latest", "3.12.1.4", ""])
def test_a_malformed_version_is_a_usage_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(UsageError, match="--python"):
        find_interpreter(text, environ(tmp_path))


def test_real_pyenv_versions_report_their_own_versions() -> None:
    # The one test that reads the real home (read-only), if this machine has pyenv.
    real_root = Path(pwd.getpwuid(os.getuid()).pw_dir, ".pyenv")
    versions = sorted(
        d.name
        for d in (real_root / "versions").glob("3.*")
        if re.fullmatch(r"3\.\d+\.\d+", d.name) and os.access(d / "bin" / "python3", os.X_OK)
    )
    if not versions:
        pytest.skip("no pyenv CPython versions on this machine")
    found = discover({"PATH": "", "PYENV_ROOT": str(real_root)})
    reported = {".".join(map(str, i.version)) for i in found}  # the running one may be one
    assert set(versions) <= reported
    newest = max(versions, key=lambda v: tuple(map(int, v.split("."))))
    major, minor, _ = newest.split(".")
    if (int(major), int(minor)) != RUNNING[:2]:
        chosen = find_interpreter(f"{major}.{minor}", {"PATH": "", "PYENV_ROOT": str(real_root)})
        assert ".".join(map(str, chosen.version)) == newest
