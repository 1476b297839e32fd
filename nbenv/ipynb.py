"""Jupyter notebook files: read as nbformat 4, written back atomically in their own version."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from nbenv.errors import NotebookFileError
from nbenv.files import atomic_write

if TYPE_CHECKING:
    import nbformat

__all__ = ["read_notebook", "write_notebook"]


def read_notebook(path: Path, *, convert: bool = True) -> nbformat.NotebookNode:
    """The notebook as nbformat 4 (or as written, `convert=False`), or NotebookFileError."""
    import nbformat

    version: Any = 4 if convert else nbformat.NO_CONVERT
    try:
        with path.open(encoding="utf-8") as stream:
            node = nbformat.read(stream, as_version=version)  # type: ignore[no-untyped-call]
    except FileNotFoundError:
        raise NotebookFileError(str(path), "does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NotebookFileError(str(path), f"cannot be read: {exc}.") from None
    except Exception as exc:  # nbformat raises JSON, validation and version errors alike
        raise NotebookFileError(
            str(path), f"is not a Jupyter notebook nbenv can read: {exc}"
        ) from None
    return cast("nbformat.NotebookNode", node)


def write_notebook(path: Path, notebook: nbformat.NotebookNode) -> None:
    """Atomically, in the notebook's own nbformat version."""
    import nbformat

    text: str = nbformat.writes(notebook, version=nbformat.NO_CONVERT)  # type: ignore[no-untyped-call]
    atomic_write(path, (text if text.endswith("\n") else text + "\n").encode("utf-8"), durable=True)
