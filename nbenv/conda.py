"""Solved conda packages -> a conda prefix (py-rattler fetches, verifies and links), and
the environment variables that activate it.

Decisions:
- `install_prefix` installs the full solved set: rattler makes the prefix match the records
  exactly. Packages come from rattler's cache under NBENV cache `conda/pkgs` (keyed by
  sha256), so a rebuild needs no channel once they are there. Link scripts never run.
- A prefix is built where it will not stay (the store renames a finished build into place):
  `final_prefix` is the path written into files that embed their prefix.
- Credentials are not in a solution: `channels` (as the user gave them, with userinfo or a
  conda token) supply them through the client (`channel_client`), else rattler's auth
  storage does; no URL rattler sees or writes (conda-meta, its caches) holds them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

from nbenv.conda_check import check_packages
from nbenv.errors import CondaInstallError, NbenvError, UsageError
from nbenv.paths import cache_dir as default_cache_dir
from nbenv.report import NullReporter, Reporter
from nbenv.resolve.conda import CondaPackage, CondaSolution
from nbenv.resolve.conda_dists import dists_in_paths
from nbenv.resolve.conda_runtime import channel_client, error_summary, run_async

if TYPE_CHECKING:
    import rattler

__all__ = [
    "activation_env",
    "install_prefix",
    "kernelspec_env",
    "prefix_python_dists",
    "read_rattler_lock",
    "write_rattler_lock",
]

_LINK_STAGE = "linking conda packages"
# Variables a shell sets for itself; never part of an activation.
_SHELL_OWN = frozenset({"_", "PWD", "OLDPWD", "SHLVL"})


def install_prefix(
    solution: CondaSolution,
    prefix: Path,
    *,
    cache_dir: Path | None = None,
    reporter: Reporter | None = None,
    channels: Sequence[str] = (),
    final_prefix: Path | None = None,
) -> None:
    """Make `prefix` hold exactly the solution's packages."""
    import rattler

    reporter = reporter or NullReporter()
    here = str(rattler.Subdir.current())
    if solution.platform != here:
        raise UsageError(
            f"This conda solution is for {solution.platform}; it cannot be installed on "
            f"{here}. Solve without --platform to build an environment here."
        )
    records = [p.to_record() for p in solution.packages]
    pkgs = (cache_dir or default_cache_dir()) / "conda" / "pkgs"
    reporter.stage("installing conda packages")
    try:
        with channel_client(channels) as client:
            # rattler aborts the process on a path outside the prefix: refuse those first
            check_packages(solution.packages, pkgs, client, str(final_prefix or prefix))
            run_async(
                rattler.install(
                    records,
                    target_prefix=prefix,
                    cache_dir=pkgs,
                    client=client,
                    execute_link_scripts=False,  # arbitrary code; nbenv never runs it
                    show_progress=False,
                    reporter=_progress(reporter, len(records)),
                    alternative_target_prefix=final_prefix,
                )
            )
    except NbenvError:
        raise
    except Exception as exc:  # rattler has one exception class per failure kind
        raise CondaInstallError(str(final_prefix or prefix), _reason(exc)) from None


def _reason(exc: Exception) -> str:
    reason = error_summary(exc)
    if re.search(r"error sending request|Connect|dns error", str(exc)):
        reason += ". The package is not in nbenv's conda cache and its channel cannot be reached"
    return reason


def _progress(reporter: Reporter, total: int) -> rattler.InstallerReporter:
    """rattler's install callbacks -> our Reporter (called from rattler's threads).

    Not a subclass of rattler's protocol: rattler calls only the methods a reporter has,
    and the protocol's no-op defaults would be six calls a package, each taking the GIL."""

    class Progress:
        linked = 0

        def on_link_complete(self, index: int) -> None:
            self.linked += 1
            reporter.progress(_LINK_STAGE, self.linked, total)

    return cast("rattler.InstallerReporter", Progress())


