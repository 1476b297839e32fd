"""Conda and mixed (conda + PyPI) envs in the store: solve, build, register the kernel.

The sibling of `nbenv.envs.create_env` for requests with conda specs; same store, same
atomic build (temp dir + rename under the env's lock), same kernelspecs. An env dir holds
the conda prefix, `conda-lock.json` (the solution and, when there is one, the PyPI pass)
and `pylock.toml` (the PyPI pass alone, as for every env).

Where the kernel's Python comes from:
- the conda specs bring `python` (asked for, or pulled in by a package): that interpreter
  runs the kernel; ipykernel/ipywidgets come from conda when the specs include them, else
  from PyPI into the same prefix;
- they bring only native packages: a venv of the chosen interpreter (`--python`) is made in
  the prefix itself (its `bin/` is conda's `bin/`), PyPI packages go into the venv, and the
  kernel runs with the prefix active (PATH, LD_LIBRARY_PATH, CONDA_PREFIX, activate.d).
- no PyPI requirement and no kernel (`--no-kernel`): the conda prefix alone.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from nbenv.envs import (
    KERNEL_REQUIREMENTS,
    BuildOptions,
    CreateResult,
    build_in_store,
    install_lock,
    reuse_remembered,
    target_for,
)
from nbenv.errors import NbenvError, UsageError
from nbenv.interpreters import Interpreter, find_interpreter
from nbenv.linking import LinkMode
from nbenv.net.auth import Credentials, strip_userinfo
from nbenv.net.http import HttpClient
from nbenv.paths import cache_dir
from nbenv.report import NullReporter, Reporter
from nbenv.resolve.conda_model import CondaRequest
from nbenv.resolve.mixed import CONDA_LOCK_FILE, MixedLock, resolve_mixed
from nbenv.settings import IndexSettings, effective_indexes, read_pip_settings
from nbenv.spec import EnvRequest
from nbenv.store import EnvRecord, Store

__all__ = ["conda_request_key", "create_conda_env", "env_kind", "load_env_lock"]


def env_kind(request: EnvRequest, lock: MixedLock | None = None) -> str:
    """`mixed` when the user asked PyPI for something (in the request, or in the request a
    given lock records), else `conda`: the kernel packages nbenv adds do not make it mixed."""
    asked: object = ()
    if lock is not None and lock.pypi is not None:
        asked = ((lock.pypi.pylock.tool or {}).get("nbenv") or {}).get("requirements", ())
    return "mixed" if request.requirements or asked else "conda"


def load_env_lock(env_dir: Path) -> MixedLock | None:
    """The conda lock of a store env; None for a PyPI-only env."""
    path = env_dir / CONDA_LOCK_FILE
    return MixedLock.load(path) if path.is_file() else None


def conda_request_key(
    conda: CondaRequest,
    request: EnvRequest,
    interpreter: Interpreter | None,
    indexes: Sequence[str],
    *,
    kernel: bool,
) -> str:
    """Identifies a conda request on this machine, to find its env again offline."""
    data = {
        "kind": "conda",
        "kernel": kernel,
        "conda": sorted(conda.specs),
        "channels": [strip_userinfo(c) for c in conda.public_channels],
        "virtual": [conda.cuda, conda.glibc, conda.osx],
        "requirements": sorted(str(r) for r in request.requirements),
        "pre": request.pre,
        "indexes": [strip_userinfo(i) for i in indexes],
        "python": str(interpreter.path) if interpreter else None,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]


def create_conda_env(
    conda: CondaRequest,
    request: EnvRequest,
    options: BuildOptions | None = None,
    *,
    lock: MixedLock | None = None,
    store: Store | None = None,
    reporter: Reporter | None = None,
    kind: str | None = None,
) -> CreateResult:
    """Build (or find) the env of `conda` + `request` (or of a given `lock`: no solve, no
    resolution; its packages come from the caches when they are there)."""
    start = time.perf_counter()
    steps: list[tuple[str, float]] = []
    options = options or BuildOptions()
    reporter = reporter or NullReporter()
    store = store or Store()
    if not conda.is_native:
        raise UsageError(
            f"--platform {conda.subdir} locks for another machine; an env is built for this one"
        )
    if request.platforms:
        raise UsageError("--platform locks for another machine; an env is built for this one")
    wanted = options.python or (request.pythons[0] if request.pythons else None)
    interpreter = _interpreter(wanted)
    register_kernel = options.register_kernel
    # a bare conda prefix has no PyPI pass: pip's settings (and the indexes) do not matter
    pypi_pass = bool(request.requirements) or register_kernel
    settings = read_pip_settings() if pypi_pass else None
    indexes = (
        effective_indexes(request.index_url, request.extra_index_urls, settings)
        if settings is not None
        else ()
    )
    key = conda_request_key(conda, request, interpreter, indexes, kernel=register_kernel)
    kind = kind or env_kind(request, lock)
    given = lock
    if given is None:
        found = reuse_remembered(store, key, request, start, options)
        if found is not None:
            return found

    pip = settings or IndexSettings()  # no PyPI part: pip's defaults
    client = HttpClient.for_index_settings(pip, Credentials([*indexes, *pip.find_links]))
    try:
        if given is not None:
            mixed = given
        else:
            mixed = resolve_mixed(
                conda,
                request,
                base=target_for(interpreter) if interpreter is not None else None,
                kernel_requirements=KERNEL_REQUIREMENTS if register_kernel else (),
                policy=options.policy,
                reporter=reporter,
                client=client,
                settings=settings,
            )
        steps.append(("resolve", time.perf_counter() - start))
        if mixed.layered and interpreter is None:
            raise UsageError(f"No interpreter for --python {wanted} to layer a venv from")
        final = store.path(mixed.env_id)
        resolved = mixed

        def build(into: Path) -> EnvRecord:
            _build_prefix(into, final, resolved, conda, interpreter, client, reporter,
                          options.link_mode, steps)  # fmt: skip
            conda_python = resolved.conda.python_version
            return EnvRecord(
                env_id=resolved.env_id,
                name=request.name,
                requirements=(
                    *request.requirement_strings(),
                    *(f"conda: {s}" for s in conda.specs),
                ),
                python=conda_python or _version(interpreter),
                base_interpreter=str(final / "bin" / "python")
                if conda_python or interpreter is None
                else str(interpreter.path),
                created=time.time(),
                indexes=(*resolved.conda.channels, *(strip_userinfo(i) for i in indexes)),
                kind=kind,
            )

        result = build_in_store(store, mixed.env_id, build, request=request, start=start,
                                options=options, remember=key if given is None else None,
                                runs_python=mixed.pypi is not None,
                                on_built=client.close)  # fmt: skip
    finally:
        client.close()
    return replace(result, steps=tuple(steps))


def _interpreter(wanted: str | None) -> Interpreter | None:
    """The interpreter a venv would be layered from; conda's own python may make it moot,
    so one that cannot be found is only an error once a venv is needed."""
    try:
        return find_interpreter(wanted)
    except NbenvError:
        return None


def _version(interpreter: Interpreter | None) -> str:
    return ".".join(map(str, interpreter.version)) if interpreter else ""


def _build_prefix(
    build: Path,
    final: Path,
    mixed: MixedLock,
    conda: CondaRequest,
    interpreter: Interpreter | None,
    client: HttpClient,
    reporter: Reporter,
    link_mode: LinkMode,
    steps: list[tuple[str, float]],
) -> None:
    from nbenv.conda import install_prefix

    t0 = time.perf_counter()
    install_prefix(mixed.conda, build, reporter=reporter, channels=conda.channels,
                   final_prefix=final, cache_dir=cache_dir())  # fmt: skip
    steps.append(("conda", time.perf_counter() - t0))
    if mixed.pypi is not None:
        if mixed.layered:
            assert interpreter is not None  # checked by the caller
            base = interpreter
        else:  # conda's python: wheels go into the prefix's own site-packages
            base = _conda_interpreter(build, mixed.conda.python_version or "")
            if not base.path.exists():
                raise NbenvError(f"The conda package python left no {base.path} in the prefix")
        from nbenv.fetch import Fetcher

        with Fetcher(client, cache_dir(), reporter=reporter) as fetcher:
            install_lock(build, final, mixed.pypi, base, fetcher, reporter, link_mode, steps,
                         make_venv=mixed.layered)  # fmt: skip
    (build / CONDA_LOCK_FILE).write_text(mixed.dumps(), encoding="utf-8")


def _conda_interpreter(prefix: Path, version: str) -> Interpreter:
    numbers = [int(n) for n in re.findall(r"\d+", version)[:3]] + [0, 0, 0]
    return Interpreter(prefix / "bin" / "python", (numbers[0], numbers[1], numbers[2]), "cpython")
