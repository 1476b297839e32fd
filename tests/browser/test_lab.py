"""nbenv in a real JupyterLab, driven through Debian's chromium with Playwright.

One Lab per test, on 127.0.0.1 with a token, every directory temporary (the autouse
isolation fixture: HOME, NBENV_HOME, JUPYTER_DATA_DIR/CONFIG_DIR/RUNTIME_DIR). A screenshot
of each step lands in tests/artifacts/lab/ for a person to look at.

Chromium comes from the system (`make chromium` installs Debian's package); it is never
downloaded by Playwright. Without it these tests fail, unless NBENV_SKIP_BROWSER=1 says to
skip them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from support import IsolatedEnv
from support.index_server import IndexServer

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "lab"
CHANGE_MIME = b"application/vnd.nbenv.change+json"


def _chromium() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    if os.environ.get("NBENV_SKIP_BROWSER"):
        pytest.skip("NBENV_SKIP_BROWSER is set: browser tests skipped")
    pytest.fail(
        "chromium is not installed: run `make chromium` (Debian's package), or set "
        "NBENV_SKIP_BROWSER=1 to skip the browser tests",
        pytrace=False,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    log: Path
    process: subprocess.Popen[bytes]

    def api(self, path: str) -> Any:
        response = httpx.get(f"{self.url}{path}", headers={"Authorization": f"token {self.token}"})
        response.raise_for_status()
        return response.json()


@pytest.fixture
def lab(isolated_env: IsolatedEnv, fast_cache: Path) -> Iterator[Lab]:
    _chromium()
    root = isolated_env.root / "notebooks"
    root.mkdir()
    port, token = _free_port(), secrets.token_hex(16)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = ARTIFACTS / "jupyter-lab.log"
    # No "fetch Jupyter news?" toast over the screenshots: answered "no" in the temp settings.
    settings = isolated_env.root / "lab-settings"
    notification = (
        settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    )
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false"}))
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings)}
    argv = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
        "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--expose-app-in-browser",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=root, env=env)
    url = f"http://127.0.0.1:{port}"
    server = Lab(url, token, root, log, process)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"jupyter lab exited: {log.read_text()[-3000:]}")
            try:
                server.api("/api/status")
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not start: {log.read_text()[-3000:]}")
                time.sleep(0.3)
        yield server
    finally:
        process.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Recorder:
    """What the page received and asked for, with times: the change messages on the kernel
    websockets and the kernelspec requests."""

    changes: list[float] = field(default_factory=list)
    spec_requests: list[float] = field(default_factory=list)

    def frame(self, payload: str | bytes) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        if CHANGE_MIME in data:
            self.changes.append(time.monotonic())


@pytest.fixture
def page(lab: Lab) -> Iterator[tuple[Any, Recorder]]:
    from playwright.sync_api import sync_playwright

    recorder = Recorder()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=_chromium(), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.on("websocket", lambda ws: ws.on("framereceived", recorder.frame))
            page.on(
                "request",
                lambda r: (
                    recorder.spec_requests.append(time.monotonic())
                    if "/api/kernelspecs" in r.url
                    else None
                ),
            )
            yield page, recorder
        finally:
            browser.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def write_notebook(path: Path, cells: list[str]) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(notebook, path)


def cell_output(page: Any, index: int) -> Any:
    return page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-OutputArea")


def run_cell(page: Any, index: int) -> None:
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")


def wait_idle(page: Any, timeout: float = 120_000) -> None:
    page.wait_for_function(
        "() => { const w = window.jupyterapp.shell.currentWidget;"
        " const k = w && w.sessionContext && w.sessionContext.session"
        " && w.sessionContext.session.kernel;"
        " return !!k && k.status === 'idle'; }",
        timeout=timeout,
    )


def nbenv_cli(*args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "nbenv", *args], capture_output=True,
                          text=True, check=False, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_lab_round_trip(
    lab: Lab, page: tuple[Any, Recorder], env_index: IndexServer, isolated_env: IsolatedEnv
) -> None:
    browser_page, recorder = page
    from nbenv.kernels import nbenv_kernelspecs
    from nbenv.store import Store, in_use

    # An env made outside Lab, to remove from the sidebar later.
    scratch = nbenv_cli("create", "--json", "--index-url", env_index.url, "--name", "scratch",
                        "beta")  # fmt: skip
    write_notebook(
        lab.root / "demo.ipynb",
        [
            "%load_ext nbenv",
            f"%%pypi --index-url {env_index.url} alpha\n"
            "import alpha, sys\nprint('alpha', alpha.__version__, 'in', sys.prefix)",
            f"%%pypi --index-url {env_index.url} alpha\n"
            "import ipywidgets\nipywidgets.IntSlider(value=3, description='in-child')",
            "%nbenv inspect",
            "import alpha, sys\nprint('kernel python:', sys.executable)",
            "import ipywidgets\nipywidgets.IntSlider(value=7, description='in-env')",
        ],
    )
    p = browser_page
    p.goto(f"{lab.url}/lab/tree/demo.ipynb?token={lab.token}")
    p.wait_for_selector(".jp-Notebook .jp-Cell")
    wait_idle(p)
    status = p.locator(".nbenv-Status")
    status.wait_for()
    assert status.inner_text() == "nbenv: none"
    shot(p, "01-notebook-opened")

    # 1. a %%pypi cell builds its env from the local index and runs in it
    run_cell(p, 0)
    run_cell(p, 1)
    out = cell_output(p, 1)
    out.get_by_text("alpha 2.0 in").wait_for(timeout=240_000)
    output_seen = time.monotonic()
    [env_id] = [i for i in Store().env_ids() if i != scratch["env_id"]]
    assert str(Store().path(env_id)) in out.inner_text()
    [spec] = [s for s in nbenv_kernelspecs() if s.env_id == env_id]
    shot(p, "02-pypi-cell-output")

    # 2. the kernel told the page, and the page asked for the kernelspecs at once (the
    # 61 s poll would come at any time, not within seconds of the message)
    p.wait_for_function(
        f"() => !!window.jupyterapp.serviceManager.kernelspecs.specs"
        f".kernelspecs[{json.dumps(spec.name)}]",
        timeout=10_000,
    )
    assert recorder.changes, "no nbenv change message reached the page"
    first = recorder.changes[0]
    assert any(first <= t <= first + 5 for t in recorder.spec_requests), (
        recorder.changes,
        recorder.spec_requests,
    )
    assert time.monotonic() - output_seen < 15

    # 3. the sidebar lists it, with its kind, python, size and packages; expanded, its
    # packages
    p.locator(".jp-SideBar [data-id='nbenv-environments']").click()
    sidebar = p.locator("#nbenv-environments")
    row = sidebar.locator(f".nbenv-Env[data-env-id='{env_id}']")
    row.wait_for()
    facts = row.locator(".nbenv-Env-facts").inner_text()
    assert "Python 3." in facts and "packages" in facts
    assert row.locator(".nbenv-Env-kind").inner_text() == "pypi"
    assert sidebar.locator(f".nbenv-Env[data-env-id='{scratch['env_id']}']").count() == 1
    # the notebook's own envs (its lock) on top: the %%pypi declaration and its env
    mine = sidebar.locator(f".nbenv-Notebook-env[data-env-id='{env_id}']")
    mine.wait_for()
    assert "alpha" in mine.locator(".nbenv-Notebook-declared").inner_text()
    assert mine.locator(".nbenv-Notebook-target").inner_text() == env_id[:12]
    assert "demo.ipynb" in sidebar.locator(".nbenv-Notebook-title").inner_text()
    mine.click()  # expands the env below
    row.locator(".nbenv-Package-name", has_text="alpha").wait_for()
    row.locator(".nbenv-Package-name", has_text="ipywidgets").wait_for()
    shot(p, "03-sidebar-expanded")

    # a widget made in a %%pypi cell's child kernel renders too (its comms are relayed)
    run_cell(p, 2)
    child_slider = cell_output(p, 2).locator(".widget-slider")
    child_slider.wait_for(timeout=60_000)
    assert "in-child" in child_slider.inner_text()
    assert "3" in child_slider.locator(".widget-readout").inner_text()

    # 4. the inspector renders in the notebook
    run_cell(p, 3)
    inspector = cell_output(p, 3)
    inspector.get_by_text(env_id[:12]).first.wait_for(timeout=60_000)
    assert "scratch" in inspector.inner_text()
    shot(p, "04-inspector")

    # 5. the kernel picker offers the new env without a reload; pick it
    p.locator(".jp-Toolbar-kernelName").first.click()
    dialog = p.locator(".jp-Dialog")
    dialog.wait_for()
    shot(p, "05-kernel-picker")
    select = dialog.locator("select")
    if select.count():
        select.select_option(label=spec.display_name)
    else:
        dialog.get_by_text(spec.display_name, exact=True).click()
    shot(p, "05b-kernel-picked")
    dialog.locator(".jp-mod-accept").click()
    p.wait_for_function(
        "() => { const w = window.jupyterapp.shell.currentWidget;"
        " const k = w.sessionContext.session && w.sessionContext.session.kernel;"
        f" return !!k && k.name === {json.dumps(spec.name)}; }}"
    )
    wait_idle(p)

    # 6. the status item names the env; a cell runs in the env's python
    label = spec.env_name or env_id[:12]
    p.wait_for_function(
        "(want) => document.querySelector('.nbenv-Status').textContent === want",
        arg=f"nbenv: {label}",
    )
    run_cell(p, 4)
    cell_output(p, 4).get_by_text("kernel python:").wait_for(timeout=120_000)
    assert str(Store().path(env_id) / "bin" / "python") in cell_output(p, 4).inner_text()
    # ipywidgets 8 in the env's kernel render through jupyterlab_widgets
    run_cell(p, 5)
    slider = cell_output(p, 5).locator(".widget-slider")
    slider.wait_for(timeout=60_000)
    assert "in-env" in slider.inner_text()
    shot(p, "06-status-and-env-kernel")

    # 7. "New notebook" on the env: a new notebook whose kernel is the env's
    row.locator(".nbenv-Env-new").click()
    p.wait_for_function(
        "(want) => { const w = window.jupyterapp.shell.currentWidget;"
        " return !!w && w.context && w.context.path !== 'demo.ipynb'"
        " && !!w.sessionContext.session && !!w.sessionContext.session.kernel"
        " && w.sessionContext.session.kernel.name === want; }",
        arg=spec.name,
    )
    wait_idle(p)
    p.wait_for_function(
        "(want) => document.querySelector('.nbenv-Status').textContent === want",
        arg=f"nbenv: {label}",
    )
    shot(p, "07-new-notebook-on-env")

    # 8. export from the sidebar: the lock's packages as requirements
    row.locator(".nbenv-Env-export").click()
    export = p.locator(".jp-Dialog .nbenv-Export-text")
    export.get_by_text("alpha==2.0", exact=False).wait_for()
    assert "--hash=sha256:" in export.inner_text()
    shot(p, "08-export")
    # another format, then "Download" saves exactly the text shown
    p.locator(".jp-Dialog select.nbenv-Export-format").select_option("pylock")
    export.get_by_text("lock-version").wait_for()
    shown = export.inner_text()
    with p.expect_download() as download:
        p.locator(".jp-Dialog .jp-mod-accept").click()
    assert download.value.suggested_filename == f"{env_id[:12]}-pylock.toml"
    saved = Path(download.value.path()).read_text()
    assert saved.strip() == shown.strip()
    assert saved == (Store().path(env_id) / "pylock.toml").read_text()

    # 9. "Use here": the current notebook (the new one) switches to the scratch env
    scratch_row = sidebar.locator(f".nbenv-Env[data-env-id='{scratch['env_id']}']")
    scratch_row.locator(".nbenv-Env-summary").click()
    scratch_row.locator(".nbenv-Env-use").click()
    p.wait_for_function(
        "(want) => { const w = window.jupyterapp.shell.currentWidget;"
        " const k = w.sessionContext.session && w.sessionContext.session.kernel;"
        " return !!k && k.name === want; }",
        arg=scratch["kernel"],
    )
    wait_idle(p)
    p.wait_for_function(
        "() => document.querySelector('.nbenv-Status').textContent === 'nbenv: scratch'"
    )
    shot(p, "09-use-here")

    # 10. removing an env a kernel runs on is refused, with the reason
    scratch_row.locator(".nbenv-Env-remove").click()
    p.locator(".jp-Dialog").get_by_text("Remove scratch").wait_for()
    shot(p, "10-remove-confirm")
    p.locator(".jp-Dialog .jp-mod-accept").click()
    p.locator(".jp-Dialog").get_by_text("in use").wait_for()
    shot(p, "10b-remove-refused")
    p.keyboard.press("Escape")
    p.locator(".jp-Dialog").wait_for(state="detached")
    assert Store().exists(scratch["env_id"])

    # 11. with its kernel shut down, it goes: from the sidebar, the store and the kernelspecs
    p.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
    deadline = time.monotonic() + 30
    while in_use(Store().path(scratch["env_id"])) and time.monotonic() < deadline:
        time.sleep(0.2)
    scratch_row.locator(".nbenv-Env-remove").click()
    p.locator(".jp-Dialog .jp-mod-accept").click()
    scratch_row.wait_for(state="detached")
    assert not Store().exists(scratch["env_id"])
    assert Store().exists(env_id)
    assert not any(s.env_id == scratch["env_id"] for s in nbenv_kernelspecs())
    shot(p, "11-removed")
