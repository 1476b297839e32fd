"""The venvs nbenv installs into: made without pip, asked where installs go, compiled after.

The env's own python answers every layout question (distros patch sysconfig; no guess is
trusted), and bytecode is compiled once the env is in its final place, in a detached process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from nbenv.errors import InstallError, VenvCreationError
from nbenv.files import atomic_write
from nbenv.paths import cache_dir

__all__ = ["Layout", "compile_bytecode", "create_venv", "env_python", "query_layout"]

# Run by the env's python: where its installs go (3.6+ syntax, any env we may build).
_LAYOUT_CODE = (
    "import json, sys, sysconfig\n"
    "paths = sysconfig.get_paths()\n"
    "paths['version'] = '%d.%d' % sys.version_info[:2]\n"
    "print(json.dumps(paths))\n"
)


def env_python(env_dir: Path) -> Path:
    if os.name == "nt":  # pragma: no cover
        return env_dir / "Scripts" / "python.exe"
    return env_dir / "bin" / "python"


def create_venv(
    python: Path, env_dir: Path, *, final_dir: Path | None = None, timeout: float = 120
) -> Path:
    """Make a venv without pip at `env_dir` and return its python.

    `final_dir` is where the caller will rename the env to: its activate scripts name it.
    """
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        # The interpreter running nbenv: the same builder `python -m venv` uses, without
        # paying for a second interpreter start (~50 ms of every env build).
        import venv

        try:
            venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(str(env_dir))
        except (OSError, subprocess.CalledProcessError) as exc:
            raise VenvCreationError(str(python), str(exc)) from None
    else:
        argv = [str(python), "-m", "venv", "--without-pip", str(env_dir)]
        try:
            done = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise VenvCreationError(str(python), str(exc)) from None
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise VenvCreationError(str(python), output)
    result = env_python(env_dir)
    if not result.exists():
        raise VenvCreationError(str(python), f"it made no {result}")
    if final_dir is not None:
        _relocate_activation(Path(os.path.abspath(env_dir)), Path(os.path.abspath(final_dir)))
    return result


def _relocate_activation(env_dir: Path, final_dir: Path) -> None:
    old, new = str(env_dir), str(final_dir)
    for script in env_python(env_dir).parent.iterdir():
        if script.name.lower().startswith("activate") and script.is_file():
            text = script.read_text(encoding="utf-8")
            if old in text:
                script.write_text(text.replace(old, new), encoding="utf-8")


def compile_bytecode(env_dir: Path, *, wait: bool = False) -> subprocess.Popen[bytes]:
    """Compile the env's site-packages to `.pyc`, in parallel, in a detached process.

    Call it once the env is in its final place. The env is usable meanwhile (a module
    imported before its `.pyc` exists is compiled by the import), and killing the process
    midway is harmless: each `.pyc` is written to a temporary name, then renamed. Explicit
    compilation writes even under PYTHONDONTWRITEBYTECODE. `wait=True` waits for it; the
    return code is compileall's (1 when some file does not compile, e.g. Python 2 test data).
    """
    python = env_python(env_dir)
    layout = query_layout(python, env_dir)
    targets = sorted({layout.purelib, layout.platlib})
    argv = [str(python), "-I", "-m", "compileall", "-q", "-j", "0", *targets]
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # outlives an interrupted caller; not killed by its Ctrl-C
    )
    if wait:
        process.wait()
    return process


@dataclass(frozen=True)
class Layout:
    purelib: str
    platlib: str
    scripts: str
    data: str
    python_version: str  # "3.12", for the headers directory

    def schemes(self, distribution: str) -> dict[str, str]:
        headers = os.path.join(
            self.data, "include", "site", f"python{self.python_version}", distribution
        )
        return {
            "purelib": self.purelib,
            "platlib": self.platlib,
            "scripts": self.scripts,
            "data": self.data,
            "headers": headers,
        }


def query_layout(python: Path, env_dir: Path) -> Layout:
    """Where installs go in this env. Every venv of one base interpreter has the same layout
    relative to its root, so the answer is kept per interpreter (in memory and in the cache
    dir): only the first env of an interpreter pays for starting it."""
    key = _interpreter_key(python)
    relative = _LAYOUTS.get(key) if key else None
    cache_file = cache_dir() / "layouts" / f"{key}.json" if key else None
    if relative is None and cache_file is not None:
        with contextlib.suppress(OSError, ValueError):
            relative = json.loads(cache_file.read_text())
    if relative is not None:
        with contextlib.suppress(KeyError, TypeError):
            return _checked(Layout(
                purelib=os.path.join(env_dir, relative["purelib"]),
                platlib=os.path.join(env_dir, relative["platlib"]),
                scripts=os.path.join(env_dir, relative["scripts"]),
                data=os.path.join(env_dir, relative["data"]),
                python_version=relative["version"],
            ), python, env_dir)  # fmt: skip
    layout = _ask(python, env_dir)
    if key:
        relative = {
            "purelib": os.path.relpath(layout.purelib, env_dir),
            "platlib": os.path.relpath(layout.platlib, env_dir),
            "scripts": os.path.relpath(layout.scripts, env_dir),
            "data": os.path.relpath(layout.data, env_dir),
            "version": layout.python_version,
        }
        _LAYOUTS[key] = relative
        if cache_file is not None:
            with contextlib.suppress(OSError):
                atomic_write(cache_file, json.dumps(relative).encode())
    return layout


_LAYOUTS: dict[str, dict[str, str]] = {}


def _interpreter_key(python: Path) -> str | None:
    """The base interpreter the env's python points to, with its size and mtime."""
    try:
        real = os.path.realpath(python)
        st = os.stat(real)
    except OSError:
        return None
    text = f"{real}\0{st.st_size}\0{st.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _ask(python: Path, env_dir: Path) -> Layout:
    """Ask the env's own python where installs go (distros patch sysconfig; trust no guess)."""
    argv = [str(python), "-I", "-c", _LAYOUT_CODE]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        paths = json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        raise InstallError(f"{python} could not report its install paths: {exc}") from None
    if not isinstance(paths, dict):
        output = (done.stdout + done.stderr).decode(errors="replace").strip()
        raise InstallError(f"{python} could not report its install paths:\n{output}")
    try:
        layout = Layout(
            purelib=os.path.normpath(paths["purelib"]),
            platlib=os.path.normpath(paths["platlib"]),
            scripts=os.path.normpath(paths["scripts"]),
            data=os.path.normpath(paths["data"]),
            python_version=str(paths["version"]),
        )
    except (KeyError, TypeError) as exc:
        raise InstallError(f"{python} reported no install path for {exc}") from None
    return _checked(layout, python, env_dir)


def _checked(layout: Layout, python: Path, env_dir: Path) -> Layout:
    real_env = os.path.realpath(env_dir)
    for where in (layout.purelib, layout.platlib, layout.scripts, layout.data):
        real = os.path.realpath(where)
        if os.path.commonpath([real, real_env]) != real_env:
            raise InstallError(f"{python} installs into {where}, outside the env {env_dir}")
    return layout
