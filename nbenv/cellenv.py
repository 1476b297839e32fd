"""A cell's declaration -> a ready env, for the magics.

In an ordinary kernel nbenv is installed and does the work here. Inside an nbenv env's own
kernel only nbenv's thin layer is importable (the env holds the user's packages, not
nbenv's), so the same work is asked of the host nbenv that built the env, as a subprocess:
`NBENV_HOST_PYTHON -m nbenv _cell-env`, JSON in and out.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nbenv.cellspec import CellDeclaration, parse_cell
from nbenv.errors import NbenvError
from nbenv.report import Reporter

__all__ = [
    "HOST_PYTHON",
    "ReadyEnv",
    "host_main",
    "in_env_kernel",
    "ready_env",
    "ready_env_from_host",
]

HOST_PYTHON = "NBENV_HOST_PYTHON"  # set in the kernelspecs of nbenv envs


@dataclass(frozen=True)
class ReadyEnv:
    env_id: str
    python: Path
    path: Path
    python_version: str
    packages: dict[str, str]  # name -> version
    created: bool
    progress: str | None  # what was done, for the cell's one-line summary (None: nothing)
    summary: str  # what an empty-bodied cell prints

    def to_json(self) -> str:
        data = asdict(self)
        data["python"], data["path"] = str(self.python), str(self.path)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> ReadyEnv:
        data = json.loads(text)
        data["python"], data["path"] = Path(data["python"]), Path(data["path"])
        return cls(**data)


def in_env_kernel() -> bool:
    return bool(os.environ.get(HOST_PYTHON))


def ready_env(
    declaration: CellDeclaration, user_ns: Mapping[str, Any] | None, reporter: Reporter
) -> ReadyEnv:
    """Build or find the declaration's env (locked beside the notebook) in this process."""
    from nbenv.kernels import display_name
    from nbenv.notebook import ensure_env, locked_packages
    from nbenv.notebook_lock import locate_lock, open_lock
    from nbenv.store import Store

    location = locate_lock(user_ns)
    notebook_lock = open_lock(location)
    env = ensure_env(declaration, notebook_lock, upgrade=declaration.upgrade, reporter=reporter)
    if env.status != "locked":
        notebook_lock.save()
    result = env.result
    packages = locked_packages(env.lock)
    progress = None
    if result.created or env.status != "locked":
        where = f"; {env.status} in {location.path.name}" if env.status != "locked" else ""
        progress = (f"env {result.record.env_id[:12]} ready: Python {result.record.python}, "
                    f"{len(packages)} packages{where}")  # fmt: skip
    names = [n for n, i in Store().aliases().items() if i == result.record.env_id]
    label = names[0] if names else result.record.env_id
    short = ".".join(result.record.python.split(".")[:2])
    kernel = result.kernel.display_name if result.kernel else display_name(short, None, label)
    summary = (
        f"nbenv: env {label} {'built' if result.created else 'ready'}: Python "
        f"{result.record.python}, {len(packages)} packages, kernel {kernel!r}.\n"
        f"Switch this notebook to it with Kernel > Change Kernel > {kernel}, or run cells in "
        "it with %%pypi."
    )
    return ReadyEnv(result.record.env_id, result.python, result.path, result.record.python,
                    packages, result.created, progress, summary)  # fmt: skip


def ready_env_from_host(magic: str, line: str, cell: str, user_ns: Mapping[str, Any]) -> ReadyEnv:
    """The same, asked of the host nbenv (we run inside an env's kernel)."""
    request = {"magic": magic, "line": line, "cell": cell,
               "session": user_ns.get("__session__")}  # fmt: skip
    argv = [os.environ[HOST_PYTHON], "-m", "nbenv", "_cell-env"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(argv, input=json.dumps(request), capture_output=True, text=True,
                          env=env, check=False)  # fmt: skip
    if done.returncode != 0:
        message = done.stderr.strip().removeprefix("error: ") or f"exit code {done.returncode}"
        raise NbenvError(message)
    return ReadyEnv.from_json(done.stdout.strip().splitlines()[-1])


def host_main(stdin_text: str) -> str:
    """`nbenv _cell-env`: the host side of `ready_env_from_host`."""
    from nbenv.report import NullReporter

    request = json.loads(stdin_text)
    declaration = parse_cell(request["magic"], request["line"], request["cell"])
    user_ns = {"__session__": request["session"]} if request.get("session") else None
    return ready_env(declaration, user_ns, NullReporter()).to_json()
