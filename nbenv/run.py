"""`nbenv run NOTEBOOK.ipynb`: build the notebook's envs from its lock, then execute it
headless with nbclient (like papermill), its kernel told which lock to use (NBENV_LOCK)."""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from nbenv.errors import NotebookExecutionError, UsageError
from nbenv.ipynb import read_notebook, write_notebook
from nbenv.notebook import NotebookEnv, declarations, ensure_env
from nbenv.notebook_lock import LockLocation, notebook_location, open_lock
from nbenv.report import Reporter

__all__ = [
    "ExecutedNotebook",
    "PreparedNotebook",
    "default_output",
    "execute_notebook",
    "kernel_environment",
    "prepare_notebook",
    "transcript",
]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_TAGS = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class PreparedNotebook:
    notebook: Path
    location: LockLocation
    envs: tuple[NotebookEnv, ...]
    lock_written: bool  # entries were added (missing from the lock) and saved


def prepare_notebook(
    notebook: Path, *, reporter: Reporter | None = None, kernel_prefix: str | None = None
) -> PreparedNotebook:
    """Build (or find) every declared env from the notebook's lock; an env the lock lacks
    is resolved and added, and the lock file saved (NotebookEnv.status == "added")."""
    location = notebook_location(notebook)
    found = declarations(notebook)
    lock = open_lock(location)
    envs = tuple(ensure_env(d, lock, reporter=reporter, kernel_prefix=kernel_prefix) for d in found)
    written = lock.save()
    return PreparedNotebook(notebook, location, envs, written)


def default_output(notebook: Path) -> Path:
    """`analysis.ipynb` -> `analysis.out.ipynb`: the source notebook stays as it was."""
    return notebook.with_name(notebook.stem + ".out.ipynb")


def kernel_environment(lock_path: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The kernel's environment: the magics in it read and write `lock_path`."""
    env = dict(os.environ if base is None else base)
    env["NBENV_LOCK"] = str(lock_path.absolute())
    # Inherited from a Jupyter kernel that ran `!nbenv run`: it names the wrong notebook.
    env.pop("JPY_SESSION_NAME", None)
    return env


@dataclass(frozen=True)
class ExecutedNotebook:
    output: Path
    kernel: str
    cells: int  # code cells executed
    seconds: float


def execute_notebook(
    notebook: Path,
    *,
    lock_path: Path,
    output: Path | None = None,
    kernel: str | None = None,
    timeout: float | None = None,
    startup_timeout: float = 60,
) -> ExecutedNotebook:
    """Execute every cell in a fresh kernel started in the notebook's directory and save
    the result to `output` (default_output). A failing cell raises NotebookExecutionError
    after the notebook, executed up to that cell, was saved."""
    from jupyter_client.kernelspec import NoSuchKernel
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    start = time.perf_counter()
    output = output or default_output(notebook)
    node = read_notebook(notebook)
    spec = node.metadata.get("kernelspec", {})
    name = kernel or (spec.get("name") if isinstance(spec, Mapping) else None) or "python3"
    state: dict[str, Any] = {}

    def on_start(cell: Any, cell_index: int) -> None:
        state["index"] = cell_index

    def on_error(cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
        state["reply"] = execute_reply.get("content", {})

    client = NotebookClient(
        node,
        timeout=None if timeout is None else int(timeout),
        startup_timeout=int(startup_timeout),
        kernel_name=name,
        resources={"metadata": {"path": str(notebook.parent.absolute())}},
        on_cell_start=on_start,
        on_cell_error=on_error,
    )
    failure: _Failure | None = None
    # The kernel's own stdout/stderr (ipykernel's warnings, a crash's last words) go to a
    # log, not into this command's output; its tail explains a dead kernel.
    with tempfile.TemporaryFile() as log:
        try:
            client.execute(env=kernel_environment(lock_path), stdout=log.fileno(),
                           stderr=log.fileno())  # fmt: skip
        except NoSuchKernel:
            raise UsageError(
                f"No kernel named {name!r} (the kernel {notebook.name} asks for): pass "
                "--kernel NAME, see `jupyter kernelspec list`."
            ) from None
        except CellExecutionError as exc:
            lines = state.get("reply", {}).get("traceback", [])
            failure = _Failure(exc.ename, exc.evalue, _ANSI.sub("", "\n".join(lines)))
        except CellTimeoutError:
            failure = _Failure("Timeout", f"the cell ran longer than {timeout} s")
        except DeadKernelError as exc:
            failure = _Failure("DeadKernelError", f"the kernel died ({exc})", _tail(log))
        except (RuntimeError, TimeoutError) as exc:  # the kernel never became ready
            failure = _Failure(type(exc).__name__, f"kernel {name!r}: {exc}", _tail(log))
    write_notebook(output, node)  # also after a failure: the outputs so far help
    if failure is not None:
        index = state.get("index")
        raise NotebookExecutionError(
            notebook.name,
            None if index is None else int(index) + 1,
            failure.ename,
            failure.evalue,
            failure.traceback,
            output=str(output),
        )
    cells = sum(1 for cell in node.cells if cell.get("cell_type") == "code")
    return ExecutedNotebook(output, name, cells, time.perf_counter() - start)


def _tail(log: IO[bytes], lines: int = 20) -> str:
    log.seek(0)
    text = log.read().decode("utf-8", "replace")
    return _ANSI.sub("", "\n".join(text.splitlines()[-lines:]))


@dataclass(frozen=True)
class _Failure:
    ename: str
    evalue: str
    traceback: str = ""


def transcript(path: Path) -> str:
    """An executed notebook as text: each code cell's source, then what it showed."""
    import nbformat

    notebook = nbformat.read(str(path), as_version=4)  # type: ignore[no-untyped-call]
    lines: list[str] = []
    count = 0
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        count += 1
        lines.append(f"In [{count}]:")
        lines += [f"    {line}" for line in cell.source.splitlines()]
        for output in cell.get("outputs", []):
            kind = output.get("output_type")
            if kind == "stream":
                text = output.get("text", "")
            elif kind in ("display_data", "execute_result"):
                data = output.get("data", {})
                text = data.get("text/plain", "")
                if "text/html" in data:  # the rich form is what a person saw
                    text = "[html] " + _TAGS.sub("", data["text/html"]).strip()
            elif kind == "error":
                text = f"{output.get('ename')}: {output.get('evalue')}"
            else:
                continue
            lines += [f"  | {line}" for line in _ANSI.sub("", text).rstrip("\n").splitlines()]
        lines.append("")
    return "\n".join(lines)
