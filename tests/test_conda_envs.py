"""Conda and mixed envs end to end: the local conda channel (tests/support/conda_channel.py)
plus a local PyPI index with the kernel packages; real prefixes, real venvs, real kernels.

The channel's `python` is a venv-style shim over the interpreter running the tests (a real
conda python cannot be built offline): `<prefix>/bin/python` runs with `sys.prefix` = the
prefix and the prefix's site-packages, which is what a conda python gives a kernel.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import start_new_kernel
from support.conda_channel import PYTHON_VERSION, CondaChannel, serve_channel
from support.index_server import IndexServer
from support.notebooks import nbenv_cli, read_notebook, stream_text, write_notebook
from support.universe import MAIN, Universe
from support.wheels import build_wheel

from nbenv.conda_envs import create_conda_env, load_env_lock
from nbenv.envs import BuildOptions, describe_env, gc, remove_env
from nbenv.errors import ProvidedConflictError, UsageError
from nbenv.kernels import nbenv_kernelspecs
from nbenv.resolve.conda import parse_conda_args
from nbenv.resolve.mixed import CONDA_LOCK_FILE, MixedLock
from nbenv.spec import EnvRequest, parse_request
from nbenv.store import LOCK_FILE, Store

PY = "{}.{}".format(*sys.version_info[:2])


pytestmark = pytest.mark.usefixtures("no_machine_conda_settings")


@pytest.fixture(autouse=True)
def _no_compilers_left_behind() -> Iterator[None]:
    """Envs built here compile their bytecode in detached processes; end them with the test
    so they do not take the CPU from the timing-sensitive tests that run after."""
    yield
    from nbenv.store import stop_compiling

    store = Store()
    for env_id in store.env_ids():
        stop_compiling(store.path(env_id))


@pytest.fixture(scope="session")
def session_mixed_index(
    universe: Universe, kernel_wheels: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[IndexServer]:
    """The main index, the kernel packages, and PyPI releases that meet the channel's
    `purepy 1.0`: a newer purepy, one package that works with conda's, one that needs 2.x."""
    out = tmp_path_factory.mktemp("mixed-wheels")
    listing = universe.make_index(MAIN)
    for wheel in kernel_wheels:
        listing.add(wheel, pep658=True)
    listing.add(build_wheel(out, "purepy", "2.0"), pep658=True)
    listing.add(build_wheel(out, "usespurepy", "1.0", requires_dist=["purepy>=1"]), pep658=True)
    listing.add(build_wheel(out, "wantsnew", "1.0", requires_dist=["purepy>=2"]), pep658=True)
    server = IndexServer(listing).start()
    yield server
    server.stop()


@pytest.fixture
def pypi(session_mixed_index: IndexServer, fast_cache: Path) -> IndexServer:
    session_mixed_index.reset()
    return session_mixed_index


def _conda(channel: str, *argv: str) -> Any:
    return parse_conda_args(["-c", channel, *argv])


def _request(index: IndexServer, *specs: str) -> EnvRequest:
    return parse_request(["--index-url", index.url, *specs])


def _in_kernel(kernel_name: str, code: str) -> dict[str, Any]:
    """Start the registered kernel as Jupyter would, run `code`, return what it printed
    (one JSON line)."""
    km, kc = start_new_kernel(kernel_name=kernel_name, startup_timeout=60)
    out: list[str] = []
    try:

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
                out.append(msg["content"]["text"])

        reply = kc.execute_interactive(code, output_hook=hook, timeout=60)
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return json.loads("".join(out))  # type: ignore[no-any-return]


_PROBE = """
import json, os, shutil, subprocess, sys
print(json.dumps({
    "prefix": sys.prefix, "executable": sys.executable,
    "conda_prefix": os.environ.get("CONDA_PREFIX"),
    "ld": os.environ.get("LD_LIBRARY_PATH", ""),
    "hello": shutil.which("hello-tool"),
    "foo_home": os.environ.get("FOO_APP_HOME"),
    "foo_app": subprocess.run(["foo-app"], capture_output=True, text=True).stdout
               if shutil.which("foo-app") else None,
    "module": __import__(MODULE).__version__,
}))
"""


def _probe(module: str) -> str:
    return f"MODULE = {module!r}\n" + _PROBE


