"""`nbenv` command line (also `jupyter nbenv`). Thin: parse, call the core, print."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from nbenv import __version__
from nbenv.errors import NbenvError, UsageError
from nbenv.net.auth import redact
from nbenv.report import NullReporter, Reporter, TerminalReporter
from nbenv.resolve.cache import CachePolicy
from nbenv.spec import EnvRequest, add_request_arguments, request_from_namespace

if TYPE_CHECKING:
    from nbenv.envs import BuildOptions, CreateResult
    from nbenv.resolve.conda_model import CondaRequest

__all__ = ["main"]

# A command allocates millions of short-lived objects (index pages, resolver states): at
# Python's default (700, 10, 10) a cold set B create spent 0.15-0.18 s of its main thread
# in 280-300 collections, holding the GIL the resolver and downloads wait on; at these
# thresholds 0.03 s in 34. A process of its own, which ends when the command does.
_GC_THRESHOLDS = (20_000, 20, 20)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _cache_options(parser: argparse.ArgumentParser) -> None:
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--refresh", action="store_true", help="refetch index pages")
    cache.add_argument("--offline", action="store_true", help="use only the local cache")


def _conda_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "conda", "Conda packages (solved first; PyPI SPECs then go into the same env)"
    )
    group.add_argument("--conda", action="append", default=[], metavar="SPEC",
                       help="a conda MatchSpec, e.g. 'openmpi=4.1.*' (repeatable)")  # fmt: skip
    group.add_argument(
        "-c",
        "--channel",
        action="append",
        default=[],
        dest="channels",
        metavar="CHANNEL",
        help="conda channel, name, URL or path (repeatable; default conda-forge)",
    )
    for option in ("cuda", "glibc", "osx"):
        group.add_argument(f"--{option}", metavar="VERSION",
                           help=f"assume this __{option} virtual package version")  # fmt: skip


def _conda_request(ns: argparse.Namespace, platform: str | None = None) -> CondaRequest | None:
    """The conda part of `create`/`lock`, through the `%%conda` grammar (None: no --conda)."""
    given = [o for o in ("channels", "cuda", "glibc", "osx") if getattr(ns, o)]
    if not ns.conda:
        if given:
            raise UsageError(f"--{given[0].rstrip('s')} is for conda packages: add --conda SPEC")
        return None
    from nbenv.resolve.conda import parse_conda_args

    argv = [*ns.conda]
    for channel in ns.channels:
        argv += ["-c", channel]
    for option in ("cuda", "glibc", "osx"):
        if getattr(ns, option):
            argv += [f"--{option}", getattr(ns, option)]
    if platform:
        argv += ["--platform", platform]
    return parse_conda_args(argv)


def _policy(ns: argparse.Namespace) -> CachePolicy:
    if ns.offline:
        return CachePolicy.OFFLINE
    return CachePolicy.REFRESH if ns.refresh else CachePolicy.DEFAULT


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nbenv", description="Isolated, locked environments for notebooks.")
    parser.add_argument("--version", action="version", version=f"nbenv {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    lock = commands.add_parser(
        "lock",
        help="resolve requirements (or a notebook's envs) into a lock",
        description="Resolve requirements into a PEP 751 pylock.toml, printed or written "
        "with -o. --python and --platform may be repeated to lock several targets at once. "
        "`nbenv lock NOTEBOOK.ipynb` locks every env the notebook declares into "
        "NOTEBOOK.nbenv.lock beside it (entries already there are kept unless --upgrade).",
    )
    add_request_arguments(lock)
    _conda_options(lock)
    lock.add_argument("-o", "--output", type=Path, help="write the lock to this file")
    lock.add_argument("--json", action="store_true", help="print a JSON summary instead")
    lock.add_argument("--upgrade", action="store_true", help="notebook: resolve every env again")
    lock.add_argument(
        "--embed",
        action="store_true",
        help="notebook: also store the locks in the notebook's metadata",
    )
    _cache_options(lock)

    create = commands.add_parser(
        "create",
        help="build an environment and register its kernel",
        description="Resolve SPECs (with ipykernel and ipywidgets) or take --lock FILE, build "
        "the environment once in the store, and register it as a Jupyter kernel.",
    )
    add_request_arguments(create)
    _conda_options(create)
    create.add_argument("--lock", type=Path, metavar="FILE",
                        help="build this pylock.toml (or a conda env lock, .json)")  # fmt: skip
    create.add_argument("--no-compile", action="store_true", help="skip writing .pyc files")
    create.add_argument(
        "--no-kernel",
        action="store_true",
        help="a plain env: no ipykernel/ipywidgets added, no kernelspec",
    )
    create.add_argument("--link-mode", choices=["auto", "hardlink", "copy"], default="auto")
    create.add_argument("--json", action="store_true", help="print a JSON summary")
    _kernel_location(create)
    _cache_options(create)

    listing = commands.add_parser("list", help="list environments")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--html", action="store_true", help="an HTML table (for notebooks)")

    show = commands.add_parser("show", help="packages, size, kernel and lock of an env")
    show.add_argument("env", metavar="ENV", help="name, env id or id prefix")
    show.add_argument("--json", action="store_true")
    show.add_argument(
        "--html", action="store_true", help="packages, requirement tree and lock as HTML"
    )

    remove = commands.add_parser("remove", help="remove an environment and its kernel")
    remove.add_argument("env", metavar="ENV")
    remove.add_argument("--force", action="store_true", help="even if a kernel runs from it")

    gc = commands.add_parser(
        "gc",
        help="clean orphaned kernels, killed builds and unused envs",
        description="Removes kernelspecs whose env is gone and leftovers of killed builds; "
        "with --older-than, also unnamed envs unused for that many days. Envs in use by a "
        "running kernel are never removed.",
    )
    gc.add_argument("--dry-run", action="store_true", help="only say what would go")
    gc.add_argument("--older-than", type=float, metavar="DAYS")

    run = commands.add_parser(
        "run",
        help="execute a notebook headless in its locked envs",
        description="Build every env the notebook declares from its lock (resolving and "
        "adding only those the lock lacks), then execute the notebook with nbclient and save "
        "the result, NOTEBOOK.out.ipynb unless -o. Exits non-zero if a cell fails.",
    )
    run.add_argument("notebook", type=Path, metavar="NOTEBOOK.ipynb")
    run.add_argument("-o", "--output", type=Path, help="where to save the executed notebook")
    run.add_argument("--kernel", help="kernel to run it in (default: the notebook's own)")
    run.add_argument("--timeout", type=int, metavar="S", help="seconds allowed per cell")
    run.add_argument(
        "--startup-timeout", type=int, default=60, metavar="S", help="seconds for the kernel"
    )
    run.add_argument("--show", action="store_true", help="print the cells and their outputs")

    export = commands.add_parser(
        "export",
        help="print a locked env as requirements, pylock, environment.yml or Metaflow",
        description="Export the lock of a notebook's env (NOTEBOOK.ipynb, --env KEY when it "
        "declares several), of a store env (name or id) or of a pylock.toml file.",
    )
    export.add_argument("target", metavar="NOTEBOOK.ipynb|ENV")
    export.add_argument("--format", "-f", required=True, choices=list(_export_formats()))
    export.add_argument("--env", metavar="KEY", help="which env of the notebook (key prefix)")
    export.add_argument("-o", "--output", type=Path, help="write to this file")

    kernel = commands.add_parser("kernel", help="install or remove an env's kernelspec")
    kernel_commands = kernel.add_subparsers(dest="kernel_command", parser_class=_Parser)
    for action in ("install", "remove"):
        sub = kernel_commands.add_parser(action)
        sub.add_argument("env", metavar="ENV")
        _kernel_location(sub)
    # the host side of the magics inside an env's own kernel (nbenv.cellenv); not for people
    commands.add_parser("_cell-env")
    return parser


def _kernel_location(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--prefix", help="install the kernelspec under this prefix")
    where.add_argument("--sys-prefix", action="store_true", help="under this Python's prefix")


def _kernel_prefix(ns: argparse.Namespace) -> str | None:
    return sys.prefix if ns.sys_prefix else ns.prefix


# -- commands --------------------------------------------------------------------------------


def _lock(ns: argparse.Namespace, reporter: Reporter) -> int:
    from nbenv.lock import build_lock, write_lock
    from nbenv.resolve.pypi import resolve

    if ns.specs and ns.specs[0].endswith(".ipynb"):
        return _lock_notebook(ns, reporter)
    if ns.upgrade or ns.embed:
        raise UsageError(
            "nbenv lock: --upgrade and --embed are for a notebook: "
            "`nbenv lock NOTEBOOK.ipynb --upgrade`"
        )
    if ns.conda:
        return _lock_conda(ns, reporter)
    request = request_from_namespace(ns)
    if not request.requirements:
        raise UsageError("nbenv lock: give at least one requirement, e.g. `nbenv lock pandas`")
    resolutions = resolve(request, policy=_policy(ns), reporter=reporter)
    lock = build_lock(resolutions, request)
    if ns.output is not None:
        write_lock(lock, ns.output)
    if ns.json:
        summary = lock.to_summary()
        if ns.output is not None:
            summary["path"] = str(ns.output)
        _print_json(summary)
    elif ns.output is None:
        sys.stdout.write(lock.dumps())
    return 0


def _lock_conda(ns: argparse.Namespace, reporter: Reporter) -> int:
    """`nbenv lock --conda SPEC... [PYPI_SPEC...]`: one conda platform (`--platform
    linux-64|osx-arm64|...`), written as a JSON conda env lock."""
    from nbenv.envs import target_for
    from nbenv.interpreters import find_interpreter
    from nbenv.resolve.mixed import resolve_mixed

    if len(ns.platform) > 1 or len(ns.python) > 1:
        raise UsageError("nbenv lock --conda: give --platform (a conda subdir) and --python once")
    conda = _conda_request(ns, ns.platform[0] if ns.platform else None)
    assert conda is not None
    # --platform is the conda subdir here; the PyPI pass follows it (nbenv.resolve.mixed)
    request = request_from_namespace(argparse.Namespace(**{**vars(ns), "platform": []}))
    base = target_for(find_interpreter(ns.python[0] if ns.python else None)) if conda.is_native \
        else None  # fmt: skip
    mixed = resolve_mixed(conda, request, base=base, policy=_policy(ns), reporter=reporter)
    if ns.output is not None:
        from nbenv.files import atomic_write

        atomic_write(ns.output, mixed.dumps().encode("utf-8"), durable=True)
    if ns.json:
        _print_json({"env_id": mixed.env_id, "platform": mixed.conda.platform,
                     "path": str(ns.output) if ns.output else None})  # fmt: skip
    elif ns.output is None:
        sys.stdout.write(mixed.dumps())
    return 0


def _lock_notebook(ns: argparse.Namespace, reporter: Reporter) -> int:
    from nbenv.notebook import lock_notebook
    from nbenv.notebook_lock import NotebookLock, embed_locks

    notebook = Path(ns.specs[0])
    given = [
        option
        for option, value in (
            ("another SPEC", ns.specs[1:]),
            ("--index-url", ns.index_url),
            ("--extra-index-url", ns.extra_index_url),
            ("--python", ns.python),
            ("--platform", ns.platform),
            ("--pre", ns.pre),
            ("--name", ns.name),
            ("--output", ns.output),
        )
        if value
    ]
    if given:
        raise UsageError(
            f"nbenv lock {notebook}: {given[0]} does not apply to a notebook; its cells "
            "declare the requirements, indexes and Python (e.g. `%%pypi --index-url URL pandas`)"
        )
    result = lock_notebook(notebook, upgrade=ns.upgrade, policy=_policy(ns), reporter=reporter)
    embedded = False
    if ns.embed and (result.envs or result.removed):
        embedded = embed_locks(notebook, NotebookLock.load(result.location.path))
    _close(reporter)
    if ns.json:
        _print_json(
            {
                "path": str(result.location.path),
                "written": result.written,
                "embedded": embedded,
                "envs": [asdict(e) for e in result.envs],
                "removed": list(result.removed),
            }
        )
        return 0
    where = result.location.path
    if not result.envs and not result.removed:
        print(f"{notebook} declares no environment (%%pypi, %%conda, %pypi): nothing to lock.")
        return 0
    verb = "Wrote" if result.written else "Up to date:"
    print(f"{verb} {where} ({len(result.envs)} environment{'s' if len(result.envs) != 1 else ''})")
    labels = {
        "kept": "locked already",
        "added": "resolved",
        "upgraded": "upgraded",
        "unchanged": "no newer versions",
    }
    width = max((len(e.declared) for e in result.envs), default=0)
    for env in result.envs:
        detail = f": {', '.join(env.changes)}" if env.changes else ""
        print(f"  {env.declared.ljust(width)}  env {env.env_id}  {labels[env.status]}{detail}")
    for key in result.removed:
        print(f"  removed {key}: no cell declares it any more")
    if ns.embed:
        state = "Embedded the locks in" if embedded else "The locks embedded in"
        print(f"{state} {notebook} (metadata.nbenv.locks){'' if embedded else ' are current'}")
    return 0


def _run(ns: argparse.Namespace, reporter: Reporter) -> int:
    from nbenv.run import default_output, execute_notebook, prepare_notebook

    notebook: Path = ns.notebook
    if notebook.suffix != ".ipynb":
        raise UsageError(f"nbenv run: {notebook} is not a .ipynb notebook")
    prepared = prepare_notebook(notebook, reporter=reporter)
    _close(reporter)
    where = prepared.location.path
    if prepared.envs:
        print(f"Lock file: {where}")
    for env in prepared.envs:
        verb = "built" if env.result.created else "ready"
        note = "  (not in the lock: resolved and added)" if env.status == "added" else ""
        print(f"  {env.declaration.describe()}: env {env.lock.env_id} {verb}{note}")
    output = ns.output or default_output(notebook)
    print(f"Executing {notebook} ...", flush=True)
    done = execute_notebook(
        notebook,
        lock_path=where,
        output=output,
        kernel=ns.kernel,
        timeout=ns.timeout,
        startup_timeout=ns.startup_timeout,
    )
    print(
        f"Executed {done.cells} code cells with kernel {done.kernel} in {done.seconds:.1f} s; "
        f"saved to {done.output}"
    )
    if ns.show:
        from nbenv.run import transcript

        print()
        print(transcript(done.output))
    return 0


def _export_formats() -> tuple[str, ...]:
    from nbenv.export import FORMATS

    return FORMATS


def _export(ns: argparse.Namespace, reporter: Reporter) -> int:
    from nbenv.export import export_lock, find_export_source

    text = export_lock(find_export_source(ns.target, env=ns.env), ns.format)
    if ns.output is None:
        sys.stdout.write(text)
        return 0
    ns.output.parent.mkdir(parents=True, exist_ok=True)
    ns.output.write_text(text, encoding="utf-8")
    print(f"Wrote {ns.output}", file=sys.stderr)
    return 0


def _create(ns: argparse.Namespace, reporter: Reporter) -> int:
    from nbenv.envs import BuildOptions, create_env
    from nbenv.heap import keep_freed_memory

    keep_freed_memory()  # this process ends with the create: its helpers fork from it
    request = request_from_namespace(ns)
    conda = _conda_request(ns)
    if not request.requirements and ns.lock is None and conda is None:
        raise UsageError("nbenv create: give requirements or --lock FILE")
    if (request.requirements or conda) and ns.lock is not None:
        raise UsageError("nbenv create: give requirements or --lock FILE, not both")
    options = BuildOptions(
        policy=_policy(ns),
        compile_bytecode=not ns.no_compile,
        register_kernel=not ns.no_kernel,
        kernel_prefix=_kernel_prefix(ns),
        link_mode=ns.link_mode,
    )
    if conda is not None or (ns.lock is not None and ns.lock.suffix == ".json"):
        result = _create_conda(ns, request, conda, options, reporter)
    else:
        result = create_env(request, options, lock_file=ns.lock, reporter=reporter)
    _print_created(ns, result, reporter)
    return 0


def _create_conda(
    ns: argparse.Namespace,
    request: EnvRequest,
    conda: CondaRequest | None,
    options: BuildOptions,
    reporter: Reporter,
) -> CreateResult:
    from nbenv.conda_envs import create_conda_env
    from nbenv.resolve.conda_model import CondaRequest
    from nbenv.resolve.mixed import MixedLock

    locked = MixedLock.load(ns.lock) if ns.lock is not None else None
    if conda is None:
        assert locked is not None
        conda = CondaRequest(specs=locked.conda.specs, channels=locked.conda.channels)
    return create_conda_env(conda, request, options, lock=locked, reporter=reporter)


def _print_created(ns: argparse.Namespace, result: CreateResult, reporter: Reporter) -> None:
    _close(reporter)
    summary = {
        "env_id": result.record.env_id,
        "name": result.record.name,
        "path": str(result.path),
        "python": result.record.python,
        "kind": result.record.kind,
        "created": result.created,
        "kernel": result.kernel.name if result.kernel else None,
        "display_name": result.kernel.display_name if result.kernel else None,
        "seconds": round(result.seconds, 3),
    }
    if ns.json:
        _print_json(summary)
        return
    verb = "Created" if result.created else "Found existing"
    print(f"{verb} environment {result.record.env_id} ({result.seconds:.2f} s)")
    print(f"  path:   {result.path}")
    print(f"  python: {result.record.python or '-'}")
    if result.record.kind != "pypi":
        print(f"  kind:   {result.record.kind}")
    if result.kernel:
        print(f"  kernel: {result.kernel.name}  ({result.kernel.display_name})")


def _list(ns: argparse.Namespace, reporter: Reporter) -> int:
    from nbenv.envs import describe_envs

    rows = describe_envs()
    if ns.json:
        _print_json(rows)
        return 0
    if ns.html:
        from nbenv.inspector import envs_html

        print(envs_html(rows))
        return 0
    if not rows:
        print("No environments yet. Create one with `nbenv create SPEC...`.")
        return 0
    header = ("NAME", "ENV ID", "PYTHON", "PACKAGES", "SIZE", "LAST USED", "KERNEL")
    table = [
        (
            r["name"] or "-",
            r["env_id"],
            r["python"],
            str(r["packages"]),
            _size(r["size_unique"]),
            _ago(r["last_used"]),
            r["kernel"] or "-",
        )
        for r in rows
    ]
    _print_table(header, table)
    return 0


def _show(ns: argparse.Namespace, reporter: Reporter) -> int:
    from nbenv.envs import describe_env
    from nbenv.store import Store

    store = Store()
    env_id = store.resolve_ref(ns.env)
    if ns.html:
        from nbenv.inspector.html import detail_html
        from nbenv.inspector.model import env_detail

        print(detail_html(env_detail(env_id, store)))
        return 0
    info = describe_env(store, env_id)
    if ns.json:
        _print_json(info)
        return 0
    print(f"{info['name'] or info['env_id']}  ({info['env_id']})")
    for label in ("kind", "path", "python", "kernel", "lock"):
        print(f"  {label + ':':8}{info[label] or '-'}")
    print(f"  {'size:':8}{_size(info['size'])} ({_size(info['size_unique'])} not shared)")
    if info["notebooks"]:
        print(f"  used by {', '.join(info['notebooks'])}")
    print(f"  {'asked:':8}{' '.join(info['requirements']) or '(a lock file)'}")
    print(f"  packages ({len(info['packages'])}):")
    for package in info["packages"]:
        version = " ".join(filter(None, (package["version"], package.get("build"))))
        print(f"    {package['name']} {version}  {package['source']}")
    if info["startup_files"]:
        print("  startup files (.pth: code Python runs at every start in this env):")
        for name in info["startup_files"]:
            print(f"    {name}")
    return 0


def _remove(ns: argparse.Namespace, reporter: Reporter) -> int:
    from nbenv.envs import remove_env
    from nbenv.store import Store

    store = Store()
    env_id = store.resolve_ref(ns.env)
    kernels = remove_env(store, env_id, force=ns.force)
    print(
        f"Removed environment {env_id}" + (f" and kernel {', '.join(kernels)}" if kernels else "")
    )
    return 0


def _gc(ns: argparse.Namespace, reporter: Reporter) -> int:
    from nbenv.envs import gc
    from nbenv.store import Store

    report = gc(Store(), older_than_days=ns.older_than, dry_run=ns.dry_run)
    verb = "Would remove" if report.dry_run else "Removed"
    for label, items in (
        ("environment", report.envs),
        ("orphaned kernel", report.kernels),
        ("leftover build", report.leftovers),
    ):
        for item in items:
            print(f"{verb} {label} {item}")
    for env_id in report.kept_in_use:
        print(f"Kept environment {env_id}: a running process uses it")
    if not (report.envs or report.kernels or report.leftovers):
        print("Nothing to clean.")
    return 0


def _kernel(ns: argparse.Namespace, reporter: Reporter) -> int:
    from nbenv.envs import ensure_kernel
    from nbenv.kernels import nbenv_kernelspecs, remove_kernelspec
    from nbenv.store import Store

    if ns.kernel_command is None:
        raise UsageError("nbenv kernel: say install or remove")
    store = Store()
    env_id = store.resolve_ref(ns.env)
    prefix = _kernel_prefix(ns)
    if ns.kernel_command == "install":
        spec = ensure_kernel(store, env_id, prefix=prefix)
        print(f"Installed kernel {spec.name} ({spec.display_name}) in {spec.resource_dir}")
        return 0
    removed = [
        s.name
        for s in nbenv_kernelspecs(prefixes=[prefix] if prefix else ())
        if s.env_id == env_id and remove_kernelspec(s, prefixes=[prefix] if prefix else ())
    ]
    print(f"Removed kernel {', '.join(removed)}" if removed else "No kernel to remove.")
    return 0


def _cell_env(ns: argparse.Namespace, reporter: Reporter) -> int:
    from nbenv.cellenv import host_main

    print(host_main(sys.stdin.read()))
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace, Reporter], int]] = {
    "_cell-env": _cell_env,
    "lock": _lock,
    "create": _create,
    "list": _list,
    "show": _show,
    "remove": _remove,
    "gc": _gc,
    "kernel": _kernel,
    "run": _run,
    "export": _export,
}


# -- output helpers ---------------------------------------------------------------------------


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def _ago(timestamp: float) -> str:
    seconds = max(0.0, time.time() - timestamp)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    reporter: Reporter = NullReporter()
    try:
        ns = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        if ns.command is None:
            parser.print_help()
            return 0
        if sys.stderr.isatty():
            reporter = TerminalReporter(sys.stderr)
        return _COMMANDS[ns.command](ns, reporter)
    except UsageError as exc:
        _close(reporter)
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except NbenvError as exc:
        _close(reporter)
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _close(reporter)
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `nbenv show x | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a path the user gave that cannot be read or written
        _close(reporter)
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {redact(exc.strerror or str(exc))}{redact(where)}", file=sys.stderr)
        return 1
    finally:
        _close(reporter)


def run() -> NoReturn:
    """The console entry point: `main`, then leave without the interpreter's teardown.

    Index and metadata requests that lost a race (a PEP 658 probe answered by the range
    read, a speculative page) may still wait on a slow server; the interpreter would join
    their threads before exiting, 0.4-0.5 s on a cold `nbenv lock`. And tearing down the
    modules a command imported costs another 20-30 ms. Nothing is left to do by then:
    every file nbenv writes is closed (and renamed into place) before `main` returns,
    worker processes are stopped, the bytecode compiler runs detached, and no atexit hook
    matters to a finished command (rattler's settling wait exists only to survive that
    teardown). So the output is flushed and the process ends here.
    """
    # A cold build runs the resolver on one thread while download threads stream wheels:
    # with the default 5 ms switch interval the resolver waited on the GIL behind them
    # (set B cold: 2.20 -> 2.12 s median over 5 runs at 1 ms). A process of its own, so
    # the setting touches no one else's threads.
    sys.setswitchinterval(0.001)
    gc.set_threshold(*_GC_THRESHOLDS)
    try:
        code = main()
    except SystemExit as exc:  # argparse's --help, --version and usage errors
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _close(reporter: Reporter) -> None:
    if isinstance(reporter, TerminalReporter):
        reporter.close()
