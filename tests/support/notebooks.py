"""Write and read real .ipynb files for tests (nbformat v4).

    path = write_notebook(tmp_path / "analysis.ipynb", "%%pypi alpha\\nimport alpha", "1 + 1")
    run = nbenv_cli("run", str(path))
    assert stream_text(read_notebook(tmp_path / "analysis.out.ipynb"))[0] == "..."

A cell given as a string is a code cell; pass `markdown("...")` for a markdown cell.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode

__all__ = [
    "markdown",
    "nbenv_cli",
    "outputs",
    "read_notebook",
    "stream_text",
    "write_notebook",
]


def markdown(text: str) -> NotebookNode:
    return nbformat.v4.new_markdown_cell(text)


def write_notebook(
    path: Path,
    *cells: str | NotebookNode,
    kernel: str | None = "python3",
    metadata: dict[str, Any] | None = None,
) -> Path:
    """A valid v4 notebook with these cells; `kernel` names its kernelspec (None: none)."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(c) if isinstance(c, str) else c for c in cells]
    if kernel is not None:
        notebook.metadata["kernelspec"] = {
            "name": kernel,
            "display_name": kernel,
            "language": "python",
        }
    notebook.metadata.update(metadata or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, str(path))
    return path


def read_notebook(path: Path) -> NotebookNode:
    return nbformat.read(str(path), as_version=4)


def outputs(notebook: NotebookNode) -> list[list[dict[str, Any]]]:
    """The outputs of each code cell, in order."""
    return [list(c.get("outputs", [])) for c in notebook.cells if c.cell_type == "code"]


def stream_text(notebook: NotebookNode, name: str = "stdout") -> list[str]:
    """What each code cell printed on `name` (stdout/stderr), one string per code cell."""
    return [
        "".join(o.get("text", "") for o in cell_outputs if o.get("output_type") == "stream"
                and o.get("name") == name)
        for cell_outputs in outputs(notebook)
    ]  # fmt: skip


def nbenv_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`python -m nbenv ARGS` in a real process, with the test's (isolated) environment."""
    return subprocess.run(
        [sys.executable, "-m", "nbenv", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )
