"""Is an env outdated? Resolve what it was asked for again (fresh index pages) and compare
with its lock; upgrading builds the env of the new lock (a new env id: envs never change in
place) and moves the old env's name and kernel to it.
"""

from __future__ import annotations

from dataclasses import dataclass

from nbenv.errors import UsageError
from nbenv.lock import Lock, load_lock
from nbenv.report import Reporter
from nbenv.resolve.cache import CachePolicy
from nbenv.spec import EnvRequest, parse_requirement
from nbenv.store import LOCK_FILE, Store

__all__ = ["Outdated", "check_outdated", "request_of", "upgrade_env"]


@dataclass(frozen=True)
class Outdated:
    env_id: str
    new_env_id: str  # the env id the requirements resolve to today
    changes: tuple[str, ...]  # `alpha 1.0 -> 2.0`, `+ delta 1.0`, `- gamma 1.1`

    @property
    def up_to_date(self) -> bool:
        return self.new_env_id == self.env_id or not self.changes


def request_of(store: Store, env_id: str) -> EnvRequest:
    """The request an env was built from, as its record keeps it (indexes without their
    credentials: ~/.netrc or pip's settings supply them again)."""
    record = store.record(env_id)
    if record.kind != "pypi":
        raise UsageError(
            f"Environment {env_id} is a {record.kind} env; checking it for updates is only "
            "supported for PyPI envs so far."
        )
    if not record.requirements:
        raise UsageError(
            f"Environment {env_id} was built from a lock file, not from requirements: there "
            "is nothing to resolve again. Lock again and `nbenv create --lock FILE`."
        )
    indexes = record.indexes
    return EnvRequest(
        requirements=tuple(parse_requirement(r) for r in record.requirements),
        index_url=indexes[0] if indexes else None,
        extra_index_urls=tuple(indexes[1:]),
        pythons=(".".join(record.python.split(".")[:2]),),
        name=record.name,
    )


def _kernel_env(lock: Lock) -> bool:
    return any(str(p.name) == "ipykernel" for p in lock.pylock.packages)


def check_outdated(store: Store, env_id: str, *, reporter: Reporter | None = None) -> Outdated:
    """Resolve the env's requirements again, refetching index pages, and diff the locks."""
    from nbenv.envs import target_for, with_kernel_requirements
    from nbenv.interpreters import find_interpreter
    from nbenv.lock import build_lock
    from nbenv.notebook import version_changes
    from nbenv.resolve.pypi import resolve

    request = request_of(store, env_id)
    old = load_lock(store.path(env_id) / LOCK_FILE)
    record = store.record(env_id)
    interpreter = find_interpreter(record.base_interpreter)
    full = with_kernel_requirements(request) if _kernel_env(old) else request
    resolutions = resolve(
        full, policy=CachePolicy.REFRESH, reporter=reporter, targets=[target_for(interpreter)]
    )
    new = build_lock(resolutions, request)
    return Outdated(env_id, new.env_id, version_changes(old, new))


def upgrade_env(store: Store, env_id: str, *, reporter: Reporter | None = None) -> str:
    """Build the env its requirements resolve to today; its names follow it. Returns the
    new env id (the same one when nothing changed). The old env stays until removed."""
    from nbenv.envs import BuildOptions, create_env

    request = request_of(store, env_id)
    old = load_lock(store.path(env_id) / LOCK_FILE)
    names = [n for n, i in store.aliases().items() if i == env_id]
    record = store.record(env_id)
    options = BuildOptions(
        python=record.base_interpreter,
        policy=CachePolicy.REFRESH,
        register_kernel=_kernel_env(old),
    )
    result = create_env(request, options, store=store, reporter=reporter)
    for name in names:
        store.set_alias(name, result.record.env_id)
    return result.record.env_id