def activation_env(prefix: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables that activate `prefix`, over `base` (default: this process's env).

    PATH and LD_LIBRARY_PATH (Linux: libraries of packages built without an RPATH, and
    wheels from the PyPI pass that link to conda's libraries, find them) are prepended to
    `base`'s; pass `base={"PATH": "${PATH}"}` for a kernelspec, which jupyter_client fills
    in at launch. `etc/conda/env_vars.d` and `conda-meta/state` variables are read, and
    `etc/conda/activate.d/*.sh` scripts (GDAL_DATA, MPI settings...) run once in bash.
    """
    prefix = Path(prefix)
    given = dict(os.environ) if base is None else dict(base)
    env = {"CONDA_PREFIX": str(prefix), "PATH": _prepend(_bin_dirs(prefix), given.get("PATH"))}
    if sys.platform.startswith("linux"):
        env["LD_LIBRARY_PATH"] = _prepend([prefix / "lib"], given.get("LD_LIBRARY_PATH"))
    env.update(_env_vars(prefix))
    scripts = sorted((prefix / "etc" / "conda" / "activate.d").glob("*.sh"))
    if scripts and os.name == "posix":
        env.update(_scripted(prefix, scripts, {**os.environ, **given, **env}))
    return env


def kernelspec_env(prefix: Path) -> dict[str, str]:
    """The activation of `prefix` as a kernelspec's `env`: PATH extends the launcher's
    (`${PATH}`, which jupyter_client fills in); LD_LIBRARY_PATH is the prefix's `lib` alone,
    since a kernelspec cannot extend a variable that may be unset (it would keep the literal
    `${LD_LIBRARY_PATH}`)."""
    prefix = Path(prefix)
    env = activation_env(prefix)
    env["PATH"] = _prepend(_bin_dirs(prefix), "${PATH}")
    if "LD_LIBRARY_PATH" in env:
        env["LD_LIBRARY_PATH"] = str(prefix / "lib")
    return env


def _bin_dirs(prefix: Path) -> list[Path]:
    if os.name == "nt":  # conda's Windows layout
        library = prefix / "Library"
        return [prefix, library / "mingw-w64" / "bin", library / "usr" / "bin",
                library / "bin", prefix / "Scripts", prefix / "bin"]  # fmt: skip
    return [prefix / "bin"]


def _prepend(paths: Sequence[Path], current: str | None) -> str:
    return os.pathsep.join([*map(str, paths), *([current] if current else [])])


def _env_vars(prefix: Path) -> dict[str, str]:
    """Variables packages (`env_vars.d/*.json`) and the user (`conda-meta/state`) declare."""
    found: dict[str, str] = {}
    sources = sorted((prefix / "etc" / "conda" / "env_vars.d").glob("*.json"))
    for path in [*sources, prefix / "conda-meta" / "state"]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if path.name == "state":
            data = data.get("env_vars", {}) if isinstance(data, dict) else {}
        if isinstance(data, dict):
            found.update({str(k): str(v) for k, v in data.items()})
    return found


def _scripted(prefix: Path, scripts: Sequence[Path], env: dict[str, str]) -> dict[str, str]:
    """What sourcing the activation scripts changes, as `conda activate` would source them."""
    sources = "".join(f'. "{script}" >/dev/null 2>&1\n' for script in scripts)
    command = ["bash", "--noprofile", "--norc", "-c", sources + "env -0"]
    try:
        done = subprocess.run(command, env=env, cwd=prefix, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}  # no bash: the static variables still activate the prefix
    after = dict(
        item.split("=", 1)
        for item in done.stdout.decode(errors="replace").split("\0")
        if "=" in item
    )
    return {k: v for k, v in after.items() if k not in _SHELL_OWN and env.get(k) != v}


def prefix_python_dists(prefix: Path) -> dict[str, str]:
    """normalized name -> version of the Python dists the prefix's conda packages installed
    (from `conda-meta/*.json`, which list every file)."""
    found: dict[str, str] = {}
    for record in sorted((Path(prefix) / "conda-meta").glob("*.json")):
        try:
            files = json.loads(record.read_text(encoding="utf-8")).get("files", [])
        except (OSError, ValueError, AttributeError):
            continue
        found.update(dists_in_paths(str(f) for f in files))
    return dict(sorted(found.items()))


# -- rattler's lock file (pixi.lock format), for tools that read it -----------------------


def write_rattler_lock(
    solutions: Sequence[CondaSolution], path: Path, name: str = "default"
) -> None:
    """Write the solutions (one per platform) as a rattler lock file (pixi's format)."""
    import rattler

    platforms = [
        rattler.LockPlatform(s.platform, virtual_packages=list(s.virtual_packages))
        for s in solutions
    ]
    lock = rattler.LockFile(platforms)
    channels = dict.fromkeys(c for s in solutions for c in s.channels)
    lock.set_channels(name, [rattler.LockChannel(c) for c in channels])
    for platform, solution in zip(platforms, solutions, strict=True):
        for package in solution.packages:
            lock.add_conda_package(name, platform, package.to_record())
    lock.to_path(path)


def read_rattler_lock(path: Path, platform: str, name: str = "default") -> list[CondaPackage]:
    """The packages a rattler lock file holds for `platform`."""
    import rattler

    lock = rattler.LockFile.from_path(path)
    environment = lock.environment(name)
    chosen = next((p for p in lock.platforms() if p.name == platform), None)
    if environment is None or chosen is None:
        return []
    records = environment.conda_repodata_records_for_platform(chosen) or []
    return sorted((CondaPackage.from_record(r) for r in records), key=lambda p: p.name)
