"""`%%pypi`, `%pypi`, `%%conda` and `%nbenv`: thin, they parse, call the core and show.

%load_ext nbenv
%%pypi pandas scikit-learn         # the body runs in that env's own kernel
%pypi pandas                       # the notebook-level env: built, kernel registered
%nbenv list                        # the CLI, inside the notebook
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass

from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from nbenv.cellenv import (
    HOST_PYTHON,
    ReadyEnv,
    in_env_kernel,
    ready_env,
    ready_env_from_host,
)
from nbenv.cellspec import CellDeclaration, parse_cell
from nbenv.errors import NbenvError, SubKernelError
from nbenv.net.auth import redact

__all__ = ["CHANGE_MIME", "NbenvMagics", "load_ipython_extension", "unload_ipython_extension"]

# What the JupyterLab extension listens for on a kernel's iopub to refresh its kernel picker
# and sidebar at once (labextension/src/index.ts).
CHANGE_MIME = "application/vnd.nbenv.change+json"
_CHANGING_COMMANDS = frozenset({"create", "remove", "gc", "kernel"})


def announce_change(event: str, env_id: str | None = None) -> None:
    """Tell the frontend that envs or kernelspecs may have changed: an update of a display
    that no output has, so every frontend (and the saved notebook) ignores it unless it
    listens for it."""
    from uuid import uuid4

    from IPython.display import update_display

    bundle = {CHANGE_MIME: {"event": event, "env_id": env_id}}
    update_display(bundle, raw=True, display_id=f"nbenv-change-{uuid4().hex}")  # type: ignore[no-untyped-call]


class NbenvCellError(Exception):
    """Shown as nbenv's message alone (no Python traceback), and fails the cell so that
    "Run All" stops."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def _render_traceback_(self) -> list[str]:  # IPython shows exactly these lines
        return [f"\x1b[31mnbenv:\x1b[0m {line}" if i == 0 else line
                for i, line in enumerate(self.message.splitlines())]  # fmt: skip


@dataclass
class _Running:
    """A child kernel this notebook started, and what it was declared with."""

    env_id: str
    options: tuple[object, ...]  # index, python, pre: a grown declaration keeps these
    requirements: frozenset[str]
    packages: dict[str, str]  # name -> version in the env the child runs on


def _options(declaration: CellDeclaration) -> tuple[object, ...]:
    request = declaration.pypi
    # the conda lines too: a kernel moves onto a grown env only when its conda part is the
    # same (a running process cannot take another prefix's activation)
    return (request.index_url, request.extra_index_urls, request.pythons, request.pre,
            declaration.conda)  # fmt: skip


