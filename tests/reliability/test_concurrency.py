"""Many processes at once: the same env 8 times, 8 different envs, two notebooks' kernels
in one env, and gc running through all of it. Whatever the interleaving, every env is built
once and whole, each kernel is registered once, and gc removes nothing in use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from checks import cache_problems, kernelspec_problems, nbenv, store_problems
from ledger import FaultLog
from support import IsolatedEnv
from support.index_server import IndexServer
from support.notebooks import read_notebook, stream_text, write_notebook

from nbenv.store import Store


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "nbenv", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )


def _finish(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str, str]]:
    return [(p.wait(timeout=600), *p.communicate()) for p in procs]


def _problems(isolated_env: IsolatedEnv) -> list[str]:
    return (
        store_problems(isolated_env.nbenv_home)
        + cache_problems(isolated_env.nbenv_home / "cache")
        + kernelspec_problems(isolated_env.jupyter_data)
    )


def test_eight_processes_create_the_same_env(
    env_index: IndexServer, fast_cache: Path, faults: FaultLog, isolated_env: IsolatedEnv
) -> None:
    faults.inject("concurrency", "8 processes create the same env at once")
    argv = ("create", "--json", "--no-compile", "--index-url", env_index.url, "alpha", "gamma")
    results = _finish([_spawn(*argv) for _ in range(8)])
    assert [code for code, _out, _err in results] == [0] * 8, [err for *_, err in results]
    reports = [json.loads(out) for _code, out, _err in results]
    assert len({r["env_id"] for r in reports}) == 1
    assert sum(r["created"] for r in reports) == 1  # built once; the others waited and reused
    assert Store().env_ids() == [reports[0]["env_id"]]
    assert len(list((isolated_env.jupyter_data / "kernels").iterdir())) == 1
    assert faults.lost(_problems(isolated_env)) == []


def test_eight_processes_create_eight_envs(
    index: IndexServer, faults: FaultLog, isolated_env: IsolatedEnv
) -> None:
    """Cold caches, no kernels: the 8 share downloads and unpacked wheels (gamma, shared...)
    and must each get them whole."""
    faults.inject("concurrency", "8 processes create 8 different envs at once")
    sets = [["alpha==1.0"], ["alpha==2.0"], ["gamma==1.0"], ["gamma==1.1"], ["beta"],
            ["shared==1.0", "gamma"], ["shared==2.0", "gamma"], ["beta", "alpha"]]  # fmt: skip
    procs = [
        _spawn("create", "--json", "--no-compile", "--no-kernel", "--index-url", index.url, *reqs)
        for reqs in sets
    ]
    results = _finish(procs)
    assert [code for code, _out, _err in results] == [0] * 8, [err for *_, err in results]
    ids = {json.loads(out)["env_id"] for _code, out, _err in results}
    assert len(ids) == 8 and set(Store().env_ids()) == ids
    assert faults.lost(_problems(isolated_env)) == []


def test_gc_running_while_envs_are_created(
    env_index: IndexServer, fast_cache: Path, faults: FaultLog, isolated_env: IsolatedEnv
) -> None:
    """`gc` in a loop while 4 creates run, half of the rounds with `--older-than 0`
    (every env not in use may go): each create must still end with its env and kernel."""
    faults.inject("concurrency", "gc in a loop while 4 envs are being created")
    env_index.latency = 0.05  # builds take a while: gc runs many times during them
    sets = [["alpha==1.0"], ["alpha==2.0"], ["gamma==1.1"], ["beta"]]
    procs = [
        _spawn("create", "--json", "--no-compile", "--index-url", env_index.url, *reqs)
        for reqs in sets
    ]
    rounds = 0
    while any(p.poll() is None for p in procs):
        out = nbenv("gc", "--older-than", "0") if rounds % 2 else nbenv("gc")
        assert out.returncode == 0, out.stderr
        rounds += 1
    results = _finish(procs)
    assert [code for code, _out, _err in results] == [0] * 4, [err for *_, err in results]
    assert rounds >= 2
    # an env gc took after its create finished is gone with its kernel; no half of one stays
    for _code, out, _err in results:
        report = json.loads(out)
        if Store().exists(report["env_id"]):
            assert Path(report["path"], "bin", "python").exists()
    assert faults.lost(_problems(isolated_env)) == []


def test_two_notebook_kernels_share_an_env_while_gc_runs(
    env_index: IndexServer, fast_cache: Path, faults: FaultLog, isolated_env: IsolatedEnv
) -> None:
    """Two notebooks run at once, each with a `%%pypi` cell for the same env; while both
    child kernels are up, `gc --older-than 0` runs: it must keep the env they use."""
    faults.inject("concurrency", "two kernels run %%pypi for the same env at once")
    faults.inject("concurrency", "gc --older-than 0 while kernels use the env")
    root = isolated_env.root
    pypi = f"%%pypi --index-url {env_index.url} alpha gamma"
    wait = (
        "import pathlib, time\n"
        "pathlib.Path({ready!r}).touch()\n"
        "deadline = time.time() + 120\n"
        "while not pathlib.Path({go!r}).exists() and time.time() < deadline:\n"
        "    time.sleep(0.1)\n"
    )
    procs = []
    for n in (1, 2):
        notebook = write_notebook(
            root / f"nb{n}.ipynb",
            "%load_ext nbenv",
            f"{pypi}\nimport alpha\nvalue = {n}\nprint(alpha.__version__)",
            wait.format(ready=str(root / f"ready-{n}"), go=str(root / "gc-done")),
            f"{pypi}\nimport gamma\nprint(value, gamma.__version__)",
        )
        procs.append(_spawn("run", str(notebook)))
    deadline = time.time() + 300
    while not all((root / f"ready-{n}").exists() for n in (1, 2)):
        assert time.time() < deadline and all(p.poll() is None for p in procs), _finish(procs)
        time.sleep(0.1)
    (env_id,) = Store().env_ids()
    gc = nbenv("gc", "--older-than", "0")
    (root / "gc-done").touch()
    assert gc.returncode == 0, gc.stderr
    assert f"Kept environment {env_id}" in gc.stdout
    assert Store().env_ids() == [env_id]
    results = _finish(procs)
    assert [code for code, _out, _err in results] == [0, 0], [err for *_, err in results]
    for n in (1, 2):
        printed = stream_text(read_notebook(root / f"nb{n}.out.ipynb"))
        assert printed[1].strip() == "2.0" and printed[3].strip() == f"{n} 1.1"
    assert faults.lost(_problems(isolated_env)) == []
    # the kernels are gone: now gc may take the env, and its kernelspec with it
    time.sleep(0.5)
    gc = nbenv("gc", "--older-than", "0")
    assert gc.returncode == 0, gc.stderr
    assert Store().env_ids() == []
    assert not list((isolated_env.jupyter_data / "kernels").glob("nbenv-*"))
    assert faults.lost(_problems(isolated_env)) == []


def test_gc_at_the_moment_a_create_registers_its_kernel(
    env_index: IndexServer, fast_cache: Path, faults: FaultLog, isolated_env: IsolatedEnv
) -> None:
    """The create is paused right before its kernelspec is written (its env already in the
    store, never used): `gc --older-than 0` then must keep the env, and the create finishes
    with a kernel whose python exists."""
    faults.inject("concurrency", "gc --older-than 0 while a create registers its kernel")
    pause = isolated_env.root / "pause"
    pause.mkdir()
    killer = str(Path(__file__).with_name("killer.py"))
    creator = subprocess.Popen(
        [sys.executable, killer, "open-w", "/jupyter/data/kernels/.nbenv-staging-", "1", "--",
         "create", "--json", "--no-compile", "--index-url", env_index.url, "alpha"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "NBENV_TEST_PAUSE_DIR": str(pause)},
    )  # fmt: skip
    deadline = time.time() + 120
    while not (pause / "paused").exists():
        assert creator.poll() is None and time.time() < deadline, creator.communicate()
        time.sleep(0.05)
    gc = nbenv("gc", "--older-than", "0")
    (pause / "resume").touch()
    out, err = creator.communicate(timeout=120)
    assert creator.returncode == 0, err
    assert gc.returncode == 0, gc.stderr
    env_id = json.loads(out)["env_id"]
    assert f"Kept environment {env_id}" in gc.stdout, gc.stdout
    assert Store().env_ids() == [env_id]
    assert faults.lost(_problems(isolated_env)) == []
