"""Secrets: an index URL and a conda channel URL carrying tokens. After every operation,
every file under the test's home, store, caches, kernel dirs and notebook folder, and every
message nbenv printed, is searched for the token (and its base64 form): it is nowhere."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from checks import find_secret, nbenv
from ledger import FaultLog
from support import IsolatedEnv
from support.conda_channel import CondaChannel, serve_channel
from support.index_server import IndexServer
from support.notebooks import write_notebook

TOKEN = "pypi-AgEIcHlwaS5vcmcTOKENs3cr3t9f8e7d"
CONDA_TOKEN = "tk-c0nda-9a8b7c6d5e4f"


@pytest.fixture
def token_index(
    env_index: IndexServer, make_index: Callable[..., IndexServer]
) -> Iterator[IndexServer]:
    """The env index (alpha.. and the kernel packages) behind a token."""
    yield make_index(env_index.index.copy(), auth=("__token__", TOKEN))


class Scan:
    """Runs nbenv commands and checks every file and message after each one."""

    def __init__(self, faults: FaultLog, roots: list[Path], secret: str) -> None:
        self.faults = faults
        self.roots = roots
        self.secret = secret
        self.messages: list[str] = []

    def run(self, label: str, *argv: str, ok: bool = True) -> str:
        self.faults.inject("secrets", label)
        out = nbenv(*argv)
        if ok:
            assert out.returncode == 0, f"{label}: {out.stderr}"
        else:
            assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
        self.messages += [out.stdout, out.stderr]
        self.check(label)
        return out.stdout + out.stderr

    def check(self, label: str) -> None:
        hits = find_secret(self.secret, self.roots, self.messages)
        assert self.faults.leaked(hits) == [], f"after {label}: {hits}"


def _roots(isolated_env: IsolatedEnv) -> list[Path]:
    # everything the test's user owns, minus the one file that holds the secret on purpose
    return [p for p in isolated_env.root.iterdir() if p.name != "home"] + [
        p for p in isolated_env.home.iterdir() if p.name != ".netrc"
    ]


def test_an_index_token_is_never_written_or_shown(
    token_index: IndexServer, fast_cache: Path, faults: FaultLog, isolated_env: IsolatedEnv
) -> None:
    url = token_index.url_with_auth()
    assert TOKEN in url
    scan = Scan(faults, _roots(isolated_env), TOKEN)
    root = isolated_env.root
    scan.run("lock with a token index URL", "lock", "--index-url", url, "alpha", "-o",
             str(root / "pylock.toml"))  # fmt: skip
    scan.run("create with a token index URL", "create", "--no-compile", "--name", "sec",
             "--index-url", url, "alpha", "gamma")  # fmt: skip
    scan.run("create from the lock", "create", "--no-compile", "--no-kernel", "--lock",
             str(root / "pylock.toml"), "--index-url", url)  # fmt: skip
    for argv in (("list",), ("list", "--json"), ("list", "--html"), ("show", "sec"),
                 ("show", "sec", "--json")):  # fmt: skip
        scan.run(f"nbenv {' '.join(argv)}", *argv)
    for fmt in ("requirements", "pylock", "environment-yml", "metaflow"):
        scan.run(f"export {fmt}", "export", "sec", "--format", fmt)
    notebook = write_notebook(
        root / "work" / "secret.ipynb",
        "%load_ext nbenv",
        f"%%pypi --index-url {url} alpha\nimport alpha\nprint(alpha.__version__)",
    )
    scan.run("lock a notebook (and embed)", "lock", str(notebook), "--embed")
    scan.run("run the notebook", "run", str(notebook))
    scan.run("export the notebook's env", "export", str(notebook), "--format", "requirements")
    # the index as pip settings give it, and as ~/.netrc gives the credentials
    os.environ["PIP_INDEX_URL"] = url
    try:
        scan.run("create with PIP_INDEX_URL", "create", "--no-compile", "--no-kernel", "gamma==1.0")
    finally:
        del os.environ["PIP_INDEX_URL"]
    (isolated_env.home / ".netrc").write_text(
        f"machine 127.0.0.1 login __token__ password {TOKEN}\n"
    )
    scan.run("create with ~/.netrc", "create", "--no-compile", "--no-kernel",
             "--index-url", token_index.url, "gamma==1.1")  # fmt: skip
    # failures: a wrong token, a server error, a project that is missing, a bad download
    wrong = url.replace(TOKEN, TOKEN[:-4] + "XXXX")
    scan.secret = TOKEN[:-4]  # the wrong token shares the prefix: that must not show either
    (isolated_env.home / ".netrc").unlink()
    scan.run("wrong token", "lock", "--refresh", "--index-url", wrong, "alpha", ok=False)
    scan.secret = TOKEN
    token_index.fail("/simple/", 500, 500, 500, 500)
    scan.run("server error", "lock", "--refresh", "--index-url", url, "alpha", ok=False)
    scan.run("unknown project", "lock", "--index-url", url, "nosuchthing", ok=False)
    from support.index_server import Fault

    token_index.inject("/files/", Fault("corrupt"), times=10)
    scan.run("hash mismatch", "create", "--no-compile", "--no-kernel", "--index-url", url,
             "beta", ok=False)  # fmt: skip
    token_index.faults.clear()
    scan.run("offline and missing", "lock", "--offline", "--index-url", url, "top", ok=False)
    scan.run("gc", "gc", "--older-than", "0")
    scan.run("remove", "remove", "sec")


def test_a_channel_token_is_never_written_or_shown(
    conda_channel: CondaChannel, faults: FaultLog, tmp_path: Path
) -> None:
    from nbenv.conda import install_prefix, write_rattler_lock
    from nbenv.errors import NbenvError
    from nbenv.resolve.conda import parse_conda_args, solve

    with serve_channel(conda_channel.path, token=CONDA_TOKEN) as server:
        channel = f"{server.url}t/{CONDA_TOKEN}/"
        cache = tmp_path / "cache"
        messages: list[str] = []

        def check(label: str) -> None:
            hits = find_secret(CONDA_TOKEN, [tmp_path], messages)
            assert faults.leaked(hits) == [], f"after {label}: {hits}"

        faults.inject("secrets", "conda solve through a token channel")
        solution = solve(parse_conda_args(["-c", channel, "hello-tool", "purepy"]))
        messages.append(repr(solution.to_dict()))
        check("solve")
        faults.inject("secrets", "conda install through a token channel")
        install_prefix(solution, tmp_path / "env", cache_dir=cache, channels=[channel])
        check("install")
        faults.inject("secrets", "conda lock file")
        write_rattler_lock([solution], tmp_path / "pixi.lock")
        check("lock")
        faults.inject("secrets", "conda errors: wrong token, missing package")
        for argv in (["-c", f"{server.url}t/{CONDA_TOKEN}x/", "hello-tool"],
                     ["-c", channel, "no-such-package"]):  # fmt: skip
            with pytest.raises(NbenvError) as info:
                solve(parse_conda_args(argv))
            messages.append(str(info.value))
        check("errors")


def test_the_conda_caches_hold_no_channel_token(
    conda_channel: CondaChannel, faults: FaultLog, isolated_env: IsolatedEnv
) -> None:
    """rattler's repodata and package caches, and the env's conda-meta, hold the channel URL
    without its token: rattler is given clean URLs and the token through a private auth
    file, which is gone once the call returns."""
    import tempfile

    from nbenv.conda import install_prefix
    from nbenv.resolve.conda import parse_conda_args, solve

    faults.inject("secrets", "conda caches after a token channel solve and install")
    before = set(Path(tempfile.gettempdir()).glob("nbenv-auth-*"))
    with serve_channel(conda_channel.path, token=CONDA_TOKEN) as server:
        channel = f"{server.url}t/{CONDA_TOKEN}/"
        solution = solve(parse_conda_args(["-c", channel, "hello-tool", "purepy"]))
        assert solution.python_dists == {"purepy": "1.0"}  # paths.json read through the token
        install_prefix(solution, isolated_env.root / "env", channels=[channel])
        assert any(path.startswith(f"/t/{CONDA_TOKEN}/") for path in server.log)
    assert (isolated_env.root / "env" / "conda-meta").is_dir()
    assert set(Path(tempfile.gettempdir()).glob("nbenv-auth-*")) == before
    hits = find_secret(CONDA_TOKEN, [isolated_env.nbenv_home, isolated_env.root / "env"], [])
    assert faults.leaked(hits) == []
