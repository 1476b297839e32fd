"""kill -9 at each phase of building an env and writing a lock, then run again.

After every kill: the store holds only complete envs (a killed build is a hidden leftover
that gc removes), the caches hold only verified files and complete unpacked wheels, no
lock file is torn, and the same command then succeeds. The kill comes from inside the
process at the moment it touches the phase's files (killer.py), so it lands exactly there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from checks import cache_problems, kernelspec_problems, lock_problems, nbenv, store_problems
from ledger import FaultLog
from support import IsolatedEnv
from support.index_server import IndexServer
from support.notebooks import write_notebook

KILLER = str(Path(__file__).with_name("killer.py"))


def killed(event: str, substring: str, count: int, *argv: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, KILLER, event, substring, str(count), "--", *argv],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
    )
    assert out.returncode == -9, f"the phase was never reached: {out.returncode} {out.stderr}"
    return out


def _all_problems(isolated_env: IsolatedEnv, *, after_recovery: bool) -> list[str]:
    problems = store_problems(isolated_env.nbenv_home)
    problems += cache_problems(isolated_env.nbenv_home / "cache")
    specs = kernelspec_problems(isolated_env.jupyter_data)
    if not after_recovery:
        # a spec dir the kill left without kernel.json is invisible to Jupyter; the next
        # create writes it again (checked strictly below)
        specs = [p for p in specs if "FileNotFoundError" not in p]
    return problems + specs


# (phase, event, path substring, occurrence): the n-th such operation is never done
CREATE_PHASES = [
    ("resolve: index page being cached", "open-w", "/resolve/pages/", 2),
    ("resolve: metadata being cached", "open-w", "/resolve/metadata/", 1),
    ("download: verified file about to enter the cache", "os.rename", ".part", 1),
    ("download: second file started", "open-w", ".part", 2),
    ("unpack: wheel half extracted", "open-w", "/unpacked/.tmp-", 3),
    ("unpack: extracted wheel about to be renamed in", "os.rename", "/unpacked/.tmp-", 1),
    ("link: files being linked into the build", "os.link|open-w", "/envs/.build-&site-packages", 6),
    ("env: lock being written into the build", "open-w", "/envs/.build-&pylock.toml", 1),
    ("env: build about to be renamed into the store", "os.rename", "/envs/.build-", 1),
    ("request shortcut being written", "open-w", "/requests/", 1),
]


# Phases of the kernelspec: an env with the kernel packages (from the shared cache)
KERNEL_PHASES = [
    ("kernelspec: kernel files being written", "open-w", "/jupyter/data/kernels/.nbenv-staging-",
     1),
    ("kernelspec: kernel.json being written", "open-w", "/jupyter/data/kernels/&kernel.json", 1),
    ("kernelspec: written spec about to be renamed in", "os.rename",
     "/jupyter/data/kernels/.nbenv-staging-", 1),
]  # fmt: skip


@pytest.mark.parametrize(
    ("phase", "event", "substring", "count"),
    CREATE_PHASES,
    ids=[p[0].split(":")[0] + f"-{i}" for i, p in enumerate(CREATE_PHASES)],
)
def test_kill_during_create_then_run_again(
    phase: str,
    event: str,
    substring: str,
    count: int,
    index: IndexServer,
    faults: FaultLog,
    isolated_env: IsolatedEnv,
) -> None:
    """Cold caches, no kernel: every phase up to the store really happens."""
    faults.inject("process", f"kill -9 at {phase}")
    argv = ["create", "--json", "--no-compile", "--no-kernel", "--index-url", index.url,
            "alpha", "beta"]  # fmt: skip
    killed(event, substring, count, *argv)
    assert faults.lost(_all_problems(isolated_env, after_recovery=False)) == []
    out = nbenv(*argv)
    assert out.returncode == 0, out.stderr
    env_id = json.loads(out.stdout)["env_id"]
    python = isolated_env.nbenv_home / "envs" / env_id / "bin" / "python"
    ran = subprocess.run([python, "-c", "import alpha, beta, gamma"], check=False)
    assert ran.returncode == 0
    assert nbenv("gc").returncode == 0
    assert not list((isolated_env.nbenv_home / "envs").glob(".build-*"))
    assert faults.lost(_all_problems(isolated_env, after_recovery=True)) == []


@pytest.mark.parametrize(
    ("phase", "event", "substring", "count"), KERNEL_PHASES, ids=["files", "kernel.json", "rename"]
)
def test_kill_while_registering_the_kernel_then_run_again(
    phase: str,
    event: str,
    substring: str,
    count: int,
    env_index: IndexServer,
    fast_cache: Path,
    faults: FaultLog,
    isolated_env: IsolatedEnv,
) -> None:
    faults.inject("process", f"kill -9 at {phase}")
    argv = ["create", "--json", "--no-compile", "--index-url", env_index.url, "alpha", "beta"]
    killed(event, substring, count, *argv)
    assert faults.lost(_all_problems(isolated_env, after_recovery=False)) == []
    out = nbenv(*argv)
    assert out.returncode == 0, out.stderr
    env_id = json.loads(out.stdout)["env_id"]
    assert faults.lost(_all_problems(isolated_env, after_recovery=True)) == []
    kernels = list((isolated_env.jupyter_data / "kernels").glob(f"nbenv-{env_id[:12]}*"))
    assert len(kernels) == 1 and (kernels[0] / "kernel.json").is_file()
    python = isolated_env.nbenv_home / "envs" / env_id / "bin" / "python"
    ran = subprocess.run([python, "-c", "import alpha, beta, gamma, ipykernel"], check=False)
    assert ran.returncode == 0
    assert not list((isolated_env.jupyter_data / "kernels").glob(".nbenv-staging-*"))


@pytest.mark.parametrize("event", ["os.rename", "open-w"])  # os.replace audits as os.rename
def test_kill_while_replacing_a_kernelspec_leaves_the_old_one_whole(
    event: str,
    env_index: IndexServer,
    fast_cache: Path,
    faults: FaultLog,
    isolated_env: IsolatedEnv,
) -> None:
    """An env's spec that must be written again (here: it names another env id) is
    replaced in place, each file atomically: killed at any point, kernel.json is the old
    one or the new one, whole, and never missing."""
    faults.inject("process", f"kill -9 while replacing a kernelspec ({event})")
    argv = ["create", "--json", "--no-compile", "--index-url", env_index.url, "alpha"]
    out = nbenv(*argv)
    assert out.returncode == 0, out.stderr
    env_id = json.loads(out.stdout)["env_id"]
    (spec,) = (isolated_env.jupyter_data / "kernels").glob(f"nbenv-{env_id[:12]}*")
    stale = json.loads((spec / "kernel.json").read_text())
    stale["metadata"]["nbenv"]["env_id"] = "stale"
    (spec / "kernel.json").write_text(json.dumps(stale))
    killed(event, "/jupyter/data/kernels/&kernel.json", 1, *argv)
    problems = []
    try:
        seen = json.loads((spec / "kernel.json").read_text())
    except (OSError, ValueError) as exc:
        problems.append(f"kernel.json of {spec.name} is broken after the kill ({exc!r})")
    else:
        if seen["metadata"]["nbenv"]["env_id"] not in ("stale", env_id):
            problems.append(f"kernel.json of {spec.name} is neither the old nor the new one")
    out = nbenv(*argv)
    assert out.returncode == 0, out.stderr
    assert json.loads((spec / "kernel.json").read_text())["metadata"]["nbenv"]["env_id"] == env_id
    assert not list((isolated_env.jupyter_data / "kernels").glob(".nbenv-staging-*"))
    problems += _all_problems(isolated_env, after_recovery=True)
    assert faults.lost(problems) == []


LOCK_PHASES = [
    ("lock file: temp being written", "open-w", ".pylock.toml."),
    ("lock file: about to replace the old lock", "os.rename", "pylock.toml"),
]


@pytest.mark.parametrize(("phase", "event", "substring"), LOCK_PHASES, ids=["temp", "replace"])
def test_kill_while_writing_a_lock_keeps_the_old_one(
    phase: str, event: str, substring: str, index: IndexServer, faults: FaultLog, tmp_path: Path
) -> None:
    faults.inject("process", f"kill -9 at {phase}")
    lock = tmp_path / "pylock.toml"
    first = nbenv("lock", "--index-url", index.url, "alpha==1.0", "-o", str(lock))
    assert first.returncode == 0, first.stderr
    old = lock.read_bytes()
    killed(event, substring, 1, "lock", "--index-url", index.url, "alpha==2.0", "-o", str(lock))
    assert lock.read_bytes() == old  # the old lock, whole
    # a temp file may be left by the kill; the next write of the lock removes it
    problems = [p for p in lock_problems(lock) if "left beside" not in p]
    again = nbenv("lock", "--index-url", index.url, "alpha==2.0", "-o", str(lock))
    assert again.returncode == 0, again.stderr
    assert 'version = "2.0"' in lock.read_text()
    problems += lock_problems(lock)
    assert faults.lost(problems) == []


NOTEBOOK_PHASES = [
    ("notebook lock: about to replace it", "os.rename", ".nbenv.lock"),
    ("notebook: locks being embedded", "os.rename", "analysis.ipynb"),
]


@pytest.mark.parametrize(("phase", "event", "substring"), NOTEBOOK_PHASES, ids=["lock", "embed"])
def test_kill_while_writing_a_notebook_lock_or_the_notebook(
    phase: str, event: str, substring: str, env_index: IndexServer, faults: FaultLog, tmp_path: Path
) -> None:
    faults.inject("process", f"kill -9 at {phase}")
    notebook = write_notebook(
        tmp_path / "analysis.ipynb",
        f"%%pypi --index-url {env_index.url} alpha==1.0\nprint(1)",
        "x = 1  # the user's work",
    )
    first = nbenv("lock", str(notebook), "--embed")
    assert first.returncode == 0, first.stderr
    lock = tmp_path / "analysis.nbenv.lock"
    old_lock, old_notebook = lock.read_bytes(), notebook.read_bytes()
    text = json.loads(old_notebook)
    text["cells"][0]["source"] = f"%%pypi --index-url {env_index.url} alpha==2.0\nprint(1)"
    notebook.write_text(json.dumps(text))
    edited = notebook.read_bytes()
    killed(event, substring, 1, "lock", str(notebook), "--embed")
    # each file is the old one or the new one, whole; the user's cells are all there
    assert lock.read_bytes() in (old_lock,) or "2.0" in lock.read_text()
    assert notebook.read_bytes() == edited or "x = 1" in notebook.read_text()
    problems = [p for p in lock_problems(lock, notebook_lock=True) if "left beside" not in p]
    problems += [] if json.loads(notebook.read_text())["cells"][1]["source"] else ["cell lost"]
    again = nbenv("lock", str(notebook), "--embed")
    assert again.returncode == 0, again.stderr
    assert 'version = "2.0"' in lock.read_text()
    problems += lock_problems(lock, notebook_lock=True)
    assert faults.lost(problems) == []


REMOVE_PHASES = [
    ("remove: env renamed to the trash, not yet deleted", ("remove", "ENV"), "os.rename",
     "/envs/.trash-", 1),
    ("remove: kernelspec being deleted", ("remove", "ENV"), "os.rmdir|os.remove",
     "/jupyter/data/kernels/nbenv-", 1),
    ("gc: unused env being removed", ("gc", "--older-than", "0"), "os.rename", "/envs/.trash-", 1),
]  # fmt: skip


@pytest.mark.parametrize(
    ("phase", "argv", "event", "substring", "count"),
    REMOVE_PHASES,
    ids=["remove-trash", "remove-kernel", "gc"],
)
def test_kill_while_removing_then_run_again(
    phase: str,
    argv: tuple[str, ...],
    event: str,
    substring: str,
    count: int,
    env_index: IndexServer,
    fast_cache: Path,
    faults: FaultLog,
    isolated_env: IsolatedEnv,
) -> None:
    """A killed remove or gc leaves no half env that looks whole; running it again (or
    gc) finishes the job."""
    faults.inject("process", f"kill -9 at {phase}")
    made = nbenv("create", "--json", "--no-compile", "--index-url", env_index.url, "alpha")
    assert made.returncode == 0, made.stderr
    env_id = json.loads(made.stdout)["env_id"]
    killed(event, substring, count, *[env_id if a == "ENV" else a for a in argv])
    assert faults.lost(_all_problems(isolated_env, after_recovery=False)) == []
    again = nbenv(*[env_id if a == "ENV" else a for a in argv])
    assert again.returncode in (0, 2), again.stderr  # 2: `remove` finds the env gone
    assert nbenv("gc").returncode == 0
    envs = isolated_env.nbenv_home / "envs"
    assert not list(envs.glob("[!.]*")) and not list(envs.glob(".trash-*"))
    assert not list((isolated_env.jupyter_data / "kernels").glob("nbenv-*"))
    assert faults.lost(_all_problems(isolated_env, after_recovery=True)) == []
