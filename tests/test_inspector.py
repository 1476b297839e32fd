"""The inspector and the progress display: the model layer on real envs, the static HTML,
and the widget app and progress widget in real kernels (nbclient)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.index_server import IndexServer
from support.notebooks import nbenv_cli, outputs, stream_text, write_notebook
from support.wheels import build_wheel

from nbenv.envinfo import env_packages
from nbenv.envs import BuildOptions, CreateResult, create_env, describe_envs
from nbenv.inspector.html import detail_html, envs_html
from nbenv.inspector.model import env_detail, overview, plan_gc, plan_kernel, plan_remove
from nbenv.inspector.progress import ProgressDisplay, ProgressState
from nbenv.kernels import nbenv_kernelspecs
from nbenv.notebook_index import notebooks_by_env
from nbenv.notebook_lock import NotebookLock
from nbenv.spec import parse_request
from nbenv.store import Store
from nbenv.upgrade import check_outdated, upgrade_env

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def make(index: IndexServer, *specs: str, kernel: bool = False) -> CreateResult:
    request = parse_request(["--index-url", index.url, *specs])
    return create_env(request, BuildOptions(compile_bytecode=False, register_kernel=kernel))


# -- the model layer -------------------------------------------------------------------------


def test_overview_rows_filter_and_sort(index: IndexServer, fast_cache: Path) -> None:
    named = make(index, "--name", "ml", "withextras[fast]")
    plain = make(index, "beta")
    view = overview()
    by_id = {r.env_id: r for r in view.rows}
    assert set(by_id) == {named.record.env_id, plain.record.env_id}
    ml = by_id[named.record.env_id]
    assert (ml.name, ml.kind, ml.python) == ("ml", "pypi", named.record.python)
    assert ml.packages == 3  # withextras, alpha, gamma (the extra)
    assert 0 < ml.size_unique < ml.size  # the wheels' files are shared with the cache
    assert [r.label for r in view.view("ml")] == ["ml"]
    assert [r.env_id for r in view.view("beta")] == [plain.record.env_id]
    assert view.view("no such thing") == []
    assert view.view(sort="name")[0].label == "ml"  # named before unnamed
    smallest_first = view.view(sort="size", descending=False)
    assert smallest_first[0].size <= smallest_first[1].size
    assert "2 environments" in view.summary()
    # the CLI lists the same rows, from the same call
    listed = json.loads(nbenv_cli("list", "--json").stdout)
    assert {r["env_id"]: r["size_unique"] for r in listed} == {
        r.env_id: r.size_unique for r in view.rows
    }
    assert {r["kind"] for r in listed} == {"pypi"}


def test_sizes_are_cached_and_redone_when_the_env_changes(
    index: IndexServer, fast_cache: Path
) -> None:
    env = make(index, "alpha")
    store = Store()
    first = store.cached_size(env.record.env_id)
    assert (first.total, first.unique) == store.size(env.record.env_id)
    cache_file = env.path / ".nbenv-size.json"
    data = json.loads(cache_file.read_text())
    data.update(total=111, unique=11)  # a planted figure: read back means nothing was walked
    cache_file.write_text(json.dumps(data))
    assert store.cached_size(env.record.env_id).total == 111
    assert describe_envs(store)[0]["size"] == 111
    # a package added to site-packages changes its mtime: walked again
    (next(env.path.glob("lib/python*/site-packages")) / "added.py").write_text("x = 1\n" * 100)
    again = store.cached_size(env.record.env_id)
    assert again.total == store.size(env.record.env_id)[0] > first.total


def test_a_size_taken_while_bytecode_compiles_is_redone_after(
    index: IndexServer, fast_cache: Path
) -> None:
    env = make(index, "alpha")
    store = Store()
    compiler = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        store.compiling(env.record.env_id, compiler.pid)
        store.cached_size(env.record.env_id)
        cache_file = env.path / ".nbenv-size.json"
        data = json.loads(cache_file.read_text())
        assert data["compiler"] == compiler.pid
        data["total"] = 111
        cache_file.write_text(json.dumps(data))
        assert store.cached_size(env.record.env_id).total != 111  # still compiling: walked
        data = json.loads(cache_file.read_text())
        data["total"] = 111
        cache_file.write_text(json.dumps(data))
    finally:
        compiler.kill()
        compiler.wait()
    assert store.cached_size(env.record.env_id).total != 111  # it ended: walked once more
    assert json.loads(cache_file.read_text())["compiler"] is None
    assert store.cached_size(env.record.env_id).total == store.size(env.record.env_id)[0]


def test_notebook_index_follows_the_locks(
    index: IndexServer, fast_cache: Path, tmp_path: Path
) -> None:
    from nbenv.cellspec import parse_cell
    from nbenv.notebook import ensure_env

    notebook = write_notebook(tmp_path / "study.ipynb", "1")
    lock = NotebookLock.load(tmp_path / "study.nbenv.lock")
    first = ensure_env(parse_cell("pypi", f"--index-url {index.url} alpha", ""), lock,
                       register_kernel=False)  # fmt: skip
    second = ensure_env(parse_cell("pypi", f"--index-url {index.url} gamma", ""), lock,
                        register_kernel=False)  # fmt: skip
    lock.save()
    a, g = first.lock.env_id, second.lock.env_id
    uses = notebooks_by_env()
    assert [u.notebook for u in uses[a]] == [notebook] and [u.label for u in uses[g]] == [
        str(notebook)
    ]
    assert {r.env_id: r.notebooks for r in overview().rows}[a] == (str(notebook),)
    shown = nbenv_cli("show", a).stdout.splitlines()
    assert f"  used by {notebook}" in shown and "  kind:   pypi" in shown
    # the lock is edited elsewhere (gamma's entry dropped): the index reads it again
    edited = NotebookLock.load(tmp_path / "study.nbenv.lock")
    key = next(k for k, e in edited.entries.items() if e.env_id == g)
    text = (tmp_path / "study.nbenv.lock").read_text()
    edited.remove(key)
    (tmp_path / "study.nbenv.lock").write_text(edited.dumps())
    os.utime(tmp_path / "study.nbenv.lock", ns=(1, 1))  # a different mtime, for certain
    assert text != (tmp_path / "study.nbenv.lock").read_text()
    uses = notebooks_by_env()
    assert a in uses and g not in uses
    # the lock is deleted: its record goes
    (tmp_path / "study.nbenv.lock").unlink()
    assert notebooks_by_env() == {}
    assert list((Store().home / "notebooks").glob("*.json")) == []


def test_packages_required_by_and_why(index: IndexServer, fast_cache: Path) -> None:
    env = make(index, "middle", "withextras[fast]", "beta")
    record = env.record
    found = env_packages(env.path, record.requirements, record.python, env.path / "pylock.toml")
    by_name = {p.name: p for p in found.packages}
    assert set(by_name) == {"middle", "right", "shared", "withextras", "alpha", "gamma", "beta"}
    assert (by_name["shared"].version, by_name["shared"].required_by) == ("2.0", ("right",))
    assert by_name["gamma"].required_by == ("beta", "withextras")  # one through `fast`
    assert by_name["middle"].requested and not by_name["right"].requested
    assert by_name["alpha"].source == index.url
    assert by_name["beta"].size > by_name["alpha"].size > 0  # beta's wheel is padded
    assert found.why("shared") == [("middle", "right", "shared")]
    assert found.why("gamma") == [("beta", "gamma"), ("withextras", "gamma")]
    assert found.why("beta") == [("beta",)]
    tree = [(depth, label.split()[0], again) for depth, label, again in found.tree()]
    assert tree == [
        (0, "middle", False), (1, "right", False), (2, "shared", False),
        (0, "withextras", False), (1, "alpha", False), (1, "gamma", False),
        (0, "beta", False), (1, "gamma", True),
    ]  # fmt: skip


def test_remove_and_kernel_plans_change_the_store(env_index: IndexServer, fast_cache: Path) -> None:
    env = make(env_index, "--name", "doomed", "alpha", kernel=True)
    row = next(r for r in overview().rows if r.env_id == env.record.env_id)
    assert row.kernel_display_name and "doomed" in row.kernel_display_name
    unregister = plan_kernel(row)
    assert unregister.action == "unregister kernel"
    unregister.run()
    assert [s for s in nbenv_kernelspecs() if s.env_id == env.record.env_id] == []
    row = next(r for r in overview().rows if r.env_id == env.record.env_id)
    assert row.kernel is None
    register = plan_kernel(row)
    assert register.action == "register kernel"
    register.run()
    row = next(r for r in overview().rows if r.env_id == env.record.env_id)
    assert row.kernel is not None
    remove = plan_remove(row)
    assert "doomed" in remove.question and "frees" in remove.question
    assert Store().exists(env.record.env_id)  # asking does nothing
    remove.run()
    assert not Store().exists(env.record.env_id)
    assert [s for s in nbenv_kernelspecs() if s.env_id == env.record.env_id] == []


def test_gc_plan_says_what_would_go_then_does_it(env_index: IndexServer, fast_cache: Path) -> None:
    import shutil

    env = make(env_index, "alpha", kernel=True)
    shutil.rmtree(env.path)  # a kernelspec whose env is gone
    plan = plan_gc()
    (orphan,) = [s.name for s in nbenv_kernelspecs()]
    assert f"orphaned kernel {orphan}" in plan.question
    assert [s.name for s in nbenv_kernelspecs()] == [orphan]  # asking does nothing
    assert plan.run() == "Cleaned up 1 item."
    assert nbenv_kernelspecs() == []
    assert plan_gc().question == "Nothing to clean up right now."


def test_outdated_check_and_upgrade(index: IndexServer, fast_cache: Path, tmp_path: Path) -> None:
    env = make(index, "--name", "g", "gamma")
    store = Store()
    assert check_outdated(store, env.record.env_id).up_to_date
    index.add(build_wheel(tmp_path / "new", "gamma", "1.5"))
    found = check_outdated(store, env.record.env_id)
    assert not found.up_to_date and found.changes == ("gamma 1.1 -> 1.5",)
    new = upgrade_env(store, env.record.env_id)
    assert new == found.new_env_id != env.record.env_id
    assert store.alias("g") == new and store.exists(env.record.env_id)


def test_static_html_and_show_html(index: IndexServer, fast_cache: Path) -> None:
    env = make(index, "--name", "web", "beta")
    page = envs_html(describe_envs())
    assert "<td>web</td>" in page and env.record.env_id in page and "1 environment" in page
    detail = env_detail(env.record.env_id)
    shown = detail_html(detail)
    assert "<td>gamma</td>" in shown and "<td>beta</td>" in shown
    assert "beta 1.0\n  gamma 1.1" in shown  # the requirement tree
    assert 'name = "gamma"' in shown.replace("&quot;", '"')  # the lock
    out = nbenv_cli("show", "web", "--html")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == shown.strip()


# -- progress, without a kernel -----------------------------------------------------------------


def test_progress_state_lines() -> None:
    now = [0.0]
    display = ProgressDisplay("text", clock=lambda: now[0])
    assert display.finish("nothing happened") is None  # no phase: nothing shown
    state = ProgressState(phase="downloading", done=3 * 1024 * 1024, total=6 * 1024 * 1024,
                          unit="bytes", rate=1024 * 1024, elapsed=2.0)  # fmt: skip
    assert state.line() == "nbenv: downloading · 3.0 MB / 6.0 MB, 1.0 MB/s · 2.0 s"
    assert state.fraction() == 0.5
    installing = ProgressState(phase="installing wheels", done=2, total=5, elapsed=0.5)
    assert installing.line() == "nbenv: installing wheels · 2/5 packages · 0.5 s"
    seen: list[str] = []
    live = ProgressDisplay("callback", clock=lambda: now[0], callback=seen.append)
    live.cached("downloading", 1, 4)
    live.stage("resolving")
    live.progress("fetching", 2, 7)  # within 0.1 s of the last draw: not drawn
    now[0] = 0.2
    live.progress("fetching", 3, 7)  # metadata, shown under its phase
    now[0] = 1.0
    live.stage("downloading")
    live.progress("downloading", 1024, 2048)  # throttled
    now[0] = 1.5
    live.progress("downloading", 2048, 2048)  # the end of a phase is always drawn
    assert live.finish("env x ready") == "nbenv: env x ready (1.5 s, 1 of 4 downloads cached)"
    assert seen == [
        "nbenv: resolving · 0.0 s",
        "nbenv: resolving · fetching metadata 3/7 · 0.2 s",
        "nbenv: downloading · 1.0 s",
        "nbenv: downloading · 2.0 KB / 2.0 KB, 2.0 KB/s · 1.5 s",
        "nbenv: env x ready (1.5 s, 1 of 4 downloads cached)",
    ]


def test_terminal_ipython_gets_a_text_bar_and_the_summary() -> None:
    """Terminal IPython has no front end for widgets: the CLI's bar, then the summary."""
    code = (
        "from nbenv.inspector.progress import ProgressDisplay, choose_mode\n"
        "from IPython.terminal.interactiveshell import TerminalInteractiveShell\n"
        "shell = TerminalInteractiveShell.instance()\n"
        "mode = choose_mode(shell)\n"
        "print('mode', mode)\n"
        "d = ProgressDisplay(mode)\n"
        "d.cached('downloading', 2, 3)\n"
        "d.stage('resolving'); d.stage('downloading'); d.progress('downloading', 50, 100)\n"
        "d.progress('downloading', 100, 100)\n"
        "print(d.finish('env abc ready: Python 3.11.9, 3 packages'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NBENV_PROGRESS"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True)  # fmt: skip
    lines = done.stdout.splitlines()
    assert lines[0] == "mode terminal"
    assert lines[1].startswith("nbenv: env abc ready: Python 3.11.9, 3 packages (")
    assert lines[1].endswith(" s, 2 of 3 downloads cached)")
    assert lines[2] == lines[1]  # finish() returns the line it printed
    assert "resolving ..." in done.stderr and "downloading [" in done.stderr