def test_conda_only_env_runs_its_kernel_on_conda_python(
    conda_channel: CondaChannel, pypi: IndexServer
) -> None:
    result = create_conda_env(
        _conda(conda_channel.url, "python", "hello-tool", "purepy"), _request(pypi)
    )
    path = result.path
    assert result.created and result.record.kind == "conda"
    # its bytecode compiler is recorded, as for a PyPI env: a size taken meanwhile is redone
    assert int((path / ".nbenv-compiling").read_text()) > 0
    assert result.record.python == PYTHON_VERSION
    assert result.record.base_interpreter == str(path / "bin" / "python")
    mixed = load_env_lock(path)
    assert mixed is not None and mixed.env_id == result.record.env_id == path.name
    assert mixed.pypi is not None and not mixed.layered
    # ipykernel came from PyPI into the conda prefix's own site-packages (no venv made)
    pypi_names = {str(p.name) for p in mixed.pypi.pylock.packages}
    assert {"ipykernel", "ipywidgets"} <= pypi_names and "purepy" not in pypi_names
    assert list(path.glob(f"lib/python{PY}/site-packages/ipykernel-*.dist-info"))
    assert (path / LOCK_FILE).is_file() and (path / CONDA_LOCK_FILE).is_file()

    assert result.kernel is not None
    (spec,) = [s for s in nbenv_kernelspecs() if s.env_id == result.record.env_id]
    kernel_json = json.loads((spec.resource_dir / "kernel.json").read_text())
    assert kernel_json["env"]["CONDA_PREFIX"] == str(path)
    assert kernel_json["env"]["PATH"] == f"{path / 'bin'}:${{PATH}}"
    assert kernel_json["metadata"]["nbenv"]["env_id"] == result.record.env_id

    seen = _in_kernel(result.kernel.name, _probe("purepy"))
    assert seen["prefix"] == str(path)
    assert seen["executable"] == str(path / "bin" / "python")
    assert seen["conda_prefix"] == str(path)
    assert seen["hello"] == str(path / "bin" / "hello-tool")
    assert seen["module"] == "1.0"  # conda's noarch python package

    # the same request again: found without solving (the channel is not read)
    again = create_conda_env(
        _conda(conda_channel.url, "python", "hello-tool", "purepy"), _request(pypi)
    )
    assert not again.created and again.record.env_id == result.record.env_id


def test_native_only_conda_gets_a_venv_layered_on_top(
    conda_channel: CondaChannel, pypi: IndexServer
) -> None:
    result = create_conda_env(_conda(conda_channel.url, "foo-app", "hello-tool"),
                              _request(pypi, "alpha"))  # fmt: skip
    path = result.path
    assert result.record.kind == "mixed"
    assert (path / "pyvenv.cfg").is_file() and (path / "conda-meta").is_dir()
    assert result.record.base_interpreter == sys.executable or Path(
        result.record.base_interpreter
    ).samefile(sys.executable)
    mixed = load_env_lock(path)
    assert mixed is not None and mixed.layered and mixed.conda.python_version is None
    assert result.kernel is not None
    seen = _in_kernel(result.kernel.name, _probe("alpha"))
    assert seen["prefix"] == str(path)  # the venv is the prefix itself
    assert seen["hello"] == str(path / "bin" / "hello-tool")
    assert seen["foo_app"] == "foo-app 1.0 using libfoo 2.0\n"  # the shared library it found
    assert seen["foo_home"] == f"{path}/share/foo-app"  # the package's activate.d script ran
    assert seen["ld"].split(":")[0] == str(path / "lib")
    assert seen["module"] == "2.0"  # alpha, from PyPI, in the venv

    info = describe_env(Store(), result.record.env_id)
    sources = {(p["name"], p["source"]) for p in info["packages"]}
    assert {("foo-app", "conda"), ("libfoo", "conda"), ("alpha", "pypi")} <= sources
    assert info["kind"] == "mixed"


def test_conda_dists_pin_the_pypi_pass(conda_channel: CondaChannel, pypi: IndexServer) -> None:
    result = create_conda_env(_conda(conda_channel.url, "purepy"), _request(pypi, "usespurepy"))
    mixed = load_env_lock(result.path)
    assert mixed is not None and mixed.pypi is not None
    names = {str(p.name): str(p.version) for p in mixed.pypi.pylock.packages}
    assert names["usespurepy"] == "1.0"
    assert "purepy" not in names  # PyPI has purepy 2.0; conda's 1.0 satisfies usespurepy
    assert mixed.conda.python_dists == {"purepy": "1.0"}
    assert pypi.count("/simple/purepy/") == 0  # a provided dist is never looked up
    assert result.kernel is not None
    assert _in_kernel(result.kernel.name, _probe("purepy"))["module"] == "1.0"


