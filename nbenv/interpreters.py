"""Find a Python interpreter for `--python 3.12` (or `--python /path/to/python`).

Where we look, in order: the running interpreter, `python*` / `pypy*` executables on PATH,
pyenv's versions (`$PYENV_ROOT` or `~/.pyenv`) and uv's managed Pythons. pyenv's shims are
skipped: the versions behind them are found directly, and a shim answers for whichever
version pyenv selects in the current directory, not the one its name says.

Each candidate is asked for its version once (`python -I -S -c ...`, with a timeout); answers
are cached in-process by real path, modification time and size, so a rebuilt interpreter is
asked again.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from nbenv.errors import NoInterpreterError, UsageError

__all__ = ["Interpreter", "clear_cache", "discover", "find_interpreter", "running_interpreter"]

QUERY_TIMEOUT = 10.0  # seconds; a cold start on a network filesystem can be slow
# -I: no PYTHON* variables, no user site, no cwd on sys.path; -S: no site (faster, no .pth
# side effects). The output is one line, "cpython 3.12.4", easy to fake in tests.
_QUERY = "import sys; print(sys.implementation.name, '%d.%d.%d' % sys.version_info[:3])"
_EXECUTABLE = re.compile(r"^(?:python|pypy)(?:\d+(?:\.\d+)?)?(?:\.exe)?$")
_VERSION = re.compile(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?$")
_ANSWER = re.compile(r"^(\w+) (\d+)\.(\d+)\.(\d+)$")


@dataclass(frozen=True)
class Interpreter:
    path: Path  # absolute, as found (not resolved: a venv's python stays the venv's)
    version: tuple[int, int, int]
    implementation: str  # sys.implementation.name: "cpython", "pypy", ...

    @property
    def short(self) -> str:
        """`3.12`: what `--python` and the resolver's target take."""
        return f"{self.version[0]}.{self.version[1]}"

    def describe(self) -> str:
        name = {"cpython": "CPython", "pypy": "PyPy"}.get(self.implementation, self.implementation)
        return f"{name} {'.'.join(map(str, self.version))}  {self.path}"


# (real path, mtime, size) -> the answer; None: not a Python we can use
_cache: dict[tuple[str, int, int], Interpreter | None] = {}
_cache_lock = threading.Lock()


def running_interpreter() -> Interpreter:
    if not sys.executable:  # embedded Pythons may not know their executable
        raise NoInterpreterError("(running)", reason="sys.executable is empty")
    major, minor, micro = sys.version_info[:3]
    return Interpreter(
        Path(os.path.abspath(sys.executable)), (major, minor, micro), sys.implementation.name
    )


def discover(environ: Mapping[str, str] | None = None) -> list[Interpreter]:
    """Every interpreter found, the running one first, then in search order; each real
    executable once."""
    env = os.environ if environ is None else environ
    running = running_interpreter()
    seen = {os.path.realpath(running.path)}
    candidates: list[Path] = []
    for path in _candidates(env):
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            candidates.append(path)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda p: _query(p, env), candidates))
    return [running, *(found for found in answers if found is not None)]


def find_interpreter(version: str | None, environ: Mapping[str, str] | None = None) -> Interpreter:
    """The interpreter for `--python VERSION` (`3`, `3.12`, `3.12.4`) or `--python PATH`.

    None gives the running interpreter. The running one wins whenever it matches; otherwise
    the highest matching version, CPython before other implementations, earlier in the
    search order on a tie.
    """
    if version is None:
        return running_interpreter()
    version = version.strip()
    env = os.environ if environ is None else environ
    if _looks_like_path(version):
        return _interpreter_at(version, env)
    match = _VERSION.match(version)
    if not match:
        raise UsageError(
            f"--python {version!r}: give a version such as 3.12, or the path of an interpreter"
        )
    wanted = tuple(int(part) for part in match.groups() if part is not None)
    running = running_interpreter()
    if running.version[: len(wanted)] == wanted:
        return running
    found = discover(env)
    matching = [i for i in found if i.version[: len(wanted)] == wanted]
    if not matching:
        raise NoInterpreterError(version, found)
    return max(matching, key=lambda i: (i.implementation == "cpython", i.version))


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _candidates(env: Mapping[str, str]) -> Iterable[Path]:
    roots = [os.path.realpath(root) + os.sep for root in _pyenv_roots(env)]
    for entry in env.get("PATH", "").split(os.pathsep):
        if not (entry and os.path.isabs(entry)):
            continue  # a relative PATH entry depends on the cwd: never trust it
        real = os.path.realpath(entry)
        if os.path.basename(real) == "shims" and real.startswith(tuple(roots)):
            continue  # pyenv's and its plugins' shims
        yield from _executables_in(Path(entry))
    for root in _pyenv_roots(env):
        for version_dir in _sorted_dirs(root / "versions"):
            yield from _first_python(version_dir / "bin")
    for root in _uv_roots(env):
        for version_dir in _sorted_dirs(root):
            yield from _first_python(version_dir / "bin")