# -- in a real kernel ------------------------------------------------------------------------


CHANGES: list[dict[str, Any]] = []  # the change messages the last `execute` saw


def execute(path: Path, **env: str) -> Any:
    """Run a notebook in a python3 kernel as a front end would, keeping widget state."""
    import nbclient
    import nbformat

    from nbenv.magics import CHANGE_MIME

    class Client(nbclient.NotebookClient):
        def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
            data = msg["content"].get("data", {})
            if msg["msg_type"] == "update_display_data" and CHANGE_MIME in data:
                CHANGES.append(data[CHANGE_MIME])
            return super().process_message(msg, cell, cell_index)

    CHANGES.clear()
    notebook = nbformat.read(str(path), as_version=4)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = Client(
            notebook, timeout=300, kernel_name="python3", store_widget_state=True,
            resources={"metadata": {"path": str(path.parent)}},
        )  # fmt: skip
        client.execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return notebook


def widget_states(notebook: Any) -> list[dict[str, Any]]:
    return [m["state"] for m in notebook.metadata["widgets"][WIDGET_STATE]["state"].values()]


def test_progress_widget_then_summary_in_a_kernel(
    env_index: IndexServer, fast_cache: Path, tmp_path: Path
) -> None:
    path = write_notebook(
        tmp_path / "build.ipynb",
        "%load_ext nbenv",
        f"%pypi --index-url {env_index.url} alpha",
    )
    notebook = execute(path)
    (env_id,) = Store().env_ids()
    shown = [o for o in outputs(notebook)[1] if o["output_type"] == "display_data"]
    (summary,) = [o for o in shown if o["data"].get("text/plain", "").startswith("nbenv: env")]
    line = summary["data"]["text/plain"]
    assert line.startswith(f"nbenv: env {env_id[:12]} ready: Python ")
    assert " packages; added in nbenv.lock (" in line and "downloads cached)" in line
    assert WIDGET_VIEW not in summary["data"]  # the widget was replaced by the summary
    states = widget_states(notebook)
    phases = [s["value"] for s in states if s.get("_model_name") == "HTMLModel"]
    assert any(v.startswith("<b>nbenv</b>: ") for v in phases)
    bars = [s for s in states if s.get("_model_name") == "FloatProgressModel"]
    assert bars and bars[0]["value"] == 1.0  # the last phase ran to its end


