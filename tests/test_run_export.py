"""`nbenv run` and `nbenv export` as a user runs them: real kernels, real files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from support.index_server import IndexServer
from support.notebooks import markdown, nbenv_cli, read_notebook, stream_text, write_notebook
from support.universe import Universe
from support.wheels import sha256_file

from nbenv.lock import lock_from_dict, write_lock
from nbenv.notebook import declarations
from nbenv.notebook_lock import NotebookLock, lock_path_for
from nbenv.run import prepare_notebook
from nbenv.store import Store

PY = f"{sys.version_info.major}.{sys.version_info.minor}"


# -- nbenv run ----------------------------------------------------------------------------------


def test_run_executes_a_notebook_and_saves_its_outputs(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "plain.ipynb",
        "x = 6 * 7",
        markdown("Some *text*."),
        "print(x)",
        "import os\nprint(os.environ['NBENV_LOCK'])\nprint('JPY_SESSION_NAME' in os.environ)",
        "import os\nprint(os.getcwd())",
    )
    out = nbenv_cli("run", str(nb), cwd=tmp_path.parent, env={"JPY_SESSION_NAME": "/x.ipynb"})
    assert out.returncode == 0, out.stderr
    executed = tmp_path / "plain.out.ipynb"
    assert out.stdout.splitlines()[-1].startswith("Executed 4 code cells with kernel python3 in ")
    assert out.stdout.splitlines()[-1].endswith(f"; saved to {executed}")
    assert stream_text(read_notebook(executed)) == [
        "",
        "42\n",
        f"{tmp_path / 'plain.nbenv.lock'}\nFalse\n",
        f"{tmp_path}\n",
    ]
    assert stream_text(read_notebook(nb)) == ["", "", "", ""]  # the source is left alone
    assert not lock_path_for(nb).exists()  # nothing declared, nothing locked

    elsewhere = tmp_path / "runs" / "today.ipynb"
    again = nbenv_cli("run", str(nb), "-o", str(elsewhere))
    assert again.returncode == 0, again.stderr
    assert stream_text(read_notebook(elsewhere))[1] == "42\n"


def test_run_fails_clearly_on_an_erroring_cell(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "fails.ipynb",
        "print('before')",
        markdown("a note"),
        "def explode():\n    return 1 / 0\nexplode()",
        "print('after')",
    )
    out = nbenv_cli("run", str(nb))
    assert out.returncode == 1
    executed = tmp_path / "fails.out.ipynb"
    err = out.stderr
    assert err.startswith(
        "error: Cell 3 of fails.ipynb failed: ZeroDivisionError: division by zero"
    )
    assert "----> 2     return 1 / 0" in err  # the traceback, without terminal colours
    assert "\x1b[" not in err
    assert err.rstrip().endswith(
        f"The notebook, executed up to that cell, was saved to {executed}."
    )
    node = read_notebook(executed)
    assert stream_text(node) == ["before\n", "", ""]
    errors = [o for o in node.cells[2].outputs if o.output_type == "error"]
    assert errors and errors[0].ename == "ZeroDivisionError"


def test_run_stops_a_cell_that_runs_too_long(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "slow.ipynb", "print('fast')", "import time\ntime.sleep(60)")
    out = nbenv_cli("run", str(nb), "--timeout", "2")
    assert out.returncode == 1
    assert out.stderr.startswith(
        "error: Cell 2 of slow.ipynb failed: Timeout: the cell ran longer than 2 s"
    )
    assert stream_text(read_notebook(tmp_path / "slow.out.ipynb"))[0] == "fast\n"


def test_run_with_an_unknown_kernel_says_what_to_do(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "k.ipynb", "print(1)", kernel="no-such-kernel")
    out = nbenv_cli("run", str(nb))
    assert out.returncode == 2
    assert "No kernel named 'no-such-kernel'" in out.stderr and "--kernel NAME" in out.stderr
    ok = nbenv_cli("run", str(nb), "--kernel", "python3")
    assert ok.returncode == 0, ok.stderr


def test_run_builds_envs_from_the_lock_without_resolving(
    env_index: IndexServer, fast_cache: Path, tmp_path: Path
) -> None:
    nb = write_notebook(
        tmp_path / "locked.ipynb",
        f"%%pypi --index-url {env_index.url} alpha\nimport alpha",
    )
    assert nbenv_cli("lock", str(nb)).returncode == 0
    entry = NotebookLock.load(lock_path_for(nb)).get(declarations(nb)[0].key)
    assert entry is not None
    lock_bytes = lock_path_for(nb).read_bytes()
    env_index.clear_log()
    prepared = prepare_notebook(nb)
    assert [(e.status, e.lock.env_id) for e in prepared.envs] == [("locked", entry.env_id)]
    assert prepared.envs[0].result.created is True
    assert Store().env_ids() == [entry.env_id]
    assert prepared.envs[0].result.kernel is not None
    assert env_index.count("/simple/") == 0  # downloads at most: no index page
    assert prepared.lock_written is False
    assert lock_path_for(nb).read_bytes() == lock_bytes


def test_run_adds_what_the_lock_lacks_and_says_so(
    env_index: IndexServer, fast_cache: Path, tmp_path: Path
) -> None:
    nb = write_notebook(
        tmp_path / "fresh.ipynb",
        "%load_ext nbenv",
        f"%pypi --index-url {env_index.url} alpha",
        "print('done')",
    )
    out = nbenv_cli("run", str(nb))
    assert out.returncode == 0, out.stderr
    lock_file = lock_path_for(nb)
    lines = out.stdout.splitlines()
    assert lines[0] == f"Lock file: {lock_file}"
    assert lines[1].startswith("  alpha: env ")
    assert lines[1].endswith(" built  (not in the lock: resolved and added)")
    key = declarations(nb)[0].key
    assert sorted(NotebookLock.load(lock_file).entries) == [key]
    # In the kernel, the magic found the lock through NBENV_LOCK and resolved nothing.
    env_index.clear_log()
    before = lock_file.read_bytes()
    again = nbenv_cli("run", str(nb))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[1].endswith(" ready")
    assert env_index.count("/simple/") == 0
    assert lock_file.read_bytes() == before
    assert stream_text(read_notebook(tmp_path / "fresh.out.ipynb"))[2] == "done\n"


def test_a_lock_entry_for_another_machine_is_refused(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "old.ipynb", "%%pypi alpha\nimport alpha")
    lock = NotebookLock.load(lock_path_for(nb))
    declaration = declarations(nb)[0]
    foreign = lock_from_dict(
        {
            "lock-version": "1.0",
            "created-by": "nbenv",
            "requires-python": "==2.7.*",
            "packages": [],
        }
    )
    lock.put(declaration.key, declaration, foreign)
    lock.save()
    out = nbenv_cli("run", str(nb))
    assert out.returncode == 1
    assert out.stderr.startswith(
        f"error: {lock_path_for(nb)}: the entry for `alpha` does not fit this machine ("
    )
    assert f"`nbenv lock {nb} --upgrade`" in out.stderr
    assert Store().env_ids() == []


# -- nbenv export -------------------------------------------------------------------------------


def test_export_a_store_env_in_every_format(
    env_index: IndexServer, fast_cache: Path, universe: Universe
) -> None:
    made = nbenv_cli("create", "--json", "--no-kernel", "--name", "small",
                     "--index-url", env_index.url, "alpha")  # fmt: skip
    assert made.returncode == 0, made.stderr
    env_id = json.loads(made.stdout)["env_id"]
    digest = sha256_file(universe.path("alpha-2.0-py3-none-any.whl"))
    url = env_index.url

    def export(fmt: str) -> str:
        out = nbenv_cli("export", "small", "--format", fmt)
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert export("requirements") == (
        f"# nbenv env {env_id} (small)\n"
        "# pip install --require-hashes --no-deps -r THIS_FILE\n"
        f"--index-url {url}\n"
        "alpha==2.0 \\\n"
        f"    --hash=sha256:{digest}\n"
    )
    assert export("pylock") == (Store().path(env_id) / "pylock.toml").read_text()
    assert export("environment-yml") == (
        f"# nbenv env {env_id} (small)\n"
        "# conda env create -f THIS_FILE\n"
        "name: small\n"
        "channels:\n"
        "  - conda-forge\n"
        "dependencies:\n"
        f"  - python={PY}\n"
        "  - pip\n"
        "  - pip:\n"
        f"      - '--index-url {url}'\n"
        "      - alpha==2.0\n"
    )
    assert export("metaflow") == (
        f"# nbenv env {env_id} (small)\n"
        f"# packages come from {url}: give Metaflow's pip that index (pip.conf or "
        "PIP_INDEX_URL / PIP_EXTRA_INDEX_URL)\n"
        "@pypi(\n"
        f'    python="{PY}",\n'
        "    packages={\n"
        '        "alpha": "2.0",\n'
        "    },\n"
        ")\n"
    )
    by_id = nbenv_cli("export", env_id[:8], "--format", "pylock")
    assert by_id.stdout == export("pylock")


def test_export_markers_sdists_and_pypi_from_a_lock_file(tmp_path: Path) -> None:
    def wheel(name: str, digest: str) -> dict[str, object]:
        return {"name": name, "url": f"https://files.example/{name}",
                "hashes": {"sha256": digest * 64}}  # fmt: skip

    lock = lock_from_dict(
        {
            "lock-version": "1.0",
            "created-by": "nbenv",
            "requires-python": "==3.12.*",
            "packages": [
                {
                    "name": "appnope",
                    "version": "0.1.4",
                    "marker": 'sys_platform == "darwin"',
                    "index": "https://pypi.org/simple/",
                    "wheels": [wheel("appnope-0.1.4-py2.py3-none-any.whl", "1")],
                },
                {
                    "name": "pandas",
                    "version": "2.2.2",
                    "index": "https://pypi.org/simple/",
                    "wheels": [
                        wheel("pandas-2.2.2-cp312-cp312-manylinux_2_17_x86_64.whl", "2"),
                        wheel("pandas-2.2.2-cp312-cp312-macosx_11_0_arm64.whl", "3"),
                    ],
                    "sdist": wheel("pandas-2.2.2.tar.gz", "4"),
                },
            ],
        }
    )
    path = tmp_path / "pylock.toml"
    write_lock(lock, path)

    def export(fmt: str) -> str:
        out = nbenv_cli("export", str(path), "--format", fmt)
        assert out.returncode == 0, out.stderr
        return out.stdout

    head = f"# nbenv env {lock.env_id} ({path})\n"
    assert export("requirements") == head + (
        "# pip install --require-hashes --no-deps -r THIS_FILE\n"
        'appnope==0.1.4 ; sys_platform == "darwin" \\\n'
        f"    --hash=sha256:{'1' * 64}\n"
        "pandas==2.2.2 \\\n"
        f"    --hash=sha256:{'2' * 64} \\\n"
        f"    --hash=sha256:{'3' * 64} \\\n"
        f"    --hash=sha256:{'4' * 64}\n"
    )
    assert export("environment-yml") == head + (
        "# conda env create -f THIS_FILE\n"
        f"name: nbenv-{lock.env_id}\n"
        "channels:\n"
        "  - conda-forge\n"
        "dependencies:\n"
        "  - python=3.12\n"
        "  - pip\n"
        "  - pip:\n"
        "      - 'appnope==0.1.4 ; sys_platform == \"darwin\"'\n"
        "      - pandas==2.2.2\n"
    )
    assert export("metaflow") == head + (
        "# not expressible in @pypi (environment marker): "
        'appnope==0.1.4 ; sys_platform == "darwin"\n'
        "@pypi(\n"
        '    python="3.12",\n'
        "    packages={\n"
        '        "pandas": "2.2.2",\n'
        "    },\n"
        ")\n"
    )
    assert export("pylock") == path.read_text()


def test_export_a_notebook_env(env_index: IndexServer, fast_cache: Path, tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "two.ipynb",
        f"%%pypi --index-url {env_index.url} alpha\nimport alpha",
        f"%%pypi --index-url {env_index.url} beta\nimport beta",
    )
    unlocked = nbenv_cli("export", str(nb), "--format", "requirements", "--env", "alpha")
    assert unlocked.returncode == 2
    assert f"`alpha` of {nb} is not locked yet: run `nbenv lock {nb}` first." in unlocked.stderr
    assert nbenv_cli("lock", str(nb)).returncode == 0
    alpha, beta = declarations(nb)
    several = nbenv_cli("export", str(nb), "--format", "pylock")
    assert several.returncode == 2
    assert several.stderr.splitlines()[1:] == [f"  {alpha.key}  alpha", f"  {beta.key}  beta"]
    out = nbenv_cli("export", str(nb), "--format", "pylock", "--env", beta.key[:6])
    assert out.returncode == 0, out.stderr
    lock = NotebookLock.load(lock_path_for(nb)).get(beta.key)
    assert lock is not None and out.stdout == lock.dumps()
    reqs = nbenv_cli("export", str(nb), "-f", "requirements", "--env", "beta", "-o",
                     str(tmp_path / "requirements.txt"))  # fmt: skip
    assert reqs.returncode == 0, reqs.stderr
    text = (tmp_path / "requirements.txt").read_text()
    assert text.startswith(f"# nbenv env {lock.env_id} (two.ipynb: beta)\n")
    assert "beta==1.0 \\\n" in text and "gamma==1.1 \\\n" in text and "ipykernel==" in text
    pins = [line for line in text.splitlines() if "==" in line]
    assert len(pins) == len(lock.pylock.packages) == text.count("--hash=sha256:")