def _executables_in(directory: Path) -> list[Path]:
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    # python3.12 before python3 before python: the most specific name is the likeliest real one
    names.sort(key=lambda name: -len(name))
    return [
        directory / name
        for name in names
        if _EXECUTABLE.match(name) and _is_executable(directory / name)
    ]


def _first_python(bin_dir: Path) -> list[Path]:
    for name in ("python3", "python", "pypy3"):
        if _is_executable(bin_dir / name):
            return [bin_dir / name]
    return []


def _sorted_dirs(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.is_dir())
    except OSError:
        return []


def _pyenv_roots(env: Mapping[str, str]) -> list[Path]:
    configured = env.get("PYENV_ROOT")
    if configured:
        return [Path(configured)]
    home = env.get("HOME")
    return [Path(home) / ".pyenv"] if home else []


def _uv_roots(env: Mapping[str, str]) -> list[Path]:
    configured = env.get("UV_PYTHON_INSTALL_DIR")
    if configured:
        return [Path(configured)]
    data = env.get("XDG_DATA_HOME") or (
        os.path.join(env["HOME"], ".local", "share") if env.get("HOME") else ""
    )
    return [Path(data) / "uv" / "python"] if data else []


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.startswith(("~", "."))


def _interpreter_at(text: str, env: Mapping[str, str]) -> Interpreter:
    path = Path(text)
    if text == "~" or text.startswith("~/"):
        home = env.get("HOME") or os.path.expanduser("~")
        path = Path(home + text[1:])
    path = Path(os.path.abspath(path))
    if not path.exists():
        raise NoInterpreterError(text, reason="no such file")
    if not _is_executable(path):
        raise NoInterpreterError(text, reason="not an executable file")
    found = _query(path, env)
    if found is None:
        raise NoInterpreterError(text, reason="it did not answer as Python 3 does")
    return found


def _query(path: Path, env: Mapping[str, str]) -> Interpreter | None:
    """Ask `path` for its version; None when it is not a Python we can use."""
    try:
        stat = path.stat()
    except OSError:
        return None
    key = (os.path.realpath(path), stat.st_mtime_ns, stat.st_size)
    with _cache_lock:
        if key in _cache:
            return _with_path(_cache[key], path)
    try:
        done = subprocess.run(
            [str(path), "-I", "-S", "-c", _QUERY],
            capture_output=True,
            text=True,
            timeout=QUERY_TIMEOUT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None  # not cached: a busy machine may answer next time
    except OSError:
        done = None
    found = None
    if done is not None and done.returncode == 0:
        lines = done.stdout.strip().splitlines()
        answer = _ANSWER.match(lines[-1].strip()) if lines else None
        if answer:
            major, minor, micro = (int(answer.group(i)) for i in (2, 3, 4))
            found = Interpreter(path, (major, minor, micro), answer.group(1))
    with _cache_lock:
        _cache[key] = found
    return found


def _with_path(cached: Interpreter | None, path: Path) -> Interpreter | None:
    # the cache is keyed by real path; report the name this caller found it under
    if cached is None or cached.path == path:
        return cached
    return Interpreter(path, cached.version, cached.implementation)
