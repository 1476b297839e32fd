"""Kernelspecs for nbenv envs: installed into the isolated Jupyter dirs, listed by `jupyter
kernelspec list`, started for real, removed, and garbage-collected when their env is gone."""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import ipykernel
import pytest
from jupyter_client.manager import start_new_kernel
from support import IsolatedEnv

from nbenv.errors import KernelSpecError, UsageError
from nbenv.kernels import (
    KernelSpecInfo,
    display_name,
    install_kernelspec,
    kernel_name,
    nbenv_kernelspecs,
    orphaned_kernelspecs,
    remove_kernelspec,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="venv layout is bin/python")

ENV_ID = "1a2b3c4d5e6f7a8b"
OTHER_ID = "ffee00112233aabb"
PY = f"{sys.version_info[0]}.{sys.version_info[1]}"
VALID = re.compile(r"^[a-z0-9._-]+$")


def make_env(root: Path) -> Path:
    """A real venv of the running Python that can import ipykernel: made without pip, with a
    .pth pointing at the test interpreter's site-packages (the base may lack ipykernel)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    (purelib,) = (root / "lib").glob("python*/site-packages")
    (purelib / "parent.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return root


def fake_env(root: Path) -> Path:
    """An env dir whose bin/python is the running interpreter (no venv needed)."""
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python").symlink_to(sys.executable)
    return root


def install(env_dir: Path, env_id: str = ENV_ID, **overrides: Any) -> KernelSpecInfo:
    arguments: dict[str, Any] = {
        "env_dir": env_dir,
        "python": env_dir / "bin" / "python",
        "env_id": env_id,
        "name": "ml-demo",
        "python_version": PY,
        "requirements": ["pandas==2.2.*", "scikit-learn"],
        "lock_path": env_dir.parent / "demo.pylock.toml",
    }
    arguments.update(overrides)
    return install_kernelspec(**arguments)


def jupyter_kernelspecs() -> dict[str, Any]:
    jupyter = shutil.which("jupyter", path=str(Path(sys.executable).parent))
    if jupyter is None:
        pytest.skip("no jupyter command next to the test interpreter")
    done = subprocess.run(
        [jupyter, "kernelspec", "list", "--json"],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ.copy(),  # the isolated JUPYTER_* dirs
    )
    specs: dict[str, Any] = json.loads(done.stdout)["kernelspecs"]
    return specs


def test_a_registered_kernel_starts_inside_its_env(
    tmp_path: Path, isolated_env: IsolatedEnv
) -> None:
    env_dir = make_env(tmp_path / "envs" / ENV_ID)
    info = install(env_dir)

    assert info.name == "nbenv-ml-demo-1a2b3c4d5e6f"
    assert info.resource_dir == isolated_env.jupyter_data / "kernels" / info.name
    listed = jupyter_kernelspecs()[info.name]
    assert Path(listed["resource_dir"]) == info.resource_dir
    spec = listed["spec"]
    assert spec["display_name"] == f"Python {PY} · nbenv: ml-demo"
    host = isolated_env.nbenv_home / "kernel-host"
    assert spec["argv"][0] == str(env_dir / "bin" / "python")
    assert spec["argv"][1] == "-c" and repr(str(host)) in spec["argv"][2]
    assert spec["argv"][3:] == ["-f", "{connection_file}", "--IPKernelApp.extensions=['nbenv']"]
    assert sorted(p.name for p in host.iterdir()) == ["nbenv"]  # nbenv alone, no other package
    assert spec["env"]["NBENV_HOST_PYTHON"] == sys.executable
    assert spec["metadata"]["nbenv"] == {
        "env_id": ENV_ID,
        "name": "ml-demo",
        "python_version": PY,
        "requirements": ["pandas==2.2.*", "scikit-learn"],
        "lock_path": str(tmp_path / "envs" / "demo.pylock.toml"),
        "env_dir": str(env_dir),
    }
    assert spec["metadata"]["debugger"] is True

    km, kc = start_new_kernel(kernel_name=info.name, startup_timeout=60)
    try:
        streams: list[str] = []

        def on_output(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
                streams.append(msg["content"]["text"])

        reply = kc.execute_interactive(
            "import sys; print(sys.prefix)", output_hook=on_output, timeout=60
        )
        assert reply["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    assert not km.is_alive()
    assert os.path.realpath("".join(streams).strip()) == os.path.realpath(env_dir)


def test_kernel_json_is_what_the_picker_needs(tmp_path: Path) -> None:
    info = install(fake_env(tmp_path / "env"), name=None)
    spec = json.loads((info.resource_dir / "kernel.json").read_text(encoding="utf-8"))
    assert info.name == "nbenv-1a2b3c4d5e6f"
    assert spec["display_name"] == f"Python {PY} · nbenv: 1a2b3c4d"
    assert spec["language"] == "python"
    assert spec["metadata"]["nbenv"]["name"] is None
    assert set(spec["env"]) == {"PYDEVD_DISABLE_FILE_VALIDATION", "NBENV_HOST_PYTHON"}
    ipykernel_resources = Path(ipykernel.__path__[0], "resources")
    for logo in ipykernel_resources.glob("logo-*"):
        assert (info.resource_dir / logo.name).read_bytes() == logo.read_bytes()
    assert info.resource_dir.stat().st_mode & 0o055 == 0o055  # readable by others, like ipykernel


def test_credentials_never_reach_kernel_json(tmp_path: Path) -> None:
    requirements = [
        "private @ https://alice:s3cret@wheels.example.com/private-1.0-py3-none-any.whl",
        "--extra-index-url https://token:tok3n@pkgs.example.com/simple",
    ]
    info = install(fake_env(tmp_path / "env"), requirements=requirements)
    text = (info.resource_dir / "kernel.json").read_text(encoding="utf-8")
    for secret in ("alice", "s3cret", "token:", "tok3n"):
        assert secret not in text
    assert info.requirements == (
        "private @ https://wheels.example.com/private-1.0-py3-none-any.whl",
        "--extra-index-url https://pkgs.example.com/simple",
    )


def test_installing_again_replaces_the_spec_quietly(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    env_dir = fake_env(tmp_path / "env")
    install(env_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # jupyter_client deprecates `replace=`: not passed
        info = install(env_dir, requirements=["numpy"])
    assert [i.requirements for i in nbenv_kernelspecs()] == [("numpy",)]
    assert info.requirements == ("numpy",)
    assert capfd.readouterr() == ("", "")  # the core never prints


def test_a_spec_is_replaced_atomically_while_jupyter_reads_it(tmp_path: Path) -> None:
    """Readers (Jupyter's picker, another nbenv) that read the spec while it is written
    again always find a whole kernel.json; files the old spec had and the new one has not
    are gone after, and no staging dir is left or listed."""
    import threading

    from jupyter_client.kernelspec import KernelSpecManager

    env_dir = fake_env(tmp_path / "env")
    first = install(env_dir)
    (first.resource_dir / "stale.txt").write_text("from an older spec\n")
    done = threading.Event()
    seen: list[str] = []

    def read() -> None:
        while not done.is_set():
            try:
                data = json.loads((first.resource_dir / "kernel.json").read_text())
            except (OSError, ValueError) as exc:
                seen.append(repr(exc))
            else:
                seen.append(str(data["metadata"]["nbenv"]["requirements"]))
            names = set(KernelSpecManager().find_kernel_specs())
            if names != {first.name} and not names <= {first.name, "python3"}:
                seen.append(f"listed {sorted(names)}")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(40):
            install(env_dir, requirements=[f"numpy=={i}"])
    finally:
        done.set()
        reader.join()
    broken = [s for s in seen if not s.startswith("['")]
    assert broken == [] and len(seen) > 1
    assert not (first.resource_dir / "stale.txt").exists()
    assert [p.name for p in first.resource_dir.parent.iterdir()] == [first.name]
    assert nbenv_kernelspecs()[0].requirements == ("numpy==39",)


def test_prefix_and_sys_prefix_installs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: IsolatedEnv
) -> None:
    env_dir = fake_env(tmp_path / "env")
    prefix = tmp_path / "prefix"
    info = install(env_dir, prefix=str(prefix))
    assert info.resource_dir == prefix / "share" / "jupyter" / "kernels" / info.name
    assert not (isolated_env.jupyter_data / "kernels" / info.name).exists()
    assert nbenv_kernelspecs() == []  # that prefix is not on Jupyter's path
    assert [i.resource_dir for i in nbenv_kernelspecs(prefixes=[str(prefix)])] == [
        info.resource_dir
    ]

    fake_sys_prefix = tmp_path / "sys-prefix"
    monkeypatch.setattr(sys, "prefix", str(fake_sys_prefix))
    other = install(env_dir, env_id=OTHER_ID, sys_prefix=True)
    assert other.resource_dir == fake_sys_prefix / "share" / "jupyter" / "kernels" / other.name

    with pytest.raises(UsageError, match="--sys-prefix"):
        install(env_dir, prefix=str(prefix), sys_prefix=True)


def test_an_unwritable_destination_is_a_kernelspec_error(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    (prefix / "share").write_text("a file where a directory should be")
    with pytest.raises(KernelSpecError) as caught:
        install(fake_env(tmp_path / "env"), prefix=str(prefix))
    assert caught.value.kernel_name == "nbenv-ml-demo-1a2b3c4d5e6f"


def test_remove_by_name_removes_only_nbenv_specs(tmp_path: Path, isolated_env: IsolatedEnv) -> None:
    info = install(fake_env(tmp_path / "env"))
    assert remove_kernelspec(info.name) == [info.resource_dir]
    assert not info.resource_dir.exists()
    assert remove_kernelspec(info.name) == []
    assert jupyter_kernelspecs().get(info.name) is None

    foreign = isolated_env.jupyter_data / "kernels" / "nbenv-lookalike"
    foreign.mkdir(parents=True)
    (foreign / "kernel.json").write_text(json.dumps({"argv": ["x"], "display_name": "x"}))
    with pytest.raises(KernelSpecError, match="not created by nbenv"):
        remove_kernelspec("nbenv-lookalike")
    assert foreign.exists()
    assert nbenv_kernelspecs() == []


def test_orphans_are_specs_whose_env_is_gone(tmp_path: Path) -> None:
    kept = install(fake_env(tmp_path / "kept"), name="kept")
    gone_dir = fake_env(tmp_path / "gone")
    gone = install(gone_dir, env_id=OTHER_ID, name="gone")
    assert {i.name: i.env_exists for i in nbenv_kernelspecs()} == {
        kept.name: True,
        gone.name: True,
    }

    shutil.rmtree(gone_dir)
    orphans = orphaned_kernelspecs()
    assert [(o.name, o.env_id, o.env_dir) for o in orphans] == [(gone.name, OTHER_ID, gone_dir)]
    assert [remove_kernelspec(o) for o in orphans] == [[gone.resource_dir]]
    assert [i.name for i in nbenv_kernelspecs()] == [kept.name]


def test_kernel_names_are_valid_stable_and_distinct() -> None:
    assert kernel_name(ENV_ID, "ml-demo") == "nbenv-ml-demo-1a2b3c4d5e6f"
    assert kernel_name(ENV_ID, None) == "nbenv-1a2b3c4d5e6f"
    assert kernel_name(ENV_ID, "ml-demo") == kernel_name(ENV_ID, "ml-demo")

    odd = ["Café ML!", "UPPER case", "a/b\\c", "日本語", "---", "", "x" * 300, "v1.2_final"]
    for name in odd:
        made = kernel_name(ENV_ID, name)
        assert VALID.match(made), made
        assert len(made) <= 60
    assert kernel_name(ENV_ID, "Café ML!") == "nbenv-cafe-ml-1a2b3c4d5e6f"
    assert kernel_name(ENV_ID, "日本語") == kernel_name(ENV_ID, None)

    ids = [ENV_ID, OTHER_ID, "1a2b3c4d5e6f0000", "0" * 16]
    names: list[str | None] = [None, "ml-demo", "ml-demo-ffee00112233", "1a2b3c4d5e6f", "x"]
    made_by: dict[str, set[str]] = {}
    for env_id in ids:
        for label in names:
            made_by.setdefault(kernel_name(env_id, label), set()).add(env_id[:12])
    assert all(len(owners) == 1 for owners in made_by.values())

    with pytest.raises(ValueError):
        kernel_name("--", None)


def test_display_names() -> None:
    assert display_name("3.11", "ml-demo", ENV_ID) == "Python 3.11 · nbenv: ml-demo"
    assert display_name("3.12", None, ENV_ID) == "Python 3.12 · nbenv: 1a2b3c4d"
