"""Bad input of every kind: a clear, one-line-or-caret error (exit 2 for usage, 1 for a
refused file), never a traceback, and nothing written where it should not be."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from checks import nbenv, store_problems
from ledger import FaultLog
from support import IsolatedEnv
from support.index_server import IndexServer
from support.notebooks import write_notebook

from nbenv.errors import NbenvError
from nbenv.resolve.conda import parse_conda_args

BAD_REQUIREMENTS = [
    "alpha==",
    "alpha>=1,<",
    "al pha",
    "alpha[",
    "alpha; python_version >",
    "alpha==1.0 ; os_name == 'posix' and",
    "alpha===",
    "-e .",
    "git+https://example.invalid/x.git",
    "alpha @ https://example.invalid/alpha.whl",
    "ålpha",
    "a" * 5000 + "==",
    "../../etc/passwd",
]


@pytest.mark.parametrize("spec", BAD_REQUIREMENTS, ids=[repr(s)[:24] for s in BAD_REQUIREMENTS])
def test_a_malformed_requirement_is_a_usage_error(
    spec: str, index: IndexServer, faults: FaultLog, isolated_env: IsolatedEnv
) -> None:
    faults.inject("bad input", f"requirement {spec[:30]!r}")
    out = nbenv("lock", "--index-url", index.url, "gamma", spec)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: ") and "Traceback" not in out.stderr
    assert len(out.stderr) < 3 * len(spec) + 500  # the spec and a caret line, no more
    assert index.count("/simple/") == 0  # refused before any request
    assert faults.lost(store_problems(isolated_env.nbenv_home)) == []


BAD_MATCHSPECS = ["numpy>>1", "numpy[", "=1.0", "numpy 1.0 py_0 extra words", "numpy=1.0=",
                  "numpy[version=>>2]", "nump y", "numpy >=1.0,", "::numpy"]  # fmt: skip


def test_a_nul_byte_in_a_magic_line_is_a_usage_error(faults: FaultLog) -> None:
    """argv cannot hold NUL, but a notebook cell's header line can."""
    from nbenv.cellspec import parse_cell
    from nbenv.errors import UsageError

    faults.inject("bad input", "NUL byte in a %%pypi line")
    with pytest.raises(UsageError):
        parse_cell("pypi", "alpha\x00beta", "print(1)")


@pytest.mark.parametrize("spec", BAD_MATCHSPECS)
def test_a_malformed_matchspec_is_refused_with_a_caret(spec: str, faults: FaultLog) -> None:
    faults.inject("bad input", f"conda MatchSpec {spec!r}")
    try:
        parse_conda_args([spec])
    except NbenvError as exc:
        message = str(exc)
        assert spec.split()[0] in message
        if "\n" in message:  # the caret form: the spec, then a caret under the bad spot
            lines = message.splitlines()
            assert "^" in lines[2]
    else:
        # rattler is as lenient as conda; what it accepts must at least round-trip
        import rattler

        assert str(rattler.MatchSpec(spec))


BAD_NAMES = [
    "../evil",
    "a/b",
    "..",
    "with space",
    "données",
    "UPPER",
    "",
    "-dash",
    "a.b",
    "x" * 300,
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n)[:16] for n in BAD_NAMES])
def test_env_names_that_could_escape_or_confuse_are_refused(
    name: str, index: IndexServer, faults: FaultLog, isolated_env: IsolatedEnv
) -> None:
    faults.inject("bad input", f"env name {name[:20]!r}")
    before = sorted(p for p in isolated_env.root.rglob("*"))
    out = nbenv("create", "--no-kernel", "--no-compile", "--index-url", index.url,
                "--name", name, "alpha")  # fmt: skip
    if len(name) <= 64 and re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
        pytest.fail(f"{name!r} should have been treated as bad")
    assert out.returncode == 2, out.stderr
    assert "--name" in out.stderr and "Traceback" not in out.stderr
    assert sorted(p for p in isolated_env.root.rglob("*")) == before  # nothing written
    # looking an env up by such a name reads nothing outside the store
    for command in ("show", "remove"):
        looked = nbenv(command, "--", name or "x")
        assert looked.returncode == 2 and "No environment" in looked.stderr, looked.stderr