@magics_class
class NbenvMagics(Magics):
    def __init__(self, shell: InteractiveShell) -> None:
        super().__init__(shell)
        self._running: dict[str, _Running] = {}  # env id -> the child that runs it
        self._ready: dict[str, ReadyEnv] = {}  # declaration key -> its env, this session

    # -- the declaration -> env step, shared by every magic ----------------------------------
    def _ready_env(
        self, magic: str, line: str, cell: str, declaration: CellDeclaration
    ) -> ReadyEnv:
        """The declaration's env; a declaration this kernel already ensured costs one stat
        (a cell that runs in a loop must not re-read locks and kernelspecs every time)."""
        known = None if declaration.upgrade else self._ready.get(declaration.key)
        if known is not None and known.python.exists():
            return known
        user_ns = self.shell.user_ns if self.shell else {}
        if in_env_kernel():
            ready = ready_env_from_host(magic, line, cell, user_ns)
        else:
            from nbenv.inspector.progress import ProgressDisplay

            reporter = ProgressDisplay()
            try:
                ready = ready_env(declaration, user_ns, reporter)
            except BaseException:
                reporter.finish(None)
                raise
            reporter.finish(ready.progress)
        self._ready[declaration.key] = ready
        announce_change("env-ready", ready.env_id)  # a new env or kernelspec: picker refresh
        return ready

    def _run(self, magic: str, line: str, cell: str) -> None:
        try:
            declaration = parse_cell(magic, line, cell)
            ready = self._ready_env(magic, line, cell, declaration)
            if not declaration.body.strip():
                print(ready.summary)
                return
            self._execute(declaration, ready)
        except SubKernelError:
            raise  # it renders the child's own traceback or its message
        except NbenvError as exc:
            raise NbenvCellError(redact(str(exc))) from None

    def _execute(self, declaration: CellDeclaration, ready: ReadyEnv) -> None:
        from nbenv.subkernel import pool_for

        assert self.shell is not None
        pool = pool_for(self.shell)
        env_id = ready.env_id
        wanted = frozenset(declaration.pypi.requirement_strings())
        if pool.find(env_id) is None:
            packages = ready.packages
            # A declaration that grew (`%pypi beta` added to a cell that ran with `alpha`)
            # keeps its kernel and its variables when no version moved, like `%pip install`.
            grown = [r for r in self._running.values()
                     if r.options == _options(declaration) and r.requirements < wanted
                     and pool.find(r.env_id) is not None]  # fmt: skip
            if grown:
                previous = max(grown, key=lambda r: len(r.requirements))
                old = pool.find(previous.env_id)
                moved = {n: (v, packages.get(n)) for n, v in previous.packages.items()
                         if packages.get(n) != v}  # fmt: skip
                if old is not None and not moved and old.is_alive():
                    old.retarget(ready.path, env_id)
                    self._running.pop(previous.env_id, None)
                elif moved:
                    what = ", ".join(f"{n} {a} -> {b or 'removed'}" for n, (a, b) in moved.items())
                    print(
                        f"nbenv: adding {', '.join(sorted(wanted - previous.requirements))} "
                        f"changes {what}, so this cell runs in a new kernel: variables set "
                        "by the earlier cells of this env are not here."
                    )
            self._running[env_id] = _Running(env_id, _options(declaration), wanted, packages)
        child = pool.get(env_id, ready.python, ready.path)
        inputs = {}
        for name in declaration.inputs:
            if name not in self.shell.user_ns:
                raise NbenvError(f"--in {name}: there is no variable {name!r} in this notebook")
            inputs[name] = self.shell.user_ns[name]
        values = child.run_cell(declaration.body, self.shell, inputs=inputs,
                                outputs=declaration.outputs)  # fmt: skip
        self.shell.user_ns.update(values)

    # -- magics --------------------------------------------------------------------------------
    @cell_magic
    def pypi(self, line: str, cell: str) -> None:
        """%%pypi [--python X.Y] [--index-url URL] [--in a,b] [--out c] [--upgrade] SPEC...

        Run the cell in an isolated env with these PyPI requirements. Lines below that start
        with %pypi or %conda add to the same env."""
        self._run("pypi", line, cell)

    @cell_magic
    def conda(self, line: str, cell: str) -> None:
        """%%conda [-c CHANNEL] [--python X.Y] [--cuda V] [--in a,b] [--out c] SPEC...

        Run the cell in an isolated env of these Conda packages (MatchSpecs; conda-forge
        unless -c). Lines below that start with %pypi add PyPI packages to the same env."""
        self._run("conda", line, cell)

    @line_magic("pypi")  # type: ignore[arg-type]
    def pypi_line(self, line: str) -> None:
        """%pypi SPEC... — the notebook-level env: built, locked, kernel registered."""
        self._run("pypi", line, "")

    @line_magic
    def nbenv(self, line: str) -> None:
        """%nbenv list|show|remove|gc|lock|export|run|kernel ... — the nbenv CLI;
        %nbenv inspect — the inspector (every env, its packages, actions)."""
        try:
            argv = shlex.split(line) or ["--help"]
        except ValueError as exc:
            raise NbenvCellError(f"%nbenv {line}: {exc}") from None
        if argv == ["inspect"]:  # what exists, as an app (or a table) in the notebook
            self._inspect()
            return
        self._cli(argv)
        if argv[0] in _CHANGING_COMMANDS:
            announce_change(argv[0])

    def _cli(self, argv: list[str]) -> None:
        err = io.StringIO()
        if in_env_kernel():  # the CLI's modules live with the host nbenv
            done = subprocess.run([os.environ[HOST_PYTHON], "-m", "nbenv", *argv],
                                  capture_output=True, text=True, check=False)  # fmt: skip
            print(done.stdout, end="")
            code = done.returncode
            err.write(done.stderr)
        else:
            from nbenv.cli import main

            with contextlib.redirect_stderr(err):
                code = main(argv)
        if code != 0:  # the cell fails, so "Run All" stops as it would in a terminal
            raise NbenvCellError(err.getvalue().strip().removeprefix("error: "))
        if err.getvalue():
            print(err.getvalue().rstrip(), file=sys.stderr)

    def _inspect(self) -> None:
        if in_env_kernel():  # nbenv's core is not importable here: the host's static view
            from IPython.display import HTML, display

            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                self._cli(["list", "--html"])
            display(HTML(out.getvalue()))  # type: ignore[no-untyped-call]
            return
        from nbenv.inspector import inspect

        try:
            inspect()
        except NbenvError as exc:
            raise NbenvCellError(redact(str(exc))) from None


def load_ipython_extension(shell: InteractiveShell) -> None:
    from nbenv.preload import start

    shell.register_magics(NbenvMagics)
    # both the cell and the line form are called "pypi": IPython keeps them apart by kind
    if not in_env_kernel():  # an env's kernel asks the host nbenv: nothing to import here
        start()  # the first cell's imports, while the user gets to it


def unload_ipython_extension(shell: InteractiveShell) -> None:
    from nbenv.subkernel import pool_for

    pool_for(shell).shutdown_all()