def test_a_pypi_requirement_against_a_conda_dist_names_both_sides(
    conda_channel: CondaChannel, pypi: IndexServer
) -> None:
    with pytest.raises(ProvidedConflictError) as direct:
        create_conda_env(_conda(conda_channel.url, "purepy"), _request(pypi, "purepy>=2"))
    assert str(direct.value) == (
        "The PyPI requirement purepy>=2 (requested by you) contradicts purepy 1.0, which the "
        "conda package purepy 1.0 pyh0_0 installs. The PyPI pass of a mixed env keeps the "
        "Python packages conda installed: loosen the PyPI requirement, or ask conda for the "
        "version you need (e.g. `%%conda purepy>=...`) and drop it from the PyPI side."
    )
    with pytest.raises(ProvidedConflictError) as deep:
        create_conda_env(_conda(conda_channel.url, "purepy"), _request(pypi, "wantsnew"))
    assert deep.value.requirements == ("purepy>=2 (required by wantsnew 1.0)",)
    assert deep.value.by == "the conda package purepy 1.0 pyh0_0"
    assert Store().env_ids() == []  # nothing half-built


def test_bare_conda_prefix_remove_and_gc(conda_channel: CondaChannel, pypi: IndexServer) -> None:
    result = create_conda_env(_conda(conda_channel.url, "hello-tool"), EnvRequest(),
                              BuildOptions(register_kernel=False))  # fmt: skip
    path = result.path
    assert result.kernel is None and not (path / "bin" / "python").exists()
    assert (path / "bin" / "hello-tool").is_file() and not (path / LOCK_FILE).exists()
    mixed = load_env_lock(path)
    assert mixed is not None and mixed.pypi is None
    assert f"in {path}" in (path / "bin" / "hello-tool").read_text()  # final path, not the temp
    assert not list(path.parent.glob(".build-*"))
    from nbenv.export import export_lock, find_export_source

    source = find_export_source(result.record.env_id)
    with pytest.raises(UsageError, match="holds conda packages only: export it as"):
        export_lock(source, "requirements")
    yml = export_lock(source, "environment-yml").splitlines()
    assert "  - hello-tool=1.0=h0_0" in yml and not any("pip" in line for line in yml)
    flow = export_lock(source, "metaflow").splitlines()
    assert "@conda(" in flow and "@pypi(" not in flow
    assert f"# channels: {conda_channel.url} (METAFLOW_CONDA_CHANNELS)" in flow
    report = gc(Store())
    assert report.envs == () and Store().exists(result.record.env_id)
    remove_env(Store(), result.record.env_id)
    assert not path.exists() and Store().env_ids() == []


def test_locked_rebuild_needs_no_channel(conda_channel: CondaChannel, pypi: IndexServer) -> None:
    with serve_channel(conda_channel.path) as server:
        first = create_conda_env(_conda(server.url, "foo-app"), _request(pypi, "alpha"),
                                 BuildOptions(compile_bytecode=False))  # fmt: skip
        mixed = load_env_lock(first.path)
        assert mixed is not None
        assert all(p.url.startswith(server.url) for p in mixed.conda.packages)
    remove_env(Store(), first.record.env_id)
    # the server is gone; the lock and the package cache are all a rebuild needs
    again = create_conda_env(_conda(server.url, "foo-app"), _request(pypi, "alpha"),
                             lock=MixedLock.loads(mixed.dumps()))  # fmt: skip
    assert again.created and again.record.env_id == first.record.env_id
    assert (again.path / "bin" / "foo-app").is_file()


