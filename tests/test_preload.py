"""`%load_ext nbenv` imports what the first cell needs on a thread, and that is safe."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import nbenv
from nbenv import preload


def import_cycles(package: Path) -> list[list[str]]:
    """Cycles among a package's module-level imports of its own modules (imports inside
    functions and `if TYPE_CHECKING:` blocks do not run at import time: not counted)."""
    root = package.name
    deps: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found: set[str] = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            for stmt in node.body if isinstance(node, ast.Try) else [node]:
                if isinstance(stmt, ast.Import):
                    found |= {a.name for a in stmt.names}
                elif isinstance(stmt, ast.ImportFrom) and stmt.module and not stmt.level:
                    found |= {stmt.module, *(f"{stmt.module}.{a.name}" for a in stmt.names)}
        if "." in name:
            found.add(name.rsplit(".", 1)[0])  # a submodule's package is imported first
        deps[name] = {d for d in found if d.split(".")[0] == root}
    for name in deps:
        deps[name] = {d for d in deps[name] if d in deps and d != name}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        stack.append(name)
        for dep in sorted(deps[name]):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[name] = 2

    for name in sorted(deps):
        if name not in state:
            visit(name, [])
    return cycles


def test_nbenv_modules_import_each_other_without_cycles() -> None:
    # what makes importing them on the preload thread safe (see nbenv/preload.py)
    assert import_cycles(Path(nbenv.__file__).parent) == []


def test_the_cycle_check_finds_a_cycle(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import thing\n")
    (package / "b.py").write_text("import os\nfrom pkg import a\nthing = 1\n")
    (package / "c.py").write_text("def later():\n    from pkg import a\n")  # not at import
    assert import_cycles(package) == [["pkg.a", "pkg.b", "pkg.a"]]


LOAD_EXT = """
import json, sys, threading
from IPython.core.interactiveshell import InteractiveShell
from nbenv.preload import MODULES
before = [m for m in MODULES if m in sys.modules]
InteractiveShell.instance().run_line_magic("load_ext", "nbenv")
threads = [t for t in threading.enumerate() if t.name == "nbenv-preload"]
for thread in threads:
    thread.join(60)
print(json.dumps({"before": before, "after": [m for m in MODULES if m in sys.modules],
                  "daemon": [t.daemon for t in threads]}))
"""


def load_ext_in_a_fresh_interpreter(**env: str) -> dict[str, list[Any]]:
    # a fresh interpreter: this test process has imported everything already
    out = subprocess.run([sys.executable, "-c", LOAD_EXT], capture_output=True, text=True,
                         timeout=120, check=True, env={**os.environ, **env})  # fmt: skip
    seen: dict[str, list[Any]] = json.loads(out.stdout.strip().splitlines()[-1])
    return seen


def test_loading_the_extension_imports_what_the_first_cell_needs() -> None:
    seen = load_ext_in_a_fresh_interpreter()
    assert "filelock" not in seen["before"] and "nbenv.envs" not in seen["before"]
    assert seen["after"] == list(preload.MODULES)
    assert seen["daemon"] == [True]  # it never holds up the kernel's exit


def test_an_env_kernel_loads_the_extension_without_the_preload() -> None:
    # in an env's kernel the cells ask the host nbenv; its modules are not needed there
    seen = load_ext_in_a_fresh_interpreter(NBENV_HOST_PYTHON=sys.executable)
    assert seen["daemon"] == []
    assert "nbenv.envs" not in seen["after"]


def test_a_module_that_fails_to_import_ends_the_preload_quietly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failures: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    monkeypatch.setattr(preload, "MODULES", ("nbenv_no_such_module", "json"))
    thread = preload.start()
    thread.join(10)
    assert not thread.is_alive()
    assert failures == []
