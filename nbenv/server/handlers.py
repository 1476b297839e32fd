"""REST handlers under `<base_url>nbenv/api/`: the same core calls as the CLI.

GET    envs                         every env (describe_envs)
GET    envs/<ref>                   one env, with its packages (describe_env)
DELETE envs/<ref>[?force=1]         remove it and its kernelspecs (409 while in use)
POST   envs/<ref>/kernel            (re)register its kernelspec
GET    envs/<ref>/export?format=F   its lock as requirements / pylock / environment-yml / ...
POST   gc  {"older_than_days": N, "dry_run": bool}
GET    notebook?path=P              the envs a notebook's lock pins (P relative to the root)
GET    notebook/export?path=P&format=F[&env=KEY]

Every handler is authenticated (the server's token or login cookie; XSRF is checked on
writes by jupyter_server). Env references are names, ids or id prefixes and never paths;
notebook paths stay inside the server's root directory.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

from jupyter_server.base.handlers import APIHandler
from tornado import web

from nbenv.errors import NbenvError, UsageError

if TYPE_CHECKING:
    from nbenv.lock import Lock
    from nbenv.resolve.mixed import MixedLock

__all__ = ["routes"]

_T = TypeVar("_T")
# What an env name or id looks like (kernels.py and the store's names): never a path.
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SUFFIXES = {
    "requirements": "requirements.txt",
    "pylock": "pylock.toml",
    "environment-yml": "environment.yml",
    "metaflow": "metaflow.py",
}


class _Handler(APIHandler):
    async def _run(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Blocking core work (directory walks, removals) off the server's event loop; nbenv
        errors become JSON errors a person can act on."""
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, functools.partial(fn, *args, **kwargs)
            )
        except web.HTTPError:
            raise
        except UsageError as exc:
            raise web.HTTPError(400, "%s", str(exc)) from None
        except NbenvError as exc:
            raise web.HTTPError(409, "%s", str(exc)) from None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # jupyter_server puts an HTTPError's log_message in the JSON without its arguments;
        # messages here are always "%s"-formatted (an env name may contain "%").
        exc = kwargs.get("exc_info", (None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.log_message and exc.args:
            self.set_status(status_code)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"message": exc.log_message % exc.args, "reason": None}))
            return
        super().write_error(status_code, **kwargs)

    def _reply(self, data: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def _body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            data = json.loads(self.request.body)
        except ValueError:
            raise web.HTTPError(400, "the request body is not JSON") from None
        if not isinstance(data, dict):
            raise web.HTTPError(400, "the request body should be a JSON object")
        return data

    def _notebook(self, path: str | None) -> tuple[str, Path]:
        """A notebook path relative to the server's root dir -> (that path, the file)."""
        if not path:
            raise web.HTTPError(400, "give the notebook as ?path=DIR/NAME.ipynb")
        pure = PurePosixPath(path.replace("\\", "/"))
        root = Path(self.settings["server_root_dir"]).expanduser().resolve()
        if pure.is_absolute() or ".." in pure.parts or "\x00" in path:
            raise web.HTTPError(400, "%s is outside the server's root directory", path)
        full = (root / pure).resolve()
        if not full.is_relative_to(root):  # a symlink that leads out
            raise web.HTTPError(400, "%s is outside the server's root directory", path)
        if full.suffix != ".ipynb":
            raise web.HTTPError(400, "%s is not a notebook (.ipynb)", path)
        if not full.is_file():
            raise web.HTTPError(404, "no notebook %s", path)
        return pure.as_posix(), full


def _env_id(ref: str) -> str:
    from nbenv.store import Store

    if not _REF.fullmatch(ref) or ".." in ref:
        raise web.HTTPError(404, "no environment %r: not a name or an id", ref)
    try:
        return Store().resolve_ref(ref)
    except UsageError as exc:
        raise web.HTTPError(404, "%s", str(exc)) from None


def _one(ref: str) -> dict[str, Any]:
    from nbenv.envs import describe_env
    from nbenv.store import Store

    return describe_env(Store(), _env_id(ref))


def _remove(ref: str, force: bool) -> dict[str, Any]:
    from nbenv.envs import remove_env
    from nbenv.store import Store

    env_id = _env_id(ref)
    kernels = remove_env(Store(), env_id, force=force)
    return {"removed": env_id, "kernels": kernels}


def _kernel(ref: str) -> dict[str, Any]:
    from nbenv.envs import ensure_kernel
    from nbenv.store import Store

    spec = ensure_kernel(Store(), _env_id(ref))
    return {"kernel": spec.name, "display_name": spec.display_name}


def _export_env(ref: str, fmt: str) -> dict[str, Any]:
    from nbenv.export import export_lock, find_export_source

    env_id = _env_id(ref)
    source = find_export_source(env_id)
    label = source.name or env_id[:12]
    return {"env_id": env_id, "format": fmt, "text": export_lock(source, fmt),
            "filename": f"{label}-{_SUFFIXES.get(fmt, fmt)}"}  # fmt: skip


def _gc(older_than_days: float | None, dry_run: bool) -> dict[str, Any]:
    from nbenv.envs import gc
    from nbenv.store import Store

    return asdict(gc(Store(), older_than_days=older_than_days, dry_run=dry_run))


def _notebook_lock(rel: str, notebook: Path) -> dict[str, Any]:
    from nbenv.notebook_lock import notebook_location, open_lock
    from nbenv.store import Store

    location = notebook_location(notebook)
    lock = open_lock(location)
    store = Store()
    envs = []
    for key, entry in sorted(lock.entries.items()):
        packages = _locked_packages(entry.lock)
        envs.append({"key": key, "declared": entry.declared, "env_id": entry.env_id,
                     "built": store.exists(entry.env_id), "packages": packages})  # fmt: skip
    lock_file = PurePosixPath(rel).with_name(location.path.name).as_posix()
    return {"path": rel, "lock_file": lock_file, "exists": location.path.is_file(),
            "envs": envs}  # fmt: skip


def _locked_packages(lock: Lock | MixedLock) -> list[dict[str, str]]:
    """A notebook lock entry's packages, conda ones first (as `nbenv show` lists them)."""
    from nbenv.resolve import mixed  # lazily: the server starts without rattler loaded

    found = []
    if isinstance(lock, mixed.MixedLock):
        found += [{"name": p.name, "version": p.version, "source": "conda"}
                  for p in lock.conda.packages]  # fmt: skip
        pypi = lock.pypi
    else:
        pypi = lock
    if pypi is not None:
        found += [{"name": str(p.name), "version": str(p.version), "source": "pypi"}
                  for p in pypi.pylock.packages]  # fmt: skip
    return found


def _export_notebook(notebook: Path, fmt: str, env: str | None) -> dict[str, Any]:
    from nbenv.export import export_lock, find_export_source

    source = find_export_source(str(notebook), env=env)
    return {"env_id": source.lock.env_id, "format": fmt, "text": export_lock(source, fmt),
            "filename": f"{notebook.stem}-{_SUFFIXES.get(fmt, fmt)}"}  # fmt: skip


def _format(handler: _Handler) -> str:
    from nbenv.export import FORMATS

    fmt = handler.get_query_argument("format", "requirements")
    if fmt not in FORMATS:
        raise web.HTTPError(400, "unknown format %r; choose one of %s", fmt, ", ".join(FORMATS))
    return fmt


class EnvsHandler(_Handler):
    @web.authenticated
    async def get(self) -> None:
        from nbenv.envs import describe_envs

        self._reply({"envs": await self._run(describe_envs)})


class EnvHandler(_Handler):
    @web.authenticated
    async def get(self, ref: str) -> None:
        self._reply(await self._run(_one, ref))

    @web.authenticated
    async def delete(self, ref: str) -> None:
        force = self.get_query_argument("force", "0") in ("1", "true")
        self._reply(await self._run(_remove, ref, force))


class KernelHandler(_Handler):
    @web.authenticated
    async def post(self, ref: str) -> None:
        self._reply(await self._run(_kernel, ref))


class ExportHandler(_Handler):
    @web.authenticated
    async def get(self, ref: str) -> None:
        self._reply(await self._run(_export_env, ref, _format(self)))


class GcHandler(_Handler):
    @web.authenticated
    async def post(self) -> None:
        body = self._body()
        days = body.get("older_than_days")
        dry_run = body.get("dry_run", False)
        if days is not None and (isinstance(days, bool) or not isinstance(days, int | float)):
            raise web.HTTPError(400, "older_than_days should be a number of days or null")
        if not isinstance(dry_run, bool):
            raise web.HTTPError(400, "dry_run should be true or false")
        self._reply(await self._run(_gc, None if days is None else float(days), dry_run))


class NotebookHandler(_Handler):
    @web.authenticated
    async def get(self) -> None:
        rel, notebook = self._notebook(self.get_query_argument("path", None))
        self._reply(await self._run(_notebook_lock, rel, notebook))


class NotebookExportHandler(_Handler):
    @web.authenticated
    async def get(self) -> None:
        _rel, notebook = self._notebook(self.get_query_argument("path", None))
        env = self.get_query_argument("env", None)
        self._reply(await self._run(_export_notebook, notebook, _format(self), env))


def routes(base_url: str) -> list[tuple[str, type[_Handler]]]:
    api = base_url.rstrip("/") + "/nbenv/api"
    ref = r"([^/]+)"  # checked by _env_id: a 404 with a JSON error, not tornado's HTML one
    return [
        (rf"{api}/envs/?", EnvsHandler),
        (rf"{api}/envs/{ref}/?", EnvHandler),
        (rf"{api}/envs/{ref}/kernel/?", KernelHandler),
        (rf"{api}/envs/{ref}/export/?", ExportHandler),
        (rf"{api}/gc/?", GcHandler),
        (rf"{api}/notebook/?", NotebookHandler),
        (rf"{api}/notebook/export/?", NotebookExportHandler),
    ]
