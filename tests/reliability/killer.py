"""Run the nbenv CLI and SIGKILL it the moment it reaches a phase (kill -9 from inside).

    python killer.py EVENT SUBSTRING N -- create --index-url URL alpha

A Python audit hook (PEP 578) watches the process's own file operations; at the N-th
`EVENT` (`open-w`: a file opened for writing; `os.rename`, `os.replace`, `os.link`,
`os.mkdir`; several joined by `|`) whose path contains SUBSTRING (every part of it, when
joined by `&`), it kills the process with SIGKILL before the operation happens. nbenv's
download helper process gets the same hook, and the worker processes forked from the CLI
inherit it; a kill in either takes the CLI with it, as a kill of the command's process
group would. The phase is named by the files it writes (a `.part` renamed into the
download cache, a file extracted under `unpacked/.tmp-`, a hardlink into `envs/.build-`,
kernel.json, a lock's temp file replacing the lock), so nbenv itself carries no test hook
and pays nothing for this.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _is_write(args: tuple[Any, ...]) -> bool:
    _path, mode, flags = args
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return isinstance(flags, int) and bool(flags & _WRITE_FLAGS)


def _pause(folder: str) -> None:
    import time

    with open(os.path.join(folder, "paused"), "w"):
        pass
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(folder, "resume")) and time.monotonic() < deadline:
        time.sleep(0.05)


def install(event: str, substring: str, count: int, *, helper: bool = False) -> None:
    """`helper`: this is nbenv's download helper; the kill takes its parent (the CLI) too,
    as a kill of the command's process group would. So does a kill in a worker forked
    from the CLI (nbenv.unpacking): the hook is inherited with the rest of the process."""
    origin = os.getpid()
    seen = 0
    fired = False
    events = set(event.split("|"))
    parts = substring.split("&")

    def hook(name: str, args: tuple[Any, ...]) -> None:
        nonlocal seen, fired
        if fired:
            return
        if name == "open" and "open-w" in events:
            if not _is_write(args):
                return
            paths = [args[0]]
        elif name in events:
            paths = [a for a in args[:2] if isinstance(a, str | bytes | os.PathLike)]
        else:
            return
        texts = [os.fsdecode(p) for p in paths if not isinstance(p, int)]
        if not any(all(part in text for part in parts) for text in texts):
            return
        seen += 1
        if seen >= count:
            fired = True
            pause = os.environ.get("NBENV_TEST_PAUSE_DIR")
            if pause is None:
                if helper or os.getpid() != origin:
                    os.kill(os.getppid(), signal.SIGKILL)
                os.kill(os.getpid(), signal.SIGKILL)
            _pause(pause)

    sys.addaudithook(hook)


def main() -> None:
    if sys.argv[1] == "--download-helper":  # nbenv's download helper, watched the same way
        event, substring, count = sys.argv[2:]
        install(event, substring, int(count), helper=True)
        from nbenv.downloading import _work

        _work(sys.stdin, sys.stdout)
        sys.stdout.flush()
        os._exit(0)
    event, substring, count, sep, *argv = sys.argv[1:]
    assert sep == "--", "usage: killer.py EVENT SUBSTRING N -- NBENV-ARGS"
    install(event, substring, int(count))
    import nbenv.downloading

    # downloads happen in a helper process: it gets the same hook
    nbenv.downloading._COMMAND = [sys.executable, __file__, "--download-helper", event,
                                  substring, count]  # fmt: skip
    from nbenv.cli import main as nbenv_main

    sys.exit(nbenv_main(argv))


if __name__ == "__main__":
    main()
