"""The inspector's data and actions, from the same core calls as the CLI: `describe_envs` /
`describe_env` (nbenv list / show), `envinfo.env_packages`, `remove_env`, `gc`,
`ensure_kernel`, `export_lock`, `upgrade.check_outdated` / `upgrade_env`. Pure data and
plain functions: the widget app and the static HTML only present them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nbenv.envinfo import EnvPackages, env_packages
from nbenv.report import Reporter, format_bytes
from nbenv.store import LOCK_FILE, Store

__all__ = [
    "SORT_KEYS",
    "EnvDetail",
    "EnvRow",
    "Overview",
    "Plan",
    "ago",
    "env_detail",
    "overview",
    "plan_gc",
    "plan_kernel",
    "plan_remove",
    "plan_upgrade",
]


@dataclass(frozen=True)
class EnvRow:
    """One env as `nbenv list --json` describes it."""

    env_id: str
    name: str | None
    kind: str
    python: str
    packages: int
    size: int | None  # bytes on disk, each hardlinked file once (None: not measured yet)
    size_unique: int | None  # what removing it frees
    created: float
    last_used: float
    notebooks: tuple[str, ...]
    kernel: str | None
    kernel_display_name: str | None
    path: str
    requirements: tuple[str, ...]

    @classmethod
    def from_description(cls, info: Mapping[str, Any]) -> EnvRow:
        packages = info.get("packages", 0)
        return cls(
            env_id=str(info["env_id"]),
            name=info.get("name"),
            kind=str(info.get("kind", "pypi")),
            python=str(info.get("python", "")),
            packages=packages if isinstance(packages, int) else len(packages),
            size=_int_or_none(info.get("size")),
            size_unique=_int_or_none(info.get("size_unique")),
            created=float(info.get("created", 0.0)),
            last_used=float(info.get("last_used", 0.0)),
            notebooks=tuple(info.get("notebooks", ())),
            kernel=info.get("kernel"),
            kernel_display_name=info.get("kernel_display_name"),
            path=str(info.get("path", "")),
            requirements=tuple(info.get("requirements", ())),
        )

    @property
    def label(self) -> str:
        return self.name or self.env_id[:12]

    def matches(self, query: str) -> bool:
        """Every word of `query` appears in some field (name, id, kind, python, kernel,
        notebooks, requirements); case-insensitive."""
        haystack = " ".join(
            [self.name or "", self.env_id, self.kind, self.python, self.kernel or "",
             self.kernel_display_name or "", *self.notebooks, *self.requirements]
        ).lower()  # fmt: skip
        return all(word in haystack for word in query.lower().split())


def _int_or_none(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) else None


# label -> (key, descending by default)
SORT_KEYS: dict[str, tuple[Callable[[EnvRow], Any], bool]] = {
    "last used": (lambda r: r.last_used, True),
    "name": (lambda r: (r.name is None, (r.name or r.env_id).lower()), False),
    "size": (lambda r: -1 if r.size is None else r.size, True),
    "frees": (lambda r: -1 if r.size_unique is None else r.size_unique, True),
    "packages": (lambda r: r.packages, True),
    "created": (lambda r: r.created, True),
    "python": (lambda r: tuple(int(p) for p in r.python.split(".") if p.isdigit()), True),
    "kind": (lambda r: r.kind, False),
    "notebooks": (lambda r: len(r.notebooks), True),
}


@dataclass(frozen=True)
class Overview:
    rows: tuple[EnvRow, ...]
    read_at: float = field(default_factory=time.time)

    def view(self, query: str = "", sort: str = "last used", descending: bool | None = None
             ) -> list[EnvRow]:  # fmt: skip
        key, default = SORT_KEYS[sort]
        rows = [r for r in self.rows if r.matches(query)] if query.strip() else list(self.rows)
        return sorted(rows, key=key, reverse=default if descending is None else descending)

    @property
    def frees(self) -> int:
        return sum(r.size_unique or 0 for r in self.rows)

    @property
    def unmeasured(self) -> list[str]:
        """Env ids whose size is not known yet."""
        return [r.env_id for r in self.rows if r.size is None]

    def summary(self, shown: int | None = None) -> str:
        count = len(self.rows)
        if not count:
            return "no environments yet: declare one with %%pypi, or `nbenv create SPEC...`"
        part = f"{shown} of {count}" if shown is not None and shown != count else str(count)
        envs = f"{part} environment{'s' if count != 1 else ''}"
        pending = len(self.unmeasured)
        if pending == count:
            return f"{envs}; measuring their sizes…"
        measuring = f" (measuring {pending} more…)" if pending else ""
        return (
            f"{envs}; removing all would free {format_bytes(self.frees)}{measuring}; the "
            "shared wheel cache keeps the rest"
        )


def overview(store: Store | None = None, *, walk: bool = True) -> Overview:
    """Every env (`describe_envs`, as `nbenv list`); `walk=False` leaves the sizes not
    cached yet as None instead of measuring them first."""
    from nbenv.envs import describe_envs

    rows = describe_envs(store or Store(), walk=walk)
    return Overview(tuple(EnvRow.from_description(r) for r in rows))


def measure(env_ids: Sequence[str], store: Store | None = None) -> None:
    """Measure and cache the sizes of these envs (what `overview(walk=False)` left out)."""
    store = store or Store()
    for env_id in env_ids:
        if store.exists(env_id):
            store.cached_size(env_id)


@dataclass(frozen=True)
class EnvDetail:
    row: EnvRow
    packages: EnvPackages
    lock_text: str
    lock_path: str | None
    indexes: tuple[str, ...]


def env_detail(env_id: str, store: Store | None = None) -> EnvDetail:
    """`nbenv show` plus its packages' details, requirement tree and lock text."""
    from nbenv.envs import describe_env

    store = store or Store()
    info = describe_env(store, env_id)
    record = store.record(env_id)
    lock = store.path(env_id) / LOCK_FILE
    try:
        lock_text = lock.read_text(encoding="utf-8")
    except OSError:
        lock_text = ""
    packages = env_packages(store.path(env_id), record.requirements, record.python,
                            lock if lock_text else None)  # fmt: skip
    return EnvDetail(EnvRow.from_description(info), packages, lock_text, info.get("lock"),
                     tuple(info.get("indexes", ())))  # fmt: skip