def test_a_long_but_valid_name_works(
    index: IndexServer, faults: FaultLog, isolated_env: IsolatedEnv
) -> None:
    faults.inject("bad input", "env name of 100 characters")
    name = "n" * 100
    out = nbenv(
        "create", "--json", "--no-compile", "--index-url", index.url, "--name", name, "alpha"
    )
    assert out.returncode == 2 or json.loads(out.stdout)["name"] == name, out.stderr


def test_a_huge_requirement_list(
    index: IndexServer, faults: FaultLog, isolated_env: IsolatedEnv
) -> None:
    faults.inject("bad input", "2000 requirements on one command line")
    specs = [f"gamma!=0.{i}" for i in range(1000)] + [f"alpha>=0.{i}" for i in range(1000)]
    started = time.perf_counter()
    out = nbenv("lock", "--index-url", index.url, *specs)
    assert out.returncode == 0, out.stderr
    assert 'name = "alpha"' in out.stdout and 'name = "gamma"' in out.stdout
    assert time.perf_counter() - started < 30
    faults.inject("bad input", "100 projects that do not exist")
    missing = [f"nosuchproject{i}" for i in range(100)]
    started = time.perf_counter()
    out = nbenv("lock", "--index-url", index.url, "alpha", *missing)
    assert out.returncode == 1
    assert "nosuchproject" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.splitlines()) < 20  # the first missing project, not 100 of them
    assert time.perf_counter() - started < 30


def _locked_notebook(env_index: IndexServer, tmp_path: Path) -> tuple[Path, Path]:
    notebook = write_notebook(
        tmp_path / "paper.ipynb",
        "%load_ext nbenv",
        f"%%pypi --index-url {env_index.url} alpha\nprint(1)",
    )
    out = nbenv("lock", str(notebook))
    assert out.returncode == 0, out.stderr
    return notebook, tmp_path / "paper.nbenv.lock"


def test_a_hand_edited_notebook_lock_is_refused(
    env_index: IndexServer,
    fast_cache: Path,
    faults: FaultLog,
    isolated_env: IsolatedEnv,
    tmp_path: Path,
) -> None:
    faults.inject("bad input", "notebook lock with a tampered sha256")
    notebook, lock = _locked_notebook(env_index, tmp_path)
    text = lock.read_text()
    real = re.findall(r'sha256 = "([0-9a-f]{64})"', text)[0]
    lock.write_text(text.replace(real, "f" * 64, 1))
    for argv in (("run", str(notebook)), ("lock", str(notebook))):
        out = nbenv(*argv)
        assert out.returncode == 1, out.stderr
        assert str(lock) in out.stderr and "edited" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
    assert not list((isolated_env.nbenv_home / "envs").glob("[!.]*"))
    assert faults.lost(store_problems(isolated_env.nbenv_home)) == []


def test_a_corrupt_notebook_lock_says_where(
    env_index: IndexServer, faults: FaultLog, isolated_env: IsolatedEnv, tmp_path: Path
) -> None:
    faults.inject("bad input", "notebook lock with a TOML syntax error")
    notebook, lock = _locked_notebook(env_index, tmp_path)
    lines = lock.read_text().splitlines()
    number = next(i for i, line in enumerate(lines) if line.startswith("version ="))
    lines[number] = "version = = 1"
    lock.write_text("\n".join(lines) + "\n")
    out = nbenv("lock", str(notebook))
    assert out.returncode == 1
    assert str(lock) in out.stderr and f"line {number + 1}" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert lock.read_text().splitlines()[number] == "version = = 1"  # the user's file is kept
