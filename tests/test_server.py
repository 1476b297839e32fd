"""The server extension's REST API, served by a real jupyter_server (pytest-jupyter)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nbformat
import pytest

# The fixtures of pytest-jupyter's server plugin, for this module only: its autouse fixtures
# start a ServerApp around every test, which the rest of the suite does not want.
from pytest_jupyter.jupyter_server import *  # noqa: F403
from support import IsolatedEnv
from support.index_server import IndexServer
from tornado.httpclient import HTTPClientError, HTTPResponse

from nbenv.envs import BuildOptions, CreateResult, create_env
from nbenv.spec import parse_request
from nbenv.store import Store

Fetch = Callable[..., Any]


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"nbenv.server": True}}}


@pytest.fixture
def fetch(
    jp_fetch: Any,
    http_server_client: Any,
    jp_auth_header: dict[str, str],
    jp_base_url: str,
    jp_asyncio_loop: asyncio.AbstractEventLoop,
) -> Fetch:
    """`fetch("envs", ref, method=..., body=..., params=...)` -> (status, JSON body);
    errors are returned, not raised; `full=True` returns the whole response. Parts go
    through jp_fetch; `raw=True` sends each part percent-encoded on its own (a "/" inside a
    part arrives as %2F), as a hostile client could."""

    def call(*parts: str, raw: bool = False, full: bool = False, **kwargs: Any) -> Any:
        if raw:
            headers = {**jp_auth_header, **kwargs.pop("headers", {})}
            url = jp_base_url + "nbenv/api/" + "/".join(quote(p, safe="") for p in parts)
            request = http_server_client.fetch(url, headers=headers, **kwargs)
        else:
            request = jp_fetch("nbenv", "api", *parts, **kwargs)
        try:
            response: HTTPResponse = jp_asyncio_loop.run_until_complete(request)
        except HTTPClientError as exc:
            assert exc.response is not None
            response = exc.response
        if full:
            return response
        body = response.body.decode()
        if "json" not in response.headers.get("Content-Type", ""):
            return response.code, body  # tornado's own pages (no route matched)
        return response.code, json.loads(body)

    return call


def build(index: IndexServer, *args: str, kernel: bool = True) -> CreateResult:
    request = parse_request(["--index-url", index.url, *args])
    return create_env(request, BuildOptions(compile_bytecode=False, register_kernel=kernel))


def kernel_dirs(data_dir: str) -> list[str]:
    kernels = Path(data_dir) / "kernels"
    # pytest-jupyter installs an "echo" kernel there too
    return sorted(p.name for p in kernels.glob("nbenv-*"))


def test_list_and_show(env_index: IndexServer, fast_cache: Path, fetch: Fetch) -> None:
    made = build(env_index, "--name", "demo", "alpha")
    code, listing = fetch("envs")
    assert code == 200
    [row] = listing["envs"]
    assert row["env_id"] == made.record.env_id
    assert row["name"] == "demo"
    assert row["kind"] == "pypi"
    assert row["python"] == made.record.python
    assert row["size"] > 0
    assert row["packages"] > 2  # a count in the listing: alpha, its deps, the kernel packages
    assert made.kernel is not None
    assert row["kernels"] == [made.kernel.name]

    for ref in ("demo", made.record.env_id, made.record.env_id[:8]):
        code, one = fetch("envs", ref)
        assert code == 200, one
        assert one["env_id"] == made.record.env_id
        names = {p["name"] for p in one["packages"]}
        assert {"alpha", "ipykernel", "ipywidgets"} <= names
        assert one["requirements"] == ["alpha"]


def test_every_endpoint_refuses_requests_without_the_token(
    index: IndexServer, fast_cache: Path, fetch: Fetch, jp_root_dir: Path
) -> None:
    made = build(index, "--name", "demo", "alpha", kernel=False)
    nbformat.write(nbformat.v4.new_notebook(), jp_root_dir / "a.ipynb")
    no_token = {"Authorization": ""}
    calls: list[tuple[tuple[str, ...], dict[str, Any]]] = [
        (("envs",), {}),
        (("envs", "demo"), {}),
        (("envs", "demo"), {"method": "DELETE"}),
        (("envs", "demo", "kernel"), {"method": "POST", "body": ""}),
        (("envs", "demo", "export"), {}),
        (("gc",), {"method": "POST", "body": json.dumps({"older_than_days": 0})}),
        (("notebook",), {"params": {"path": "a.ipynb"}}),
        (("notebook", "export"), {"params": {"path": "a.ipynb"}}),
    ]
    for parts, kwargs in calls:
        code, _ = fetch(*parts, headers=dict(no_token), **kwargs)
        assert code == 403, (parts, kwargs)
        code, _ = fetch(*parts, headers={"Authorization": "token not-the-token"}, **kwargs)
        assert code == 403, (parts, kwargs)
    assert Store().exists(made.record.env_id)  # nothing was removed or collected
    code, _ = fetch("envs", "demo")
    assert code == 200  # and the same request with the token works


def test_bad_env_ids_get_a_json_404(index: IndexServer, fast_cache: Path, fetch: Fetch) -> None:
    build(index, "--name", "demo", "alpha", kernel=False)
    for ref in ("nope", "0000000000000000", "demo2", "-rf", ".hidden"):
        for parts, kwargs in [
            (("envs", ref), {}),
            (("envs", ref), {"method": "DELETE"}),
            (("envs", ref, "export"), {}),
            (("envs", ref, "kernel"), {"method": "POST", "body": ""}),
        ]:
            code, body = fetch(*parts, **kwargs)
            assert code == 404, (parts, body)
            assert ref in body["message"]


def test_path_traversal_in_ids_is_refused(
    index: IndexServer, fast_cache: Path, fetch: Fetch, isolated_env: IsolatedEnv
) -> None:
    made = build(index, "alpha", kernel=False)
    env_id = made.record.env_id
    # A file outside the names directory that looks like a name: `names/../decoy.json`
    # would resolve to a real env if the reference were used as a path.
    (isolated_env.nbenv_home / "decoy.json").write_text(json.dumps({"env_id": env_id}))
    outside = isolated_env.root / "victim"
    outside.mkdir()
    for ref in ("../decoy", "names/../../decoy", "../../victim", "/etc/passwd", "..", "a/../b"):
        for parts, kwargs in [
            (("envs", ref), {}),
            (("envs", ref), {"method": "DELETE"}),
            (("envs", ref, "export"), {}),
        ]:
            # As one segment ("..%2Fdecoy"): the handler refuses it with a JSON 404.
            code, body = fetch(*parts, raw=True, **kwargs)
            assert code == 404, (ref, parts, body)
            assert "not a name or an id" in body["message"]
            # As several segments: no route matches.
            code, body = fetch(*parts, **kwargs)
            assert code == 404, (ref, parts, body)
    assert Store().exists(env_id)
    assert outside.is_dir()


def test_remove_takes_the_env_and_its_kernel(
    env_index: IndexServer, fast_cache: Path, fetch: Fetch, jp_data_dir: Path
) -> None:
    made = build(env_index, "--name", "demo", "alpha")
    assert made.kernel is not None
    assert made.kernel.name in kernel_dirs(str(jp_data_dir))
    code, body = fetch("envs", "demo", method="DELETE")
    assert code == 200, body
    assert body == {"removed": made.record.env_id, "kernels": [made.kernel.name]}
    assert not made.path.exists()
    assert made.kernel.name not in kernel_dirs(str(jp_data_dir))
    code, _ = fetch("envs", "demo")
    assert code == 404
    code, listing = fetch("envs")
    assert listing == {"envs": []}


def test_remove_refuses_an_env_in_use(index: IndexServer, fast_cache: Path, fetch: Fetch) -> None:
    made = build(index, "alpha", kernel=False)
    python = made.path / "bin" / "python"
    proc = subprocess.Popen([str(python), "-c", "import time; time.sleep(60)"])
    try:
        code, body = fetch("envs", made.record.env_id, method="DELETE")
        assert code == 409, body
        assert "in use" in body["message"]
        assert made.path.exists()
    finally:
        proc.kill()
        proc.wait()
    code, _ = fetch("envs", made.record.env_id, method="DELETE")
    assert code == 200
    assert not made.path.exists()


def test_kernel_registers_the_env_kernelspec_again(
    env_index: IndexServer, fast_cache: Path, fetch: Fetch, jp_data_dir: Path
) -> None:
    made = build(env_index, "--name", "demo", "alpha", kernel=False)
    assert kernel_dirs(str(jp_data_dir)) == []
    code, body = fetch("envs", "demo", "kernel", method="POST", body="")
    assert code == 200, body
    assert kernel_dirs(str(jp_data_dir)) == [body["kernel"]]
    spec = json.loads((jp_data_dir / "kernels" / body["kernel"] / "kernel.json").read_text())
    assert spec["metadata"]["nbenv"]["env_id"] == made.record.env_id
    assert body["display_name"] == spec["display_name"]


def test_export(index: IndexServer, fast_cache: Path, fetch: Fetch) -> None:
    made = build(index, "--name", "demo", "alpha", kernel=False)
    code, body = fetch("envs", "demo", "export", params={"format": "requirements"})
    assert code == 200, body
    assert body["env_id"] == made.record.env_id
    assert body["filename"] == "demo-requirements.txt"
    assert "alpha==" in body["text"]
    assert "--hash=sha256:" in body["text"]
    code, body = fetch("envs", "demo", "export", params={"format": "pylock"})
    assert code == 200
    assert (made.path / "pylock.toml").read_text() == body["text"]
    code, body = fetch("envs", "demo", "export", params={"format": "docx"})
    assert code == 400
    assert "requirements" in body["message"]


def test_gc(index: IndexServer, fast_cache: Path, fetch: Fetch) -> None:
    named = build(index, "--name", "keep", "alpha", kernel=False)
    unnamed = build(index, "beta", kernel=False)
    code, body = fetch("gc", method="POST", body=json.dumps({"older_than_days": 0,
                                                             "dry_run": True}))  # fmt: skip
    assert code == 200, body
    assert body["envs"] == [unnamed.record.env_id]
    assert body["dry_run"] is True
    assert unnamed.path.exists()
    code, body = fetch("gc", method="POST", body=json.dumps({"older_than_days": 0}))
    assert code == 200
    assert body["envs"] == [unnamed.record.env_id]
    assert not unnamed.path.exists()
    assert named.path.exists()
    for bad in ("[]", "nope", json.dumps({"older_than_days": "old"}),
                json.dumps({"dry_run": "yes"})):  # fmt: skip
        code, body = fetch("gc", method="POST", body=bad)
        assert code == 400, bad
        assert body["message"]


def write_notebook(path: Path, index: IndexServer) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("%load_ext nbenv"),
        nbformat.v4.new_code_cell(f"%%pypi --index-url {index.url} alpha\nimport alpha"),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)


def test_notebook_lock(
    env_index: IndexServer, fast_cache: Path, fetch: Fetch, jp_root_dir: Path
) -> None:
    from nbenv.notebook import lock_notebook

    notebook = jp_root_dir / "work" / "analysis.ipynb"
    write_notebook(notebook, env_index)
    code, body = fetch("notebook", params={"path": "work/analysis.ipynb"})
    assert code == 200, body
    assert body == {"path": "work/analysis.ipynb", "lock_file": "work/analysis.nbenv.lock",
                    "exists": False, "envs": []}  # fmt: skip
    result = lock_notebook(notebook)
    [locked] = result.envs
    code, body = fetch("notebook", params={"path": "work/analysis.ipynb"})
    assert code == 200
    assert body["exists"] is True
    [entry] = body["envs"]
    assert entry["env_id"] == locked.env_id
    assert entry["key"] == locked.key
    assert "alpha" in entry["declared"]
    assert entry["built"] is False
    assert "alpha" in {p["name"] for p in entry["packages"]}
    code, body = fetch("notebook", "export", params={"path": "work/analysis.ipynb",
                                                     "format": "requirements"})  # fmt: skip
    assert code == 200, body
    assert body["env_id"] == locked.env_id
    assert "alpha==" in body["text"]


def test_notebook_paths_stay_inside_the_root(
    fetch: Fetch, jp_root_dir: Path, isolated_env: IsolatedEnv, index: IndexServer
) -> None:
    outside = isolated_env.root / "outside"
    write_notebook(outside / "secret.ipynb", index)
    (jp_root_dir / "link").symlink_to(outside, target_is_directory=True)
    write_notebook(jp_root_dir / "inside.ipynb", index)
    relative = os.path.relpath(outside / "secret.ipynb", jp_root_dir)
    refused = [relative, str(outside / "secret.ipynb"), "link/secret.ipynb",
               "../outside/secret.ipynb", "a/../../secret.ipynb"]  # fmt: skip
    for path in refused:
        for parts in (("notebook",), ("notebook", "export")):
            code, body = fetch(*parts, params={"path": path})
            assert code == 400, (path, body)
            assert "outside the server's root" in body["message"]
    code, body = fetch("notebook", params={"path": "missing.ipynb"})
    assert code == 404
    assert "missing.ipynb" in body["message"]
    code, body = fetch("notebook", params={"path": "inside.txt"})
    assert code == 400
    code, body = fetch("notebook")
    assert code == 400
    code, body = fetch("notebook", params={"path": "inside.ipynb"})
    assert code == 200


def test_the_package_enables_its_server_and_lab_extensions() -> None:
    """What `pip install nbenv` sets up: both extensions listed as enabled."""
    jupyter = str(Path(sys.executable).with_name("jupyter"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_")}
    env["JUPYTER_CONFIG_DIR"] = os.environ["JUPYTER_CONFIG_DIR"]  # the temp one: empty
    env["JUPYTER_DATA_DIR"] = os.environ["JUPYTER_DATA_DIR"]
    server = subprocess.run([jupyter, "server", "extension", "list"], capture_output=True,
                            text=True, env=env, check=True, timeout=120)  # fmt: skip
    out = _plain(server.stdout + server.stderr)
    assert "nbenv.server enabled" in out, out
    assert re.search(r"nbenv\.server\s+OK", out), out
    lab = subprocess.run([jupyter, "labextension", "list"], capture_output=True, text=True,
                         env=env, check=True, timeout=120)  # fmt: skip
    out = _plain(lab.stdout + lab.stderr)
    line = next((ln for ln in out.splitlines() if ln.strip().startswith("nbenv ")), "")
    assert re.fullmatch(r"nbenv v\S+ enabled OK \(python, nbenv\)", line.strip()), out


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)  # the listings are coloured


def test_writes_with_the_login_cookie_need_the_xsrf_token(
    index: IndexServer,
    fast_cache: Path,
    fetch: Fetch,
    http_server_client: Any,
    jp_base_url: str,
    jp_asyncio_loop: asyncio.AbstractEventLoop,
) -> None:
    """A browser's session cookie alone cannot remove envs (cross-site request forgery):
    jupyter_server's XSRF check stays on for these handlers."""
    from http.cookies import SimpleCookie

    made = build(index, "--name", "demo", "alpha", kernel=False)
    response = fetch("envs", full=True)
    cookies: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("Set-Cookie"):
        cookies.load(header)
    login = {k: m.value for k, m in cookies.items() if k.startswith("username-")}
    assert login, response.headers
    # the login page sets the _xsrf cookie, as it does for a browser
    page = jp_asyncio_loop.run_until_complete(
        http_server_client.fetch(jp_base_url + "login", raise_error=False)
    )
    for header in page.headers.get_list("Set-Cookie"):
        cookies.load(header)
    xsrf = cookies["_xsrf"].value if "_xsrf" in cookies else None
    jar = "; ".join(f"{k}={v}" for k, v in login.items())
    cookie_only = {"Authorization": "", "Cookie": jar}
    code, _ = fetch("envs", "demo", headers=cookie_only)
    assert code == 200  # reading with the session cookie is fine
    code, body = fetch("envs", "demo", method="DELETE", headers=cookie_only)
    assert code == 403, body
    code, body = fetch("gc", method="POST", body=json.dumps({"older_than_days": 0}),
                       headers=cookie_only)  # fmt: skip
    assert code == 403, body
    assert Store().exists(made.record.env_id)
    assert xsrf is not None, page.headers
    with_xsrf = {"Authorization": "", "Cookie": f"{jar}; _xsrf={xsrf}", "X-XSRFToken": xsrf}
    code, body = fetch("envs", "demo", method="DELETE", headers=with_xsrf)
    assert code == 200, body
    assert not Store().exists(made.record.env_id)