def ago(timestamp: float, now: float | None = None) -> str:
    if not timestamp:
        return "-"
    seconds = max(0.0, (now or time.time()) - timestamp)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now"


# -- actions: what they would do (asked first), then done by the core ---------------------


@dataclass(frozen=True)
class Plan:
    """An action the user confirms: `question` says what will happen; `run()` does it and
    returns what happened."""

    action: str
    question: str
    run: Callable[[], str]
    danger: bool = True


def plan_remove(row: EnvRow, store: Store | None = None) -> Plan:
    from nbenv.envs import remove_env

    store = store or Store()
    uses = (
        f"; used by {', '.join(row.notebooks)} (their locks stay and rebuild it)"
        if (row.notebooks)
        else ""
    )
    kernel = f" and its kernel {row.kernel_display_name!r}" if row.kernel_display_name else ""

    def run() -> str:
        kernels = remove_env(store, row.env_id)
        gone = f" and kernel {', '.join(kernels)}" if kernels else ""
        return f"Removed environment {row.label} ({row.env_id}){gone}."

    frees = format_bytes(row.size_unique) if row.size_unique is not None else "its files"
    return Plan("remove", f"Remove environment {row.label} ({row.env_id}){kernel}? It frees "
                f"{frees}{uses}.", run)  # fmt: skip


def plan_gc(store: Store | None = None, older_than_days: float | None = None) -> Plan:
    from nbenv.envs import gc

    store = store or Store()
    would = gc(store, older_than_days=older_than_days, dry_run=True)
    items = [f"environment {e}" for e in would.envs]
    items += [f"orphaned kernel {k}" for k in would.kernels]
    items += [f"leftover build {p}" for p in would.leftovers]
    question = (
        f"Clean up: remove {'; '.join(items)}?" if items else "Nothing to clean up right now."
    )

    def run() -> str:
        done = gc(store, older_than_days=older_than_days)
        count = len(done.envs) + len(done.kernels) + len(done.leftovers)
        return (
            f"Cleaned up {count} item{'s' if count != 1 else ''}."
            if count
            else ("Nothing to clean.")
        )

    return Plan("gc", question, run, danger=bool(items))


def plan_kernel(row: EnvRow, store: Store | None = None) -> Plan:
    """Register the env's kernel, or unregister it when it has one."""
    from nbenv.envs import ensure_kernel
    from nbenv.kernels import nbenv_kernelspecs, remove_kernelspec

    store = store or Store()
    if row.kernel:

        def unregister() -> str:
            removed = [s.name for s in nbenv_kernelspecs()
                       if s.env_id == row.env_id and remove_kernelspec(s)]  # fmt: skip
            return f"Unregistered kernel {', '.join(removed) or '(none found)'}."

        return Plan("unregister kernel", f"Unregister the kernel {row.kernel_display_name!r} "
                    f"of {row.label}? The env stays.", unregister)  # fmt: skip

    def register() -> str:
        spec = ensure_kernel(store, row.env_id)
        return f"Registered kernel {spec.name} ({spec.display_name})."

    return Plan("register kernel", f"Register {row.label} as a Jupyter kernel?", register,
                danger=False)  # fmt: skip


def plan_upgrade(row: EnvRow, store: Store | None = None, reporter: Reporter | None = None
                 ) -> Plan:  # fmt: skip
    from nbenv.upgrade import upgrade_env

    store = store or Store()

    def run() -> str:
        new = upgrade_env(store, row.env_id, reporter=reporter)
        if new == row.env_id:
            return f"{row.label} is up to date."
        return (f"Built {new} with the newest versions"
                f"{f'; the name {row.name} now points to it' if row.name else ''}. "
                f"The old env {row.env_id} stays until you remove it.")  # fmt: skip

    return Plan("upgrade", f"Resolve {row.label}'s requirements again and build an env of the "
                "newest versions? (The old env is kept.)", run, danger=False)  # fmt: skip


def export_text(env_id: str, fmt: str) -> str:
    from nbenv.export import export_lock, find_export_source

    return export_lock(find_export_source(env_id), fmt)


def export_formats() -> Sequence[str]:
    from nbenv.export import FORMATS

    return FORMATS
