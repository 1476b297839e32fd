"""The magics as a user meets them: real notebooks, real kernels, the local index."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import pytest
from support.index_server import IndexServer
from support.notebooks import nbenv_cli, outputs, read_notebook, stream_text, write_notebook
from support.wheels import build_wheel

from nbenv.store import Store


def run(path: Path, *args: str) -> tuple[int, str, list[list[dict[str, object]]]]:
    out = nbenv_cli("run", str(path), *args)
    executed = path.with_name(path.stem + ".out.ipynb")
    notebook = read_notebook(executed) if executed.exists() else None
    return out.returncode, out.stderr, outputs(notebook) if notebook else []


@pytest.mark.parametrize("unpack_processes", ["0", "2"])  # threads; worker processes
def test_cell_runs_in_its_env_and_state_persists(
    env_index: IndexServer,
    fast_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    unpack_processes: str,
) -> None:
    monkeypatch.setenv("NBENV_UNPACK_PROCESSES", unpack_processes)  # the kernel inherits it
    pypi = f"%%pypi --index-url {env_index.url} alpha"
    path = write_notebook(
        tmp_path / "analysis.ipynb",
        "%load_ext nbenv",
        f"{pypi}\nimport sys, alpha\nprint(sys.prefix)\nsecret = 42",
        f"{pypi}\nprint(alpha.__version__, secret)",
        "print('parent has alpha:', 'alpha' in globals())",
    )
    code, err, _cells = run(path)
    assert code == 0, err
    printed = stream_text(read_notebook(tmp_path / "analysis.out.ipynb"))
    (env_id,) = Store().env_ids()
    assert printed[1].strip() == str(Store().path(env_id))
    assert printed[2].strip() == "2.0 42"
    assert printed[3].strip() == "parent has alpha: False"


def test_lock_beside_the_notebook_is_reused_without_the_index(
    env_index: IndexServer, fast_cache: Path, tmp_path: Path
) -> None:
    path = write_notebook(
        tmp_path / "study.ipynb",
        "%load_ext nbenv",
        f"%%pypi --index-url {env_index.url} gamma\nimport gamma\nprint(gamma.__version__)",
    )
    code, err, _ = run(path)
    assert code == 0, err
    lock = tmp_path / "study.nbenv.lock"
    first = lock.read_bytes()
    assert b'name = "gamma"' in first
    # a newer gamma appears; the lock keeps the notebook on the version it was run with
    env_index.add(build_wheel(tmp_path / "new", "gamma", "1.5"))
    env_index.clear_log()
    code, err, _ = run(path)
    assert code == 0, err
    assert stream_text(read_notebook(tmp_path / "study.out.ipynb"))[1].strip() == "1.1"
    assert env_index.count("/simple/") == 0
    assert lock.read_bytes() == first


def test_upgrade_re_resolves_and_updates_the_lock(
    env_index: IndexServer, fast_cache: Path, tmp_path: Path
) -> None:
    cell = f"%%pypi --index-url {env_index.url} gamma\nimport gamma\nprint(gamma.__version__)"
    path = write_notebook(tmp_path / "up.ipynb", "%load_ext nbenv", cell)
    assert run(path)[0] == 0
    env_index.add(build_wheel(tmp_path / "new", "gamma", "1.5"))
    upgraded = write_notebook(tmp_path / "up.ipynb", "%load_ext nbenv",
                              cell.replace(" gamma\n", " gamma --upgrade\n", 1))  # fmt: skip
    code, err, _ = run(upgraded)
    assert code == 0, err
    assert stream_text(read_notebook(tmp_path / "up.out.ipynb"))[1].strip() == "1.5"
    assert b'version = "1.5"' in (tmp_path / "up.nbenv.lock").read_bytes()


def test_empty_body_builds_and_registers_a_kernel(
    env_index: IndexServer, fast_cache: Path, tmp_path: Path
) -> None:
    path = write_notebook(
        tmp_path / "k.ipynb",
        "%load_ext nbenv",
        f"%pypi --index-url {env_index.url} --name k1 alpha",
    )
    code, err, _ = run(path)
    assert code == 0, err
    text = stream_text(read_notebook(tmp_path / "k.out.ipynb"))[1]
    assert "nbenv: env k1 built: Python 3.11" in text or "nbenv: env k1 ready" in text
    assert "kernel 'Python 3.11 · nbenv: k1'" in text
    assert "Change Kernel" in text
    listed = json.loads(nbenv_cli("list", "--json").stdout)
    assert [r["name"] for r in listed] == ["k1"]


def execute(path: Path) -> list[list[dict[str, object]]]:
    """Run a notebook in a kernel as Jupyter would (no pre-build): stops at the first error."""
    import nbclient
    from nbclient.exceptions import CellExecutionError

    notebook = read_notebook(path)
    resources = {"metadata": {"path": str(path.parent)}}
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources=resources
    )
    with contextlib.suppress(CellExecutionError):
        client.execute()
    return outputs(notebook)


def test_errors_fail_the_cell_with_a_message_not_a_traceback(
    env_index: IndexServer, fast_cache: Path, tmp_path: Path
) -> None:
    path = write_notebook(
        tmp_path / "bad.ipynb",
        "%load_ext nbenv",
        f"%%pypi --index-url {env_index.url} alpah\nprint('never')",
        "print('not reached')",
    )
    cells = execute(path)
    (error,) = [o for o in cells[1] if o["output_type"] == "error"]
    text = "\n".join(error["traceback"])  # type: ignore[arg-type]
    assert "No project named 'alpah'" in text and "Did you mean: alpha?" in text
    assert "Traceback" not in text and "nbenv/" not in text
    assert cells[2] == []  # "Run All" stopped at the failing cell
    # `nbenv run` says the same before it starts a kernel
    code, err, _ = run(path)
    assert code == 1 and "Did you mean: alpha?" in err


def test_child_error_shows_the_child_traceback(
    env_index: IndexServer, fast_cache: Path, tmp_path: Path
) -> None:
    path = write_notebook(
        tmp_path / "boom.ipynb",
        "%load_ext nbenv",
        f"%%pypi --index-url {env_index.url} alpha\ndef f():\n    return 1 / 0\nf()",
    )
    code, _err, cells = run(path)
    assert code == 1
    (error,) = [o for o in cells[1] if o["output_type"] == "error"]
    assert error["ename"] == "ZeroDivisionError"
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error["traceback"]))  # type: ignore[arg-type]
    assert "return 1 / 0" in text
    assert "subkernel" not in text and "magics" not in text


def test_adding_a_package_keeps_the_state_when_versions_agree(
    env_index: IndexServer, fast_cache: Path, tmp_path: Path
) -> None:
    url = env_index.url
    path = write_notebook(
        tmp_path / "grow.ipynb",
        "%load_ext nbenv",
        f"%%pypi --index-url {url} alpha\nkept = 'state'",
        f"%%pypi --index-url {url} alpha\n%pypi beta\nimport beta\nprint(kept, beta.__version__)",
    )
    code, err, _ = run(path)
    assert code == 0, err
    assert stream_text(read_notebook(tmp_path / "grow.out.ipynb"))[2].strip() == "state 1.0"


def test_nbenv_line_magic_mirrors_the_cli(
    env_index: IndexServer, fast_cache: Path, tmp_path: Path
) -> None:
    path = write_notebook(
        tmp_path / "cli.ipynb",
        "%load_ext nbenv",
        f"%pypi --index-url {env_index.url} --name viacli alpha",
        "%nbenv list",
        "%nbenv inspect",
        "%nbenv show nope",
    )
    code, _err, cells = run(path)
    assert code == 1
    printed = stream_text(read_notebook(tmp_path / "cli.out.ipynb"))
    assert printed[2].splitlines()[1].startswith("viacli")
    (table,) = [o for o in cells[3] if o["output_type"] == "display_data"]
    shown = table["data"]["text/html"]  # type: ignore[index]
    assert "<table>" in shown and "<td>viacli</td>" in shown and "1 environment;" in shown
    assert "application/vnd.jupyter.widget-view+json" in table["data"]  # type: ignore[operator]
    (error,) = [o for o in cells[4] if o["output_type"] == "error"]
    assert "No environment named or with id 'nope'" in "\n".join(error["traceback"])  # type: ignore[arg-type]


def test_an_env_kernel_has_the_magics_without_leaking_nbenv_dependencies(
    env_index: IndexServer, fast_cache: Path
) -> None:
    from jupyter_client.manager import start_new_kernel

    made = json.loads(
        nbenv_cli(
            "create", "--json", "--index-url", env_index.url, "--name", "host", "alpha"
        ).stdout
    )
    km, kc = start_new_kernel(kernel_name=made["kernel"], startup_timeout=60)
    printed: list[str] = []

    def run(code: str) -> dict[str, object]:
        reply = kc.execute_interactive(
            code,
            timeout=120,
            output_hook=lambda m: (
                printed.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None
            ),
        )
        return reply["content"]  # type: ignore[no-any-return]

    try:
        # no %load_ext: the env's kernel loads nbenv's magics itself
        cell = (
            f"%%pypi --index-url {env_index.url} beta\nimport beta\nprint('beta', beta.__version__)"
        )
        assert run(cell)["status"] == "ok"
        assert "beta 1.0" in "".join(printed)
        printed.clear()
        assert run("import alpha, sys\nprint(alpha.__version__, sys.prefix)")["status"] == "ok"
        assert "".join(printed).split() == ["2.0", made["path"]]
        printed.clear()
        assert run("%nbenv list")["status"] == "ok"
        assert "host" in "".join(printed)
        leak = run("import httpx")  # nbenv's own dependencies stay out of the user's env
        assert leak["status"] == "error" and leak["ename"] == "ModuleNotFoundError"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_adding_a_package_that_moves_a_version_says_the_state_is_gone(
    env_index: IndexServer, fast_cache: Path, tmp_path: Path
) -> None:
    url = env_index.url
    path = write_notebook(
        tmp_path / "move.ipynb",
        "%load_ext nbenv",
        f"%%pypi --index-url {url} shared\nimport shared\nkept = shared.__version__",
        f"%%pypi --index-url {url} shared\n%pypi left\nimport shared\n"
        "print(shared.__version__, 'kept' in globals())",
    )
    code, err, _ = run(path)
    assert code == 0, err
    printed = stream_text(read_notebook(tmp_path / "move.out.ipynb"))[2]
    assert printed.splitlines() == [
        "nbenv: adding left changes shared 2.0 -> 1.0, so this cell runs in a new kernel: "
        "variables set by the earlier cells of this env are not here.",
        "1.0 False",
    ]


def test_the_magics_tell_the_frontend_when_envs_change(
    env_index: IndexServer, fast_cache: Path, tmp_path: Path
) -> None:
    """What JupyterLab's extension listens for to refresh the kernel picker: an update of a
    display no output has (so no frontend shows it and no notebook keeps it)."""
    from jupyter_client.manager import start_new_kernel

    from nbenv.magics import CHANGE_MIME

    km, kc = start_new_kernel(kernel_name="python3", startup_timeout=60)
    seen: list[dict[str, object]] = []

    def run(code: str) -> list[dict[str, object]]:
        seen.clear()
        reply = kc.execute_interactive(code, timeout=240, output_hook=seen.append)
        assert reply["content"]["status"] == "ok", reply["content"]
        return [m["content"]["data"][CHANGE_MIME] for m in seen  # type: ignore[index]
                if CHANGE_MIME in m["content"].get("data", {})]  # type: ignore[attr-defined]  # fmt: skip

    try:
        assert run("%load_ext nbenv") == []
        [change] = run(f"%pypi --index-url {env_index.url} alpha")
        [env_id] = Store().env_ids()
        assert change == {"event": "env-ready", "env_id": env_id}
        carriers = [m for m in seen if CHANGE_MIME in m["content"].get("data", {})]  # type: ignore[attr-defined]
        assert [m["msg_type"] for m in carriers] == ["update_display_data"]
        assert all(CHANGE_MIME not in m["content"].get("data", {})  # type: ignore[attr-defined]
                   for m in seen if m["msg_type"] != "update_display_data")  # fmt: skip
        assert run(f"%pypi --index-url {env_index.url} alpha") == []  # nothing new
        assert run("%nbenv list") == []
        assert run(f"%nbenv remove {env_id}") == [{"event": "remove", "env_id": None}]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