def test_progress_text_fallback_in_a_kernel(
    env_index: IndexServer, fast_cache: Path, tmp_path: Path
) -> None:
    path = write_notebook(
        tmp_path / "text.ipynb",
        "%load_ext nbenv",
        f"%pypi --index-url {env_index.url} gamma",
    )
    notebook = execute(path, NBENV_PROGRESS="text")
    shown = [o for o in outputs(notebook)[1] if o["output_type"] == "display_data"]
    (summary,) = [o for o in shown if o["data"].get("text/plain", "").startswith("nbenv: env")]
    assert "packages; added in nbenv.lock (" in summary["data"]["text/plain"]
    assert "widgets" not in notebook.metadata  # no widget was made


def test_inspector_app_in_a_kernel_removes_an_env_after_confirmation(
    env_index: IndexServer, fast_cache: Path, tmp_path: Path
) -> None:
    keep = make(env_index, "--name", "keeper", "alpha", kernel=True)
    doomed = make(env_index, "--name", "doomed", "beta", kernel=True)
    path = write_notebook(
        tmp_path / "inspect.ipynb",
        "%load_ext nbenv",
        "%nbenv inspect",
        "from nbenv.inspector import inspect\n"
        "app = inspect(display=False)\n"
        "print('<td>keeper</td>' in app.table.value, '<td>doomed</td>' in app.table.value)\n"
        "app.filter.value = 'doomed'\n"
        "print([r.env_id for r in app.rows()])\n"
        f"app.select.value = {doomed.record.env_id!r}\n"
        "print(app.detail_box.layout.display == '', 'beta' in app.packages.value)\n"
        "app.why_select.value = 'gamma'\n"
        "print(app.why.value)\n"
        "app.buttons['remove'].click()\n"
        "print(app.question.value)\n"
        "print(app.confirm_box.layout.display)\n",
        "from nbenv.store import Store\n"
        f"print(Store().exists({doomed.record.env_id!r}))\n"
        "app.confirm_button.click()\n"
        "print(app.status.value)\n"
        f"print(Store().exists({doomed.record.env_id!r}), app.select.value)\n"
        "app.filter.value = ''\n"
        "print([r.label for r in app.rows()])",
    )
    notebook = execute(path)
    printed = stream_text(notebook)
    # the first display: the widget, with the static HTML for front ends without widgets
    (shown,) = [o for o in outputs(notebook)[1] if o["output_type"] == "display_data"]
    assert WIDGET_VIEW in shown["data"]
    assert "<td>keeper</td>" in shown["data"]["text/html"]
    assert "<td>doomed</td>" in shown["data"]["text/html"]
    # the front end received the table as widget models; the notebook saves their last
    # state, which a redraw after the removal may have left with `keeper` alone
    tables = [s["value"] for s in widget_states(notebook) if "<table>" in str(s.get("value"))]
    assert any("<td>keeper</td>" in t for t in tables)
    lines = printed[2].splitlines()
    assert lines[0] == "True True"  # the app's table lists both envs
    assert lines[1] == str([doomed.record.env_id])
    assert lines[2] == "True True"
    assert "beta &rarr; gamma" in lines[3]
    assert lines[4].startswith(f"Remove environment doomed ({doomed.record.env_id})")
    assert lines[5] == ""  # the confirmation is showing
    after = printed[3].splitlines()
    assert after[0] == "True"  # nothing removed before Confirm
    assert after[1].startswith(f"Removed environment doomed ({doomed.record.env_id}) and kernel")
    assert after[2] == "False None"
    assert after[3] == "['keeper']"
    assert Store().env_ids() == [keep.record.env_id]
    assert [s.env_id for s in nbenv_kernelspecs()] == [keep.record.env_id]
    # the JupyterLab extension hears of it (it refreshes its kernel picker and sidebar)
    assert {"event": "remove", "env_id": doomed.record.env_id} in CHANGES


