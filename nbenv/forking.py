"""Helper processes forked from this one, for work that wants a GIL of its own.

Starting `python -m nbenv.<module>` costs an interpreter start and every import again, ~0.1 s
of CPU per helper; a fork costs a few milliseconds and shares what is imported. Forking is
safe only while this process runs one thread (another thread could hold a lock the child
would inherit taken, forever), and it is used on Linux only. A forked helper talks over a
pipe pair exactly as the `python -m` one does over stdin and stdout, so callers treat the
two alike (`Forked` has the part of Popen's interface they use), and it never returns into
the caller's code.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

__all__ = ["Forked", "can_fork", "send_message", "stop"]


def can_fork() -> bool:
    """Whether helpers can be forked from this process: Linux, while it runs one thread."""
    return sys.platform == "linux" and threading.active_count() == 1


_Target = Callable[[IO[str], IO[str]], None]


class Forked:
    """`target(stdin, stdout)` run in a fork of this process, its pipes as `stdin` (ours to
    write) and `stdout` (ours to read); `nice` lowers its priority. A target given as
    "module:function" is imported in the helper only."""

    def __init__(self, target: _Target | str, *, nice: int = 0) -> None:
        jobs_in, jobs_out = os.pipe()
        answers_in, answers_out = os.pipe()
        pid = os.fork()
        if pid == 0:  # the helper
            try:
                os.dup2(jobs_in, 0)
                os.dup2(answers_out, 1)
                # nothing else of the parent's: another helper's pipe held open here would
                # keep it from seeing its end
                for fd in _open_fds():
                    if fd > 2:
                        with contextlib.suppress(OSError):
                            os.close(fd)
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
                if nice:
                    with contextlib.suppress(OSError):
                        os.nice(nice)
                run: _Target
                if isinstance(target, str):
                    module, _, name = target.partition(":")
                    run = getattr(importlib.import_module(module), name)
                else:
                    run = target
                with (
                    open(0, encoding="utf-8", closefd=False) as stdin,
                    open(1, "w", encoding="utf-8", closefd=False) as stdout,
                ):
                    run(stdin, stdout)
            except BaseException:
                os._exit(1)
            os._exit(0)
        os.close(jobs_in)
        os.close(answers_out)
        self.pid = pid
        self.returncode: int | None = None
        self.stdin: IO[str] | None = open(jobs_out, "w", encoding="utf-8")  # noqa: SIM115
        self.stdout: IO[str] | None = open(answers_in, encoding="utf-8")  # noqa: SIM115

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else: gone (as Popen takes it)
                self.returncode = 0
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"helper {self.pid}", timeout or 0)
            time.sleep(0.005)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        stop(self)


def send_message(stream: IO[str] | None, message: dict[str, Any]) -> bool:
    """One JSON line to a helper (or from it, to its parent), flushed; False when the other
    side is gone (the pipe closed or broken). The caller serializes writers."""
    if stream is None:
        return False
    try:
        stream.write(json.dumps(message) + "\n")
        stream.flush()
    except (OSError, ValueError):
        return False
    return True


def stop(helper: subprocess.Popen[str] | Forked) -> None:
    """End a helper, forked or started: its input closed (it finishes the job at hand and
    leaves), killed if it is still there 10 s later."""
    for stream in (helper.stdin, helper.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    try:
        helper.wait(timeout=10)
    except subprocess.TimeoutExpired:
        helper.kill()
        helper.wait()


def _open_fds() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return list(range(3, 1024))