def test_cli_create_show_export_and_cross_platform_lock(
    conda_channel: CondaChannel, pypi: IndexServer, tmp_path: Path
) -> None:
    created = nbenv_cli("create", "--name", "mpi-demo", "--conda", "foo-app", "-c",
                        conda_channel.url, "--index-url", pypi.url, "alpha", "--json")  # fmt: skip
    assert created.returncode == 0, created.stderr
    env_id = json.loads(created.stdout)["env_id"]
    shown = nbenv_cli("show", "mpi-demo")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "  kind:   mixed" in lines
    assert "    foo-app 1.0 h0_0  conda" in lines
    assert "    alpha 2.0  pypi" in lines
    yml = nbenv_cli("export", "mpi-demo", "--format", "environment-yml")
    assert yml.returncode == 0, yml.stderr
    assert f"  - '{conda_channel.url}'" in yml.stdout.splitlines()
    assert "  - foo-app=1.0=h0_0" in yml.stdout.splitlines()
    assert "      - alpha==2.0" in yml.stdout.splitlines()
    flow = nbenv_cli("export", env_id, "--format", "metaflow")
    assert flow.returncode == 0, flow.stderr
    assert "needs the Netflix extension (pip install metaflow-netflixext)" in flow.stdout
    assert '        "libfoo": "2.0",' in flow.stdout and '        "alpha": "2.0",' in flow.stdout

    out = tmp_path / "osx.json"
    locked = nbenv_cli("lock", "--conda", "hello-tool", "-c", conda_channel.url, "--platform",
                       "osx-arm64", "--python", "3.12", "--index-url", pypi.url, "alpha",
                       "-o", str(out))  # fmt: skip
    assert locked.returncode == 0, locked.stderr
    lock = MixedLock.load(out)
    assert lock.conda.platform == "osx-arm64"
    assert [(p.name, p.subdir) for p in lock.conda.packages] == [("hello-tool", "osx-arm64")]
    assert lock.pypi is not None
    assert [str(m) for m in lock.pypi.pylock.environments or ()] == [
        'python_version == "3.12" and sys_platform == "darwin" and platform_machine == "arm64"'
    ]
    refused = nbenv_cli("create", "--lock", str(out))
    assert refused.returncode != 0 and "cannot be installed on" in refused.stderr

    here = tmp_path / "here.json"
    locked = nbenv_cli("lock", "--conda", "hello-tool", "-c", conda_channel.url,
                       "--index-url", pypi.url, "gamma", "-o", str(here))  # fmt: skip
    assert locked.returncode == 0, locked.stderr
    built = nbenv_cli("create", "--lock", str(here), "--json", "--no-kernel")
    assert built.returncode == 0, built.stderr
    summary = json.loads(built.stdout)
    assert summary["env_id"] == MixedLock.load(here).env_id and summary["kind"] == "mixed"


def test_conda_cell_in_a_real_kernel_and_a_locked_rerun_offline(
    conda_channel: CondaChannel, pypi: IndexServer, tmp_path: Path
) -> None:
    with serve_channel(conda_channel.path) as server:
        path = write_notebook(
            tmp_path / "mpi.ipynb",
            "%load_ext nbenv",
            f"%%conda -c {server.url} foo-app\n%pypi --index-url {pypi.url} alpha\n"
            "import alpha, os, subprocess\n"
            "print(subprocess.run(['foo-app'], capture_output=True, text=True).stdout.strip())\n"
            "print(alpha.__version__, os.environ['CONDA_PREFIX'])\nkept = 7",
            f"%%conda -c {server.url} foo-app\n%pypi --index-url {pypi.url} alpha\nprint(kept)",
        )
        done = nbenv_cli("run", str(path))
        assert done.returncode == 0, done.stderr
    printed = stream_text(read_notebook(tmp_path / "mpi.out.ipynb"))
    (env_id,) = Store().env_ids()
    assert printed[1].splitlines() == ["foo-app 1.0 using libfoo 2.0",
                                       f"2.0 {Store().path(env_id)}"]  # fmt: skip
    assert printed[2].strip() == "7"  # one env, one kernel: state kept between its cells
    lock_text = (tmp_path / "mpi.nbenv.lock").read_text()
    assert "[envs." in lock_text and 'name = "foo-app"' in lock_text
    assert 'name = "alpha"' in lock_text and f'env-id = "{env_id}"' in lock_text

    # the channel server is stopped and the env removed: the notebook lock rebuilds it
    remove_env(Store(), env_id, force=True)
    pypi.clear_log()
    again = nbenv_cli("run", str(path))
    assert again.returncode == 0, again.stderr
    assert Store().env_ids() == [env_id]
    assert stream_text(read_notebook(tmp_path / "mpi.out.ipynb"))[2].strip() == "7"
    assert pypi.count("/simple/") == 0


def test_two_processes_creating_one_conda_env_build_it_once(
    conda_channel: CondaChannel, pypi: IndexServer
) -> None:
    import subprocess

    argv = [sys.executable, "-m", "nbenv", "create", "--conda", "foo-app", "-c",
            conda_channel.url, "--index-url", pypi.url, "alpha", "--json"]  # fmt: skip
    both = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]  # fmt: skip
    results = []
    for process in both:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        results.append(json.loads(out))
    assert results[0]["env_id"] == results[1]["env_id"]
    assert sorted(r["created"] for r in results) == [False, True]
    assert Store().env_ids() == [results[0]["env_id"]]
    assert not list(Store().envs.glob(".build-*"))


