"""Jupyter kernelspecs for nbenv environments, installed through jupyter_client.

A spec has a concrete argv (the env's python running ipykernel_launcher), so it works in every
front end: Lab, Notebook, VS Code, nbconvert, papermill. `metadata.nbenv` says which env it
belongs to; that key is how nbenv tells its specs from everyone else's, and it never holds a
credential (requirements and paths go through `redact`).

Kernel names are `nbenv-<name>-<id12>` or `nbenv-<id12>`: the last twelve characters are
always the env id's prefix, so two envs never share a kernel name, and the same env (and
name) always gets the same one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbenv.errors import KernelSpecError, UsageError
from nbenv.files import pid_alive
from nbenv.net.auth import redact

__all__ = [
    "KERNEL_PREFIX",
    "KernelSpecInfo",
    "display_name",
    "install_kernelspec",
    "installed_spec",
    "kernel_name",
    "nbenv_kernelspecs",
    "orphaned_kernelspecs",
    "remove_kernelspec",
]

KERNEL_PREFIX = "nbenv-"
_ID_CHARS = 12  # 48 bits of the env id: collisions need millions of envs
_NAME_CHARS = 40
_VALID = re.compile(r"^[a-z0-9._-]+$")  # jupyter_client's rule (it lowercases first)
_SHORT_ID = 8  # in display names, where a person reads it

# jupyter_client logs through traitlets' logger, which would print warnings to stderr;
# the core never prints, so its messages go to our logger, silent unless an app configures it.
_log = logging.getLogger(__name__)
_log.addHandler(logging.NullHandler())


@dataclass(frozen=True)
class KernelSpecInfo:
    """An installed nbenv kernelspec, as read from its kernel.json."""

    name: str  # the kernel name: the spec's directory name
    resource_dir: Path
    display_name: str
    env_id: str
    env_name: str | None
    env_dir: Path | None
    python: Path | None  # argv[0]
    requirements: tuple[str, ...]
    lock_path: Path | None
    env_exists: bool  # when read: env_dir is a directory and the python in argv exists


def kernel_name(env_id: str, name: str | None) -> str:
    """`nbenv-ml-demo-1a2b3c4d5e6f` for a named env, `nbenv-1a2b3c4d5e6f` otherwise."""
    ident = re.sub(r"[^a-z0-9]", "", env_id.lower())[:_ID_CHARS]
    if not ident:
        raise ValueError(f"env id {env_id!r} has no letters or digits")
    slug = _slug(name) if name else ""
    return f"{KERNEL_PREFIX}{slug}-{ident}" if slug else f"{KERNEL_PREFIX}{ident}"


def display_name(python_version: str, name: str | None, env_id: str) -> str:
    """What the kernel picker shows: `Python 3.11 · nbenv: ml-demo`."""
    label = (name or "").strip() or env_id[:_SHORT_ID]
    return f"Python {python_version} · nbenv: {label}"


def install_kernelspec(
    *,
    env_dir: Path,
    python: Path,
    env_id: str,
    name: str | None,
    python_version: str,
    requirements: Sequence[str],
    lock_path: Path | None,
    user: bool = True,
    prefix: str | None = None,
    sys_prefix: bool = False,
    env: Mapping[str, str] | None = None,
) -> KernelSpecInfo:
    """Install (or replace) the kernelspec of an env, as `ipykernel install` would with
    `--user` (the default), `--prefix PREFIX` or `--sys-prefix` (this process's prefix).
    `user=False` without a prefix installs system-wide. `env`: more variables for the
    kernel (a conda prefix's activation; `${VAR}` is filled in by jupyter_client)."""
    if prefix is not None and sys_prefix:
        raise UsageError("--prefix and --sys-prefix cannot be used together")
    if sys_prefix:
        prefix = sys.prefix
    kname = kernel_name(env_id, name)
    # absolute but never resolved: a venv's python is a symlink to the base interpreter,
    # and only the venv's path starts Python inside the venv
    python_path = os.path.abspath(python)
    spec: dict[str, Any] = {
        "argv": _argv(python_path, python_version),
        "display_name": redact(display_name(python_version, name, env_id)),
        "language": "python",
        "interrupt_mode": "signal",
        # Keep frozen modules (faster start; ipykernel's own install turns them off for
        # the debugger) and silence debugpy's warning about them, as ipykernel does then.
        "env": {
            **(env or {}),
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            "NBENV_HOST_PYTHON": sys.executable,
        },
        "metadata": {
            "debugger": True,
            "nbenv": {
                "env_id": env_id,
                "name": redact(name) if name is not None else None,
                "python_version": python_version,
                "requirements": [redact(r) for r in requirements],
                "lock_path": redact(os.path.abspath(lock_path)) if lock_path else None,
                "env_dir": redact(os.path.abspath(env_dir)),
            },
        },
    }
    kernels = _destination(user=user and prefix is None, prefix=prefix)
    text = json.dumps(spec, indent=1, ensure_ascii=False) + "\n"
    try:
        _write_spec(kernels, kname, text)
    except OSError as exc:
        raise KernelSpecError(kname, str(exc.filename or kernels), _reason(exc)) from None
    info = _read_spec(kernels / kname)
    assert info is not None  # we just wrote it
    return info


def _destination(*, user: bool, prefix: str | None) -> Path:
    """The kernels dir jupyter_client's `install_kernel_spec` would use."""
    from jupyter_core.paths import SYSTEM_JUPYTER_PATH, jupyter_data_dir

    if user:
        return Path(jupyter_data_dir(), "kernels")
    if prefix:
        return Path(os.path.abspath(prefix), "share", "jupyter", "kernels")
    return Path(SYSTEM_JUPYTER_PATH[0], "kernels")


_STAGING = ".nbenv-staging-"


def _write_spec(kernels: Path, kname: str, text: str) -> None:
    """Write the spec beside its final place and rename it in: Jupyter never sees a spec
    dir without a whole kernel.json. The staging dir holds the spec one level down, so
    Jupyter does not list it (a kernel dir has kernel.json at its top)."""
    kernels.mkdir(parents=True, exist_ok=True)
    _remove_dead_staging(kernels)
    staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING}{os.getpid()}-", dir=kernels))
    try:
        source = staging / kname
        source.mkdir()
        _copy_logos(source)
        with open(source / "kernel.json", "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        _place(source, kernels / kname)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _place(source: Path, destination: Path) -> None:
    """A new spec appears at once (one rename); an existing one is replaced file by file,
    each an atomic replace and kernel.json last, so it is always either whole file."""
    if destination.is_symlink() or destination.is_file():
        destination.unlink()
    try:
        os.rename(source, destination)
        return
    except OSError:
        if not destination.is_dir():
            raise
    names = sorted((p.name for p in source.iterdir()), key=lambda n: n == "kernel.json")
    for name in names:
        os.replace(source / name, destination / name)
    for old in destination.iterdir():
        if old.name not in names:  # what an older spec had and this one does not
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)


def _remove_dead_staging(kernels: Path) -> None:
    """Staging dirs of processes that died (kill -9) before they cleaned up."""
    for entry in kernels.glob(f"{_STAGING}*"):
        pid = entry.name[len(_STAGING) :].partition("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def nbenv_kernelspecs(*, prefixes: Iterable[str] = ()) -> list[KernelSpecInfo]:
    """Every installed nbenv spec in Jupyter's kernel dirs (plus `PREFIX/share/jupyter/kernels`
    for each of `prefixes`), highest priority first. A name shadowed by another dir is listed
    once per dir: gc must see every copy."""
    found = []
    for kernels_dir in _kernel_dirs(prefixes):
        try:
            entries = sorted(kernels_dir.iterdir())
        except OSError:
            continue
        for entry in entries:
            info = _read_spec(entry)
            if info is not None:
                found.append(info)
    return found


def orphaned_kernelspecs(*, prefixes: Iterable[str] = ()) -> list[KernelSpecInfo]:
    """nbenv specs whose env is gone: what `gc` removes."""
    return [info for info in nbenv_kernelspecs(prefixes=prefixes) if not info.env_exists]


def broken_kernel_dirs(*, prefixes: Iterable[str] = ()) -> list[Path]:
    """Dirs named like nbenv's kernels that hold nothing but files nbenv writes there and
    no readable kernel.json: what a killed registration or removal leaves. Jupyter ignores
    them; `gc` removes them."""
    found = []
    for kernels_dir in _kernel_dirs(prefixes):
        for entry in sorted(kernels_dir.glob(f"{KERNEL_PREFIX}*")):
            if entry.is_symlink() or not entry.is_dir() or _read_spec(entry) is not None:
                continue
            names = {child.name for child in entry.iterdir()}
            if all(n == "kernel.json" or n.startswith("logo-") for n in names):
                found.append(entry)
    return found


def remove_kernelspec(spec: str | KernelSpecInfo, *, prefixes: Iterable[str] = ()) -> list[Path]:
    """Remove one spec (a KernelSpecInfo), or every nbenv spec of that kernel name; returns
    the directories removed (empty when there was none). Specs nbenv did not create are
    never removed: naming one raises KernelSpecError."""
    if isinstance(spec, KernelSpecInfo):
        name, targets = spec.name, [spec.resource_dir]
    else:
        name = spec
        targets = [i.resource_dir for i in nbenv_kernelspecs(prefixes=prefixes) if i.name == name]
        if not targets:
            foreign = [d / name for d in _kernel_dirs(prefixes) if (d / name).is_dir()]
            if foreign:
                raise KernelSpecError(
                    name,
                    str(foreign[0]),
                    "not created by nbenv; remove it with `jupyter kernelspec remove`",
                )
    removed = []
    for target in targets:
        try:
            if target.is_symlink():
                target.unlink()
            elif target.is_dir():
                shutil.rmtree(target)
            else:
                continue
        except OSError as exc:
            raise KernelSpecError(name, str(target), _reason(exc)) from None
        removed.append(target)
    return removed


# The env's kernel loads nbenv's magics itself, from a folder that holds nbenv's package and
# nothing else (appended last to sys.path: the env's own packages always win, and no other
# package of the host leaks in). Heavy work goes to the host nbenv (nbenv.cellenv).
_LAUNCH = (
    "import sys; sys.path[:1] = [p for p in sys.path[:1] if p]; sys.path.append({path!r}); "
    "from ipykernel import kernelapp; kernelapp.launch_new_instance()"
)


def _argv(python: str, python_version: str) -> list[str]:
    plain = [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    major, _, minor = python_version.partition(".")
    if (int(major), int(minor or 0)) < (3, 10):
        return plain  # nbenv's own code needs 3.10; such kernels run without the magics
    return [python, "-c", _LAUNCH.format(path=str(_host_path())), "-f", "{connection_file}",
            "--IPKernelApp.extensions=['nbenv']"]  # fmt: skip


def _host_path() -> Path:
    from nbenv.paths import nbenv_home

    folder = nbenv_home() / "kernel-host"
    link = folder / "nbenv"
    package = Path(__file__).resolve().parent
    if not (link.is_symlink() and link.resolve() == package):
        folder.mkdir(parents=True, exist_ok=True)
        temp = folder / f".nbenv-{os.getpid()}"
        temp.unlink(missing_ok=True)
        temp.symlink_to(package, target_is_directory=True)
        os.replace(temp, link)
    return folder


def installed_spec(kname: str, *, prefix: str | None = None) -> KernelSpecInfo | None:
    """The nbenv spec named `kname` where `install_kernelspec` puts it (the user's data dir,
    or under `prefix`), read directly: no scan of every kernel directory."""
    from jupyter_core.paths import jupyter_data_dir

    base = Path(prefix, "share", "jupyter") if prefix else Path(jupyter_data_dir())
    resource_dir = base / "kernels" / kname
    return _read_spec(resource_dir) if (resource_dir / "kernel.json").is_file() else None


def _kernel_dirs(prefixes: Iterable[str]) -> list[Path]:
    # KernelSpecManager's default kernel_dirs, without importing jupyter_client (a listing
    # of envs would pay its whole import): Jupyter's data path, then IPython's old dir.
    from jupyter_core.paths import jupyter_path

    dirs = [Path(d) for d in jupyter_path("kernels")]
    ipython_dir = os.environ.get("IPYTHONDIR") or os.path.join(os.path.expanduser("~"), ".ipython")
    dirs.append(Path(ipython_dir, "kernels"))
    dirs += [Path(p, "share", "jupyter", "kernels") for p in prefixes]
    unique: dict[str, Path] = {}
    for d in dirs:
        unique.setdefault(os.path.realpath(d), d)
    return list(unique.values())


def _read_spec(resource_dir: Path) -> KernelSpecInfo | None:
    """The spec in `resource_dir` if it is a readable nbenv spec, else None."""
    if not _VALID.match(resource_dir.name):
        return None  # jupyter_client would not list it either
    try:
        data = json.loads((resource_dir / "kernel.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    meta = data.get("metadata") if isinstance(data, dict) else None
    nb = meta.get("nbenv") if isinstance(meta, dict) else None
    if not isinstance(nb, dict):
        return None
    argv = data.get("argv")
    python = Path(argv[0]) if isinstance(argv, list) and argv and isinstance(argv[0], str) else None
    env_dir = _path_or_none(nb.get("env_dir"))
    requirements = nb.get("requirements")
    return KernelSpecInfo(
        name=resource_dir.name,
        resource_dir=resource_dir,
        display_name=str(data.get("display_name", resource_dir.name)),
        env_id=str(nb.get("env_id", "")),
        env_name=nb["name"] if isinstance(nb.get("name"), str) else None,
        env_dir=env_dir,
        python=python,
        requirements=tuple(str(r) for r in requirements) if isinstance(requirements, list) else (),
        lock_path=_path_or_none(nb.get("lock_path")),
        env_exists=bool(env_dir and env_dir.is_dir() and python and python.exists()),
    )


def _path_or_none(value: object) -> Path | None:
    return Path(value) if isinstance(value, str) and value else None


def _slug(name: str) -> str:
    # "Café ML!" -> "cafe-ml": accents folded, anything else outside the rule becomes "-"
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9._-]+", "-", ascii_name.lower())
    slug = re.sub(r"-{2,}", "-", slug).strip("-._")
    return slug[:_NAME_CHARS].rstrip("-._")


def _copy_logos(target: Path) -> None:
    """ipykernel's logos, so the picker shows the Python logo; skipped when unavailable."""
    found = importlib.util.find_spec("ipykernel")  # found, not imported: it is heavy
    locations = list(found.submodule_search_locations or []) if found else []
    if not locations:
        return
    for logo in sorted(Path(locations[0], "resources").glob("logo-*")):
        with contextlib.suppress(OSError):  # a spec without a logo still works
            shutil.copyfile(logo, target / logo.name)


def _reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied (install with --user, or choose a --prefix you can write)"
    return exc.strerror or str(exc)
