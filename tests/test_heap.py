"""nbenv.heap: helper processes keep freed memory for reuse instead of faulting in new pages."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

import nbenv.downloading
import nbenv.heap
import nbenv.unpacking

_PAGE = 4096
_BLOCK = 40 << 20  # above glibc's largest adaptive mmap threshold (32 MB): mmap'd by default
_ROUNDS = 8

# Allocates, fills and frees a big block several times; prints the page faults of the
# rounds after the first.
_SCRIPT = f"""
import resource, sys
import nbenv.heap
if sys.argv[1] == "keep":
    assert nbenv.heap.keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = b"\\1" * {_BLOCK}
del block
before = faults()
for _ in range({_ROUNDS}):
    block = b"\\1" * {_BLOCK}
    del block
print(faults() - before)
"""


def _faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator")
def test_freed_memory_is_reused_instead_of_new_pages() -> None:
    pages = _BLOCK // _PAGE * _ROUNDS
    assert _faults("default") > pages * 0.9  # the control: each block is new pages
    assert _faults("keep") < pages * 0.05


def test_helper_processes_keep_freed_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(nbenv.heap, "keep_freed_memory", lambda: calls.append("unpack"))
    nbenv.unpacking._work(io.StringIO(""), io.StringIO())  # no jobs: it starts and ends
    monkeypatch.setattr(nbenv.downloading, "keep_freed_memory", lambda: calls.append("fetch"))
    nbenv.downloading.serve(io.StringIO(""), io.StringIO())  # no set-up line: it ends
    assert calls == ["unpack", "fetch"]


def test_create_keeps_freed_memory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The `nbenv create` process (a CLI process, gone when done) keeps it too; checked
    before anything is resolved, so a bad request is enough."""
    from nbenv.cli import main

    calls: list[bool] = []
    monkeypatch.setattr(nbenv.heap, "keep_freed_memory", lambda: calls.append(True))
    assert main(["create", "--lock", str(tmp_path / "missing.toml")]) != 0
    assert calls == [True]