def test_conda_python_and_a_pypi_python_must_agree(
    conda_channel: CondaChannel, pypi: IndexServer
) -> None:
    other = "3.99"
    with pytest.raises(UsageError) as info:
        create_conda_env(_conda(conda_channel.url, "purepy"),
                         _request(pypi, "--python", other, "alpha"))  # fmt: skip
    assert str(info.value) == (
        f"The conda packages bring Python {PYTHON_VERSION}, but the PyPI side asks for "
        f"--python {other}: give the version once, with `%%conda --python {other}`."
    )


def test_notebook_lock_and_export_of_a_conda_cell(
    conda_channel: CondaChannel, pypi: IndexServer, tmp_path: Path
) -> None:
    path = write_notebook(
        tmp_path / "tool.ipynb",
        "%load_ext nbenv",
        f"%%conda -c {conda_channel.url} hello-tool purepy\n%pypi --index-url {pypi.url}\n"
        "import purepy",
    )
    locked = nbenv_cli("lock", str(path), "--embed")
    assert locked.returncode == 0, locked.stderr
    assert "hello-tool purepy" in locked.stdout and "resolved" in locked.stdout
    document = read_notebook(path)
    (entry,) = document["metadata"]["nbenv"]["locks"]["envs"].values()
    assert {p["name"] for p in entry["conda"]["packages"]} == {"hello-tool", "purepy", "python"}
    assert "ipykernel" in {p["name"] for p in entry["pylock"]["packages"]}
    flow = nbenv_cli("export", str(path), "--format", "metaflow")
    assert flow.returncode == 0, flow.stderr
    lines = flow.stdout.splitlines()
    assert "@conda(" in lines and f'    python="{PY}",' in lines
    assert '        "hello-tool": "1.0",' in lines and '        "purepy": "1.0",' in lines
    # the kernel packages came from PyPI: that makes the export a mixed one
    assert "@pypi(" in lines and any("metaflow-netflixext" in line for line in lines)
    again = nbenv_cli("lock", str(path))
    assert again.returncode == 0 and "locked already" in again.stdout


@pytest.fixture(scope="session")
def widgets_channel(conda_channel: CondaChannel, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The fixture channel plus the real ipywidgets (from this interpreter) as a noarch
    python conda package."""
    import importlib.metadata
    import shutil

    from support.conda_channel import build_from_dist, index_channel

    root = tmp_path_factory.mktemp("widgets-channel") / "channel"
    shutil.copytree(conda_channel.path, root)
    build_from_dist(root, importlib.metadata.distribution("ipywidgets"))
    index_channel(root)
    return root.as_uri() + "/"


def test_kernel_packages_come_from_conda_when_the_specs_name_them(
    widgets_channel: str, pypi: IndexServer
) -> None:
    import importlib.metadata

    result = create_conda_env(_conda(widgets_channel, "python", "ipywidgets"), _request(pypi))
    mixed = load_env_lock(result.path)
    assert mixed is not None and mixed.pypi is not None
    version = importlib.metadata.version("ipywidgets")
    assert mixed.conda.python_dists["ipywidgets"] == version
    pypi_names = {str(p.name) for p in mixed.pypi.pylock.packages}
    assert "ipywidgets" not in pypi_names and "ipykernel" in pypi_names
    assert result.kernel is not None
    seen = _in_kernel(result.kernel.name, _probe("ipywidgets"))
    assert seen["module"] == version and seen["prefix"] == str(result.path)
    assert (result.path / "conda-meta" / f"ipywidgets-{version}-pyh0_0.json").is_file()


def test_cell_options_may_sit_on_the_conda_line() -> None:
    from nbenv.cellspec import parse_cell

    declaration = parse_cell(
        "conda", "-c /tmp/channel --in x --upgrade foo-app", "%pypi --out y alpha\nprint(x)\n"
    )
    assert declaration.conda == (("-c", "/tmp/channel", "foo-app"),)
    assert (declaration.inputs, declaration.outputs, declaration.upgrade) == (("x",), ("y",), True)
    assert declaration.body == "print(x)\n"
    plain = parse_cell("conda", "-c /tmp/channel foo-app", "%pypi alpha\nprint(x)\n")
    assert plain.key == declaration.key  # cell options are not part of the env
