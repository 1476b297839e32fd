"""Environments end to end: build from the local index, register kernels, run them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel
from support import IsolatedEnv, run_python
from support.index_server import Fault, Index, IndexServer
from support.wheels import build_wheel

from nbenv.store import Store


def nbenv(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nbenv", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=timeout,
    )


def create(index: IndexServer, *args: str) -> dict[str, object]:
    out = nbenv("create", "--json", "--index-url", index.url, *args)
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


def run_in_kernel(kernel_name: str, code: str) -> str:
    km, kc = start_new_kernel(kernel_name=kernel_name, startup_timeout=60)
    chunks: list[str] = []
    try:
        reply = kc.execute_interactive(
            code,
            timeout=60,
            output_hook=lambda m: (
                chunks.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None
            ),
        )
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return "".join(chunks)


def test_create_registers_a_kernel_that_runs_in_the_env(
    env_index: IndexServer, fast_cache: Path, isolated_env: IsolatedEnv
) -> None:
    result = create(env_index, "--name", "ml-demo", "alpha", "beta")
    assert result["created"] is True
    env = Path(str(result["path"]))
    assert env.parent == isolated_env.nbenv_home / "envs"
    listing = subprocess.run(
        [str(Path(sys.executable).with_name("jupyter")), "kernelspec", "list", "--json"],
        capture_output=True, text=True, env=os.environ.copy(), check=True,
    )  # fmt: skip
    specs = json.loads(listing.stdout)["kernelspecs"]
    spec = specs[str(result["kernel"])]
    assert spec["resource_dir"].startswith(str(isolated_env.jupyter_data))
    assert spec["spec"]["display_name"] == "Python 3.11 · nbenv: ml-demo"
    assert spec["spec"]["argv"][0] == str(env / "bin" / "python")
    meta = spec["spec"]["metadata"]["nbenv"]
    assert meta["env_id"] == result["env_id"]
    assert meta["requirements"] == ["alpha", "beta"]
    printed = run_in_kernel(
        str(result["kernel"]),
        "import sys, alpha, beta, gamma, ipywidgets\n"
        "print(sys.prefix, alpha.__version__, beta.__version__, ipywidgets.__version__[0])",
    )
    assert printed.split() == [str(env), "2.0", "1.0", "8"]


def whole_wheel_downloads(server: IndexServer) -> dict[str, int]:
    """Wheels fetched whole (not the resolver's range reads of their metadata), by name."""
    counts: dict[str, int] = {}
    for request in server.requests("/files/", "GET"):
        if request.path.endswith(".whl") and request.range is None and request.status == 200:
            name = request.path.rsplit("/", 1)[-1]
            counts[name] = counts.get(name, 0) + 1
    return counts


_WHEELS = tuple(f"{n}-py3-none-any.whl" for n in ("alpha-2.0", "beta-1.0", "gamma-1.1"))


def _answered(index: IndexServer, page: str) -> list[str]:
    """The server's log in the order it answered: `page` (as its project's name) and the
    wheels fetched whole (by file name)."""
    return [
        r.path.rsplit("/", 2)[-1] or r.path.rsplit("/", 2)[-2]
        for r in index.log
        if r.path == page or (r.path.endswith(".whl") and r.range is None)
    ]


def _imports_all(python: Path) -> None:
    out = subprocess.run(
        [str(python), "-c", "import alpha, beta, gamma; print('ok')"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout == "ok\n"


def test_a_cold_create_downloads_pinned_wheels_while_it_still_resolves(
    index: IndexServer, isolated_env: IsolatedEnv
) -> None:
    from nbenv.envs import BuildOptions, create_env
    from nbenv.spec import parse_request

    index.inject("/simple/gamma/", Fault("stall", seconds=0.6))  # beta's dependency: late
    request = parse_request(["alpha", "beta", "--index-url", index.url])

    result = create_env(request, BuildOptions(register_kernel=False, compile_bytecode=False))

    alpha, beta, gamma = _WHEELS
    # alpha and beta were pinned, so fetched whole while the resolver still waited for
    # gamma's page
    order = _answered(index, "/simple/gamma/")
    assert order.index("gamma") > max(order.index(alpha), order.index(beta))
    assert order.index(gamma) > order.index("gamma")
    # each wheel was fetched whole once: the build took over what was under way
    assert whole_wheel_downloads(index) == {alpha: 1, beta: 1, gamma: 1}
    _imports_all(result.python)


@pytest.mark.parametrize("likely_bytes", [0, 1 << 20])
def test_a_cold_create_fetches_big_wheels_on_the_resolvers_guess(
    index: IndexServer, isolated_env: IsolatedEnv, monkeypatch: pytest.MonkeyPatch,
    likely_bytes: int,
) -> None:  # fmt: skip
    import nbenv.envs
    from nbenv.envs import BuildOptions, create_env
    from nbenv.spec import parse_request

    # Nothing is pinned before alpha's page (a root requirement) is in: the prefetcher's
    # walk has guessed beta and gamma by then. Wheels of `likely_bytes` or more are fetched
    # on the guess (the test wheels are small: 0 makes them all big, 1 MB none).
    monkeypatch.setattr(nbenv.envs, "_LIKELY_BYTES", likely_bytes)
    index.inject("/simple/alpha/", Fault("stall", seconds=0.6))
    request = parse_request(["alpha", "beta", "--index-url", index.url])

    result = create_env(request, BuildOptions(register_kernel=False, compile_bytecode=False))

    alpha, beta, gamma = _WHEELS
    order = _answered(index, "/simple/alpha/")
    early = order.index(beta) < order.index("alpha") and order.index(gamma) < order.index("alpha")
    assert early == (likely_bytes == 0), order
    assert whole_wheel_downloads(index) == {alpha: 1, beta: 1, gamma: 1}  # once each
    _imports_all(result.python)


_FREEZE_SCRIPT = """
import gc, json, sys
from nbenv.resolve.pypi import PypiResolver
during = []
resolve = PypiResolver.resolve
def noting(self):
    during.append(gc.get_freeze_count())
    return resolve(self)
PypiResolver.resolve = noting
from nbenv.envs import BuildOptions, create_env
from nbenv.spec import parse_request
create_env(parse_request(["alpha", "--index-url", sys.argv[1]]),
           BuildOptions(register_kernel=False, compile_bytecode=False))
print(json.dumps([during, gc.get_freeze_count()]))
"""


def test_a_cold_create_freezes_the_collectors_objects_while_it_runs_only(
    index: IndexServer, isolated_env: IsolatedEnv
) -> None:
    stdout = run_python(_FREEZE_SCRIPT, index.url)
    (during,), after = json.loads(stdout)
    assert during > 1000  # the imports' objects: collections skip them during the create
    assert after == 0  # and the caller's process gets them back when it ends


_ORDER_SCRIPT = """
import json, sys
from nbenv.resolve.pypi import PypiResolver
later = ("nbenv.fetch", "nbenv.install", "nbenv.lock", "nbenv.wheelcache")
seen = []
start = PypiResolver.start
def record(self):
    seen.append([m for m in later if m in sys.modules])
    start(self)
PypiResolver.start = record
from nbenv.envs import BuildOptions, create_env
from nbenv.spec import parse_request
create_env(parse_request(["alpha", "--index-url", sys.argv[1]]),
           BuildOptions(register_kernel=False, compile_bytecode=False))
print(json.dumps(seen))
"""


def test_a_create_asks_the_index_before_loading_what_only_the_build_needs(
    index: IndexServer, isolated_env: IsolatedEnv
) -> None:
    # The downloader, installer and lock writer (~50 ms of imports) load while the first
    # index answers are on their way, not before the first request.
    stdout = run_python(_ORDER_SCRIPT, index.url)
    first, *_ = json.loads(stdout)  # resolve() starts again: a no-op by then
    assert first == []


_HELPERS_SCRIPT = """
import json, sys
import nbenv.unpacking as unpacking
from nbenv.resolve.pypi import PypiResolver
seen = {}
resolve = PypiResolver.resolve
def record(self):
    seen["helper before resolving"] = "downloads" in seen
    return resolve(self)
PypiResolver.resolve = record
started = unpacking.UnpackWorkers.__init__
def workers(self, root, processes, **how):
    started(self, root, processes, **how)
    seen.setdefault("workers", []).append([type(p).__name__ for p in self._procs])
unpacking.UnpackWorkers.__init__ = workers
import nbenv.downloading as downloading
made = downloading.DownloadProcess.__init__
def download_process(self, *args, **kwargs):
    made(self, *args, **kwargs)
    seen["downloads"] = type(self._proc).__name__
downloading.DownloadProcess.__init__ = download_process
from nbenv.envs import BuildOptions, create_env
from nbenv.resolve.cache import CachePolicy
from nbenv.spec import parse_request
policy = CachePolicy[sys.argv[2]]
create_env(parse_request(["alpha", "--index-url", sys.argv[1]]),
           BuildOptions(register_kernel=False, compile_bytecode=False, policy=policy))
print(json.dumps(seen))
"""


def test_a_first_create_starts_its_helper_processes_before_resolving(
    index: IndexServer, isolated_env: IsolatedEnv
) -> None:
    # A project never asked for before: its wheels will be downloaded and unpacked, so the
    # download process starts before the resolve; the workers are forked (one thread yet).
    def run(policy: str) -> dict[str, object]:
        out = subprocess.run(
            [sys.executable, "-c", _HELPERS_SCRIPT, index.url, policy],
            capture_output=True, text=True, timeout=120, env=os.environ.copy(),
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        seen: dict[str, object] = json.loads(out.stdout)
        return seen

    from nbenv.unpacking import process_budget

    budget, _ = process_budget()
    forked = [["Forked"] * budget] if sys.platform == "linux" and budget else []
    first = run("DEFAULT")
    assert first.pop("downloads") == ("Forked" if sys.platform == "linux" else "Popen")
    assert first == {"helper before resolving": True, **({"workers": forked} if forked else {})}
    again = run("REFRESH")  # its page is cached: nothing says it must download
    assert again.get("helper before resolving") is False
    assert again.get("workers", []) == forked  # forked all the same: they link the wheels


def test_same_request_again_needs_no_network(env_index: IndexServer, fast_cache: Path) -> None:
    first = create(env_index, "alpha")
    env_index.clear_log()
    again = create(env_index, "alpha")
    assert again["created"] is False
    assert again["env_id"] == first["env_id"]
    assert env_index.count() == 0


def test_create_from_a_lock_file(env_index: IndexServer, fast_cache: Path, tmp_path: Path) -> None:
    first = create(env_index, "alpha")
    lock = Path(str(first["path"])) / "pylock.toml"
    copy = tmp_path / "pylock.toml"
    copy.write_bytes(lock.read_bytes())
    Store().remove(str(first["env_id"]))
    env_index.clear_log()
    out = nbenv("create", "--json", "--lock", str(copy))
    assert out.returncode == 0, out.stderr
    rebuilt = json.loads(out.stdout)
    assert rebuilt["env_id"] == first["env_id"] and rebuilt["created"] is True
    assert env_index.count("/simple/") == 0  # no resolution: only downloads, if any


def test_two_concurrent_creates_build_once(env_index: IndexServer, fast_cache: Path) -> None:
    argv = [sys.executable, "-m", "nbenv", "create", "--json", "--index-url", env_index.url, "beta"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=os.environ.copy()) for _ in range(2)]  # fmt: skip
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert results[0]["env_id"] == results[1]["env_id"]
    assert sorted(r["created"] for r in results) == [False, True]
    assert Store().env_ids() == [results[0]["env_id"]]


def test_killed_build_leaves_no_env_and_create_recovers(
    env_index: IndexServer, isolated_env: IsolatedEnv
) -> None:
    lock = isolated_env.root / "pylock.toml"
    locked = nbenv("lock", "--index-url", env_index.url, "alpha", "beta", "-o", str(lock))
    assert locked.returncode == 0, locked.stderr
    # From a lock the downloads are the build's (a resolve would start them ahead), and
    # slow ones keep it under way when the kill lands.
    env_index.latency = 1.0
    argv = [sys.executable, "-m", "nbenv", "create", "--no-kernel", "--lock", str(lock)]
    proc = subprocess.Popen(argv, env=os.environ.copy(), stderr=subprocess.DEVNULL)
    envs = isolated_env.nbenv_home / "envs"
    deadline = time.time() + 60
    while time.time() < deadline and not list(envs.glob(".build-*")):
        time.sleep(0.02)
    assert list(envs.glob(".build-*")), "the build never started"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = Store()
    assert store.env_ids() == []
    env_index.latency = 0
    out = nbenv("create", "--json", "--no-kernel", "--lock", str(lock))
    assert out.returncode == 0, out.stderr
    assert store.env_ids() == [json.loads(out.stdout)["env_id"]]
    gc = nbenv("gc")
    assert gc.returncode == 0
    assert "leftover build" in gc.stdout
    assert not list(envs.glob(".build-*"))


def test_hash_mismatch_refuses_and_builds_nothing(
    env_index: IndexServer, fast_cache: Path, tmp_path: Path
) -> None:
    lock_out = nbenv("lock", "alpha", "--index-url", env_index.url)
    assert lock_out.returncode == 0, lock_out.stderr
    real = next(line for line in lock_out.stdout.splitlines() if line.startswith("sha256 = "))
    tampered = lock_out.stdout.replace(real, 'sha256 = "' + "0" * 64 + '"')
    lock = tmp_path / "pylock.toml"
    lock.write_text(tampered)
    out = nbenv("create", "--no-kernel", "--lock", str(lock))
    assert out.returncode == 1
    assert "alpha-2.0-py3-none-any.whl" in out.stderr
    assert "0" * 64 in out.stderr
    assert Store().env_ids() == []


def test_wheel_with_path_traversal_is_refused(
    make_index: Callable[..., IndexServer], tmp_path: Path, isolated_env: IsolatedEnv
) -> None:
    wheel = build_wheel(tmp_path, "sneaky", "1.0")
    with zipfile.ZipFile(wheel, "a") as archive:
        archive.writestr("../../../escaped.py", "print('owned')\n")
    listing = Index()
    listing.add(wheel)
    server = make_index(listing)
    out = nbenv("create", "--no-kernel", "--index-url", server.url, "sneaky")
    assert out.returncode == 1
    assert "../../../escaped.py" in out.stderr
    assert Store().env_ids() == []
    assert not list(isolated_env.root.rglob("escaped.py"))


def test_gc_keeps_envs_in_use_and_removes_the_rest(
    env_index: IndexServer, fast_cache: Path
) -> None:
    used = create(env_index, "--no-kernel", "alpha")
    unused = create(env_index, "--no-kernel", "beta")
    python = Path(str(used["path"])) / "bin" / "python"
    sleeper = subprocess.Popen([str(python), "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        out = nbenv("gc", "--older-than", "0")
        assert out.returncode == 0, out.stderr
        assert f"Removed environment {unused['env_id']}" in out.stdout
        assert f"Kept environment {used['env_id']}: a running process uses it" in out.stdout
        assert Store().env_ids() == [used["env_id"]]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_remove_takes_the_kernel_and_gc_cleans_orphans(
    env_index: IndexServer, fast_cache: Path, isolated_env: IsolatedEnv
) -> None:
    first = create(env_index, "--name", "one", "alpha")
    second = create(env_index, "--name", "two", "--no-compile", "beta")
    kernels = isolated_env.jupyter_data / "kernels"
    out = nbenv("remove", "one")
    assert out.returncode == 0, out.stderr
    assert not (kernels / str(first["kernel"])).exists()
    # an env deleted behind nbenv's back leaves an orphaned kernelspec: gc cleans it
    import shutil

    shutil.rmtree(str(second["path"]))
    out = nbenv("gc")
    assert f"Removed orphaned kernel {second['kernel']}" in out.stdout
    assert not (kernels / str(second["kernel"])).exists()


def test_list_and_show(env_index: IndexServer, fast_cache: Path) -> None:
    made = create(env_index, "--name", "demo", "alpha")
    listed = json.loads(nbenv("list", "--json").stdout)
    assert [(r["name"], r["env_id"]) for r in listed] == [("demo", made["env_id"])]
    shown = json.loads(nbenv("show", "demo", "--json").stdout)
    names = {p["name"]: p["version"] for p in shown["packages"]}
    assert names["alpha"] == "2.0" and "ipykernel" in names
    assert shown["size"] >= shown["size_unique"] > 0
    text = nbenv("list").stdout
    assert text.splitlines()[0].split() == [
        "NAME", "ENV", "ID", "PYTHON", "PACKAGES", "SIZE", "LAST", "USED", "KERNEL",
    ]  # fmt: skip
    missing = nbenv("show", "nope")
    assert missing.returncode == 2
    assert "No environment named or with id 'nope'" in missing.stderr


def test_python_option_uses_another_interpreter(env_index: IndexServer, fast_cache: Path) -> None:
    from nbenv.errors import NoInterpreterError
    from nbenv.interpreters import discover

    others = [i for i in discover() if i.short != "3.11" and i.version >= (3, 9, 0)]
    if not others:
        with pytest.raises(NoInterpreterError):
            from nbenv.interpreters import find_interpreter

            find_interpreter("3.99")
        pytest.skip("no second Python on this machine (pyenv has several on CI machines)")
    other = others[0]
    result = create(env_index, "--no-kernel", "--python", other.short, "alpha")
    python = Path(str(result["path"])) / "bin" / "python"
    out = subprocess.run(
        [str(python), "-c", "import sys, alpha; print(sys.version_info[:2], alpha.__version__)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == f"{other.version[:2]} 2.0"


def test_index_serving_other_bytes_than_it_lists_is_refused(
    make_index: Callable[..., IndexServer], tmp_path: Path, isolated_env: IsolatedEnv
) -> None:
    wheel = build_wheel(tmp_path, "switched", "1.0")
    listing = Index()
    listing.add(wheel, pep658=True)  # listed with this file's sha256 and metadata...
    build_wheel(tmp_path, "switched", "1.0", modules={"switched/__init__.py": "evil = 1\n"})
    server = make_index(listing)  # ...but the server now has other bytes under that name
    out = nbenv("create", "--no-kernel", "--index-url", server.url, "switched")
    assert out.returncode == 1
    assert "switched-1.0-py3-none-any.whl" in out.stderr
    assert server.file_url("switched-1.0-py3-none-any.whl") in out.stderr
    assert Store().env_ids() == []
    assert not list((isolated_env.nbenv_home / "cache").rglob("switched-1.0-py3-none-any.whl"))