@pytest.mark.parametrize("kind", ["pypi"])
def test_describe_envs_reads_kernelspecs_once(
    kind: str, index: IndexServer, fast_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing reads every kernelspec once, not once per env (50 envs: 50x the work)."""
    import nbenv.envs

    make(index, "alpha")
    make(index, "gamma")
    calls = []
    real = nbenv.envs.nbenv_kernelspecs
    monkeypatch.setattr(nbenv.envs, "nbenv_kernelspecs", lambda: calls.append(1) or real())
    rows = describe_envs()
    assert len(rows) == 2 and {r["kind"] for r in rows} == {kind}
    assert len(calls) == 1


def test_first_display_does_not_walk_then_sizes_fill_in(
    index: IndexServer, fast_cache: Path
) -> None:
    from nbenv.inspector.widgets import InspectorApp

    env = make(index, "--name", "fresh", "alpha")
    assert not (env.path / ".nbenv-size.json").exists()  # nothing measured it yet
    app = InspectorApp()
    (row,) = app.data.rows
    assert row.size is None and app.data.unmeasured == [env.record.env_id]
    assert app.header.value.endswith("1 environment; measuring their sizes…")
    assert "<td class=num>…</td>" in app.table.value
    app.measure_sizes()
    app.wait_for_sizes(60)
    (row,) = app.data.rows
    assert (row.size, row.size_unique) == Store().size(env.record.env_id)
    assert "measuring" not in app.header.value and "…" not in app.table.value
    # sorting and filtering redraw the same rows
    app.filter.value = "nothing matches this"
    assert app.select.options == () and "0 of 1" in app.header.value
    app.filter.value = "fresh"
    assert [v for _, v in app.select.options] == [env.record.env_id]


def test_kernel_dirs_match_jupyter_client() -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    from nbenv.kernels import _kernel_dirs

    expected = list(dict.fromkeys(os.path.realpath(d) for d in KernelSpecManager().kernel_dirs))
    assert [os.path.realpath(d) for d in _kernel_dirs(())] == expected


def test_app_outdated_check_then_upgrade_after_confirmation(
    index: IndexServer, fast_cache: Path, tmp_path: Path
) -> None:
    from nbenv.inspector.widgets import InspectorApp

    env = make(index, "--name", "g", "gamma")
    index.add(build_wheel(tmp_path / "new", "gamma", "1.5"))
    app = InspectorApp()
    app.select.value = env.record.env_id
    assert "gamma 1.1" in app.tree.value and 'name = "gamma"' in app.lock.value
    app.outdated_button.click()
    assert "<code>gamma 1.1 -&gt; 1.5</code>" in app.outdated.value
    app.buttons["upgrade"].click()
    assert Store().alias("g") == env.record.env_id  # asked, not done
    assert "Resolve g&#x27;s requirements again" in app.question.value
    app.confirm_button.click()
    new = Store().alias("g")
    assert new != env.record.env_id and Store().exists(new)
    assert app.status.value.startswith(f"Built {new} with the newest versions")
    assert {r.env_id for r in app.data.rows} == {env.record.env_id, new}
    app.cancel()  # nothing pending: harmless
    app.buttons["remove"].click()
    app.cancel_button.click()
    assert app.pending is None and Store().exists(env.record.env_id)


def test_conda_packages_of_a_prefix(conda_channel: Any, tmp_path: Path) -> None:
    """A conda (or mixed) env: packages from conda-meta, as rattler installed them."""
    from concurrent.futures import ThreadPoolExecutor

    from nbenv.conda import install_prefix
    from nbenv.resolve.conda import parse_conda_args, solve

    prefix = tmp_path / "env"

    def build() -> Any:
        solution = solve(parse_conda_args(["-c", conda_channel.url, "foo-app", "purepy"]))
        install_prefix(solution, prefix)
        return solution

    # In a thread of its own: rattler's coroutines run under asyncio.run, which would leave
    # this (main) thread without its event loop, and the server tests after need it.
    with ThreadPoolExecutor(1) as pool:
        solution = pool.submit(build).result()
    found = env_packages(prefix, ("foo-app", "purepy"), solution.python_version or "3.11.0")
    by_name = {p.name: p for p in found.packages}
    assert set(by_name) == {"foo-app", "libfoo", "purepy", "python"}
    assert {p.kind for p in found.packages} == {"conda"}  # purepy's dist-info is conda's
    assert by_name["libfoo"].version == "2.0"
    assert by_name["libfoo"].required_by == ("foo-app",)
    assert by_name["libfoo"].source.startswith(conda_channel.url.rstrip("/"))
    assert by_name["libfoo"].size > 0
    assert found.why("libfoo") == [("foo-app", "libfoo")]


def test_terminal_bar_shows_the_same_phases_with_rate_and_cache_hits() -> None:
    import io
    import time as clock

    from nbenv.report import TerminalReporter

    stream = io.StringIO()
    bar = TerminalReporter(stream, width=10)
    bar.stage("resolving")
    bar.cached("downloading", 3, 5)
    bar.stage("downloading")
    bar.progress("downloading", 512 * 1024, 2 * 1024 * 1024)
    clock.sleep(0.3)  # the rate needs two samples some time apart
    bar.progress("downloading", 2 * 1024 * 1024, 2 * 1024 * 1024)
    bar.stage("installing wheels")
    bar.progress("installing wheels", 5, 5)
    bar.close()
    frames = [f.rstrip() for f in stream.getvalue().split("\r") if f.strip()]
    assert frames[0] == "resolving ..."
    assert frames[1] == "downloading ..."
    assert frames[2].startswith("downloading [##--------] 512.0 KB/2.0 MB (3 cached) ")
    last = frames[3]
    assert last.startswith("downloading [##########] 2.0 MB/2.0 MB ")
    assert "MB/s (3 cached)" in last and last.endswith("s")
    assert frames[-1].startswith("installing wheels [##########] 5/5 ")
