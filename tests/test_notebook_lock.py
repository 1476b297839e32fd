"""Notebook locks as a user meets them: `nbenv lock NOTEBOOK.ipynb` against the local index,
the file beside the notebook, reuse without resolution, --upgrade, --embed, broken files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from support.index_server import IndexServer
from support.notebooks import markdown, nbenv_cli, read_notebook, write_notebook
from support.wheels import build_wheel

from nbenv.cellspec import parse_cell
from nbenv.errors import LockFileError, UsageError
from nbenv.lock import Lock, lock_from_dict
from nbenv.notebook import declarations
from nbenv.notebook_lock import (
    LockLocation,
    NotebookLock,
    embedded_lock,
    locate_lock,
    lock_path_for,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def small_lock(name: str = "alpha", version: str = "2.0", digest: str = "a") -> Lock:
    """A valid lock made by hand: no index needed."""
    filename = f"{name}-{version}-py3-none-any.whl"
    return lock_from_dict(
        {
            "lock-version": "1.0",
            "created-by": "nbenv",
            "requires-python": "==3.11.*",
            "packages": [
                {
                    "name": name,
                    "version": version,
                    "index": "https://pypi.org/simple/",
                    "wheels": [
                        {
                            "name": filename,
                            "url": f"https://files.example/{filename}",
                            "hashes": {"sha256": digest * 64},
                        }
                    ],
                }
            ],
        }
    )


def two_env_notebook(path: Path, index: IndexServer) -> Path:
    return write_notebook(
        path,
        markdown("# Analysis\n%%pypi not-a-declaration"),
        f"%%pypi --index-url {index.url} alpha\nimport alpha\nprint(alpha.__version__)",
        f"x = 1\n%pypi --index-url {index.url} beta\nprint(x)",
    )


# -- scanning -------------------------------------------------------------------------------


def test_declarations_finds_cell_and_line_magics(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "scan.ipynb",
        markdown("%%pypi ignored-in-markdown"),
        "\n%%pypi --python 3.11 alpha\n%pypi beta\n\nimport alpha",
        "import os\n%pypi gamma>=1\n  %pypi delta\nprint(1)",
        "%%bash\n%pypi not-python\necho hi",
        "%%pypi beta alpha --python 3.11\nprint('same env as cell 2: listed once')",
        "%%conda -c conda-forge openmpi\n%pypi mpi4py\nfrom mpi4py import MPI",
        "print('%pypi in a string is not at the start of a line')",
    )
    found = declarations(nb)
    assert [d.describe() for d in found] == [
        "alpha beta",
        "gamma>=1",
        "delta",
        "mpi4py -c conda-forge openmpi",
    ]
    assert found[0].pypi.pythons == ("3.11",)
    assert found[0].body == "\nimport alpha"
    assert found[3].conda == (("-c", "conda-forge", "openmpi"),)
    assert found[0].key == parse_cell("pypi", "alpha beta --python 3.11", "").key


def test_a_bad_declaration_names_its_cell(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "bad.ipynb", "print(1)", "%%pypi alpha==\nimport alpha")
    with pytest.raises(UsageError) as info:
        declarations(nb)
    assert str(info.value).startswith("bad.ipynb, cell 2: Invalid requirement 'alpha=='")


def test_a_file_that_is_not_a_notebook_is_refused(tmp_path: Path) -> None:
    nb = tmp_path / "broken.ipynb"
    nb.write_text("{not json")
    out = nbenv_cli("lock", str(nb))
    assert out.returncode == 1
    assert f"{nb}: is not a Jupyter notebook nbenv can read" in out.stderr


# -- where the lock is ----------------------------------------------------------------------


def test_locate_lock_from_each_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    nb = tmp_path / "analysis.ipynb"

    found = locate_lock(environ={"JPY_SESSION_NAME": str(nb)})
    assert found == LockLocation(tmp_path / "analysis.nbenv.lock", nb, "JPY_SESSION_NAME")
    assert found.describe() == (
        "lock file analysis.nbenv.lock beside analysis.ipynb (from JPY_SESSION_NAME)"
    )
    # A server older than the kernel's cwd logic gives a path relative to its root.
    found = locate_lock(environ={"JPY_SESSION_NAME": "work/sub/analysis.ipynb"})
    assert found.path == tmp_path / "analysis.nbenv.lock"

    found = locate_lock({"__session__": str(nb)}, environ={})
    assert (found.source, found.notebook) == ("__session__", nb)
    found = locate_lock({"__vsc_ipynb_file__": str(nb)}, environ={})
    assert (found.source, found.notebook) == ("__vsc_ipynb_file__", nb)

    # A console's session name is no notebook: fall through to the working directory.
    found = locate_lock(environ={"JPY_SESSION_NAME": "console-1-3f2a"})
    assert found == LockLocation(tmp_path / "nbenv.lock", None, "working directory")
    assert found.describe() == (
        f"lock file nbenv.lock in {tmp_path} (the working directory: the notebook's path is "
        "unknown here; set NBENV_LOCK to choose the file)"
    )

    # NBENV_LOCK: a lock file, a notebook, a directory; and it beats the session name.
    target = tmp_path / "locks" / "run.nbenv.lock"
    found = locate_lock(environ={"NBENV_LOCK": str(target), "JPY_SESSION_NAME": str(nb)})
    assert found == LockLocation(target, None, "NBENV_LOCK")
    assert found.describe() == f"lock file {target} (from NBENV_LOCK)"
    found = locate_lock(environ={"NBENV_LOCK": "analysis.ipynb"})
    assert found == LockLocation(tmp_path / "analysis.nbenv.lock", nb, "NBENV_LOCK")
    assert locate_lock(environ={"NBENV_LOCK": str(tmp_path)}).path == tmp_path / "nbenv.lock"
    nb.write_text("{}")
    found = locate_lock(environ={"NBENV_LOCK": str(tmp_path / "analysis.nbenv.lock")})
    assert found.notebook == nb
    assert found.describe().endswith("beside analysis.ipynb (from NBENV_LOCK)")


# -- the lock file object ---------------------------------------------------------------------


def test_save_is_deterministic_merges_and_writes_only_changes(tmp_path: Path) -> None:
    path = tmp_path / "nb.nbenv.lock"
    empty = NotebookLock.load(path)
    assert empty.entries == {} and empty.save() is False and not path.exists()

    first, second = NotebookLock.load(path), NotebookLock.load(path)
    zeta = parse_cell("pypi", "zeta", "")
    first.put("ffff", zeta, small_lock("zeta", "1.0", "b"))
    first.put("0000", parse_cell("pypi", "alpha", ""), small_lock())
    assert first.save() is True
    # A second kernel saving its own entry keeps the first kernel's ones.
    second.put("8888", parse_cell("pypi", "beta", ""), small_lock("beta", "1.0", "c"))
    assert second.save() is True
    data = path.read_bytes()
    assert data.startswith(b"# nbenv notebook lock")
    text = data.decode()
    assert text.index("[envs.0000]") < text.index("[envs.8888]") < text.index("[envs.ffff]")
    assert 'declared = "zeta"' in text

    mtime = path.stat().st_mtime_ns
    again = NotebookLock.load(path)
    assert sorted(again.entries) == ["0000", "8888", "ffff"]
    assert again.entries["ffff"].env_id == small_lock("zeta", "1.0", "b").env_id
    again.put("ffff", zeta, small_lock("zeta", "1.0", "b"))  # the same entry again
    assert again.save() is False
    assert path.stat().st_mtime_ns == mtime
    assert again.dumps().encode() == data


def test_corrupt_lock_files_say_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "nb.nbenv.lock"
    path.write_text("version = 1\n[envs.x\n")
    with pytest.raises(LockFileError) as info:
        NotebookLock.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: is not valid TOML")
    assert "Restore it from version control, or delete it and lock again" in message

    path.write_text('version = 1\n[envs.abc]\ndeclared = "alpha"\n[envs.abc.pylock]\n')
    with pytest.raises(LockFileError) as info:
        NotebookLock.load(path)
    assert str(info.value).startswith(f"{path} [envs.abc]: is not a valid PEP 751 lock")

    path.write_text('version = 1\n[envs.abc]\ndeclared = "alpha"\n')
    with pytest.raises(LockFileError, match=r"\[envs.abc\] has no `pylock` table"):
        NotebookLock.load(path)

    path.write_text("version = 7\n")
    with pytest.raises(LockFileError, match=r"written by a newer nbenv .*version 7"):
        NotebookLock.load(path)

    path.write_text('[tool.poetry]\nname = "x"\n')
    with pytest.raises(LockFileError, match="is not an nbenv notebook lock"):
        NotebookLock.load(path)


# -- nbenv lock NOTEBOOK.ipynb ------------------------------------------------------------------


def test_lock_a_notebook_writes_a_deterministic_file(
    env_index: IndexServer, fast_cache: Path, tmp_path: Path
) -> None:
    nb = two_env_notebook(tmp_path / "analysis.ipynb", env_index)
    out = nbenv_cli("lock", str(nb))
    assert out.returncode == 0, out.stderr
    lock_file = tmp_path / "analysis.nbenv.lock"
    assert lock_file == lock_path_for(nb)
    lines = out.stdout.splitlines()
    assert lines[0] == f"Wrote {lock_file} (2 environments)"
    found = declarations(nb)
    data = tomllib.loads(lock_file.read_text())
    assert data["version"] == 1
    assert sorted(data["envs"]) == sorted(d.key for d in found)
    for declaration in found:
        entry = data["envs"][declaration.key]
        assert entry["declared"] == declaration.describe()
        versions = {p["name"]: p["version"] for p in entry["pylock"]["packages"]}
        assert "ipykernel" in versions and "ipywidgets" in versions  # it runs as a kernel
        assert f"env {entry['env-id']}  resolved" in out.stdout
        assert "tool" not in entry["pylock"]
    alpha = data["envs"][found[0].key]["pylock"]
    assert {p["name"]: p["version"] for p in alpha["packages"]}["alpha"] == "2.0"

    # Resolved again from scratch: the same bytes.
    first = lock_file.read_bytes()
    lock_file.unlink()
    assert nbenv_cli("lock", str(nb)).returncode == 0
    assert lock_file.read_bytes() == first

    # Locked already: no resolution, not a single index page, the file untouched.
    env_index.clear_log()
    mtime = lock_file.stat().st_mtime_ns
    again = nbenv_cli("lock", str(nb))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == f"Up to date: {lock_file} (2 environments)"
    assert again.stdout.count("locked already") == 2
    assert env_index.count("/simple/") == 0
    assert lock_file.stat().st_mtime_ns == mtime

    # The env a cell builds from the same request is the one the lock names.
    created = nbenv_cli("create", "--json", "--index-url", env_index.url, "alpha")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["env_id"] == data["envs"][found[0].key]["env-id"]


def test_lock_drops_entries_no_cell_declares(
    env_index: IndexServer, fast_cache: Path, tmp_path: Path
) -> None:
    nb = two_env_notebook(tmp_path / "nb.ipynb", env_index)
    assert nbenv_cli("lock", str(nb)).returncode == 0
    write_notebook(nb, f"%%pypi --index-url {env_index.url} alpha\nimport alpha")
    out = nbenv_cli("lock", "--json", str(nb))
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert [e["status"] for e in summary["envs"]] == ["kept"]
    assert len(summary["removed"]) == 1 and summary["written"] is True
    assert sorted(NotebookLock.load(lock_path_for(nb)).entries) == [summary["envs"][0]["key"]]


def test_upgrade_resolves_again_and_picks_a_new_release(
    env_index: IndexServer, tmp_path: Path
) -> None:
    # Its own cache (not fast_cache): the index gains a release only for this test.
    nb = write_notebook(
        tmp_path / "up.ipynb", f"%%pypi --index-url {env_index.url} alpha\nimport alpha"
    )
    assert nbenv_cli("lock", str(nb)).returncode == 0
    key = declarations(nb)[0].key

    def alpha_version() -> str:
        lock = NotebookLock.load(lock_path_for(nb)).get(key)
        assert lock is not None
        return next(str(p.version) for p in lock.pylock.packages if p.name == "alpha")

    assert alpha_version() == "2.0"
    env_index.add(build_wheel(tmp_path / "wheels", "alpha", "2.1"))
    kept = nbenv_cli("lock", str(nb))
    assert "locked already" in kept.stdout and alpha_version() == "2.0"
    upgraded = nbenv_cli("lock", str(nb), "--upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.splitlines()[0] == f"Wrote {lock_path_for(nb)} (1 environment)"
    assert "upgraded: alpha 2.0 -> 2.1" in upgraded.stdout
    assert alpha_version() == "2.1"
    same = nbenv_cli("lock", str(nb), "--upgrade")
    assert "no newer versions" in same.stdout
    assert same.stdout.startswith("Up to date:")


def test_embed_round_trip(env_index: IndexServer, fast_cache: Path, tmp_path: Path) -> None:
    nb = two_env_notebook(tmp_path / "shared.ipynb", env_index)
    node = read_notebook(nb)
    node.metadata["custom"] = {"keep": [1, 2]}
    node.metadata["nbenv"] = {"other": "kept too"}
    import nbformat

    nbformat.write(node, str(nb))
    out = nbenv_cli("lock", str(nb), "--embed")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == f"Embedded the locks in {nb} (metadata.nbenv.locks)"
    after = read_notebook(nb)
    assert after.metadata["custom"] == {"keep": [1, 2]}
    assert after.metadata["nbenv"]["other"] == "kept too"
    assert after.metadata["kernelspec"]["name"] == "python3"
    assert [c.source for c in after.cells] == [c.source for c in node.cells]
    json.dumps(after.metadata["nbenv"]["locks"])  # plain JSON: no datetimes left

    sidecar = lock_path_for(nb)
    embedded = embedded_lock(nb)
    assert embedded is not None
    assert embedded.dumps() == NotebookLock.load(sidecar).dumps() == sidecar.read_text()
    again = nbenv_cli("lock", str(nb), "--embed")
    assert again.stdout.splitlines()[-1].endswith("(metadata.nbenv.locks) are current")

    # The .ipynb alone is enough: without the lock file, nothing is resolved again.
    first = sidecar.read_bytes()
    sidecar.unlink()
    env_index.clear_log()
    rebuilt = nbenv_cli("lock", str(nb))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout.count("locked already") == 2
    assert env_index.count("/simple/") == 0
    assert sidecar.read_bytes() == first


def test_lock_refuses_request_options_with_a_notebook(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "n.ipynb", "print(1)")
    out = nbenv_cli("lock", str(nb), "--python", "3.12")
    assert out.returncode == 2
    assert "--python does not apply to a notebook" in out.stderr
    out = nbenv_cli("lock", "alpha", "--embed")
    assert out.returncode == 2
    assert "--upgrade and --embed are for a notebook" in out.stderr
    empty = nbenv_cli("lock", str(nb))
    assert empty.returncode == 0
    assert "declares no environment" in empty.stdout
    assert not lock_path_for(nb).exists()


def test_corrupt_lock_file_fails_the_command(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "c.ipynb", "%%pypi alpha\nimport alpha")
    lock_path_for(nb).write_text("this is = = not toml")
    out = nbenv_cli("lock", str(nb))
    assert out.returncode == 1
    assert out.stderr.startswith(f"error: {lock_path_for(nb)}: is not valid TOML")
    assert "Restore it from version control, or delete it and lock again" in out.stderr
