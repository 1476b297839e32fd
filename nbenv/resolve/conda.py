"""Conda specs -> a solved set of conda packages, with py-rattler.

`%%conda [-c CHANNEL]... [--platform SUBDIR] [--python X.Y] [--cuda V] [--glibc V] [--osx V]
SPEC...`, SPECs in conda's MatchSpec syntax. Decisions:
- No `-c`: conda-forge. With `-c`: those channels alone (a private or local channel works
  with no access to conda-forge), plus any channel a spec names (`chan::pkg`).
- Virtual packages come from this machine (`CONDA_OVERRIDE_*` honoured); for another
  `--platform`, from conservative defaults for it. `--cuda/--glibc/--osx` override either.
- Credentials (URL userinfo, conda `/t/<token>/`) are used to fetch and then stripped from
  everything the solution holds; rattler's auth file (RATTLER_AUTH_FILE) works as well.
- The Python dists the solution provides come from each package's `info/paths.json` (the
  `.dist-info`/`.egg-info` directories it installs), read for the packages that can hold
  any: noarch python ones and those depending on `python`. See nbenv.resolve.conda_dists.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from nbenv.errors import CondaChannelError, CondaSolveError, CondaSpecError, UsageError
from nbenv.paths import cache_dir as default_cache_dir
from nbenv.report import NullReporter, Reporter
from nbenv.resolve.conda_model import (
    DEFAULT_CHANNELS,
    CondaPackage,
    CondaRequest,
    CondaSolution,
)
from nbenv.resolve.conda_runtime import (
    channel_client,
    clean_url,
    error_summary,
    redact_channels,
    run_async,
)

if TYPE_CHECKING:
    import rattler

__all__ = [
    "DEFAULT_CHANNELS",
    "CondaPackage",
    "CondaRequest",
    "CondaSolution",
    "parse_conda_args",
    "solve",
    "virtual_packages",
    "with_platform",
]

_PYTHON = re.compile(r"^\d+\.\d+$")
# Another platform's virtual packages cannot be detected here: these are the oldest systems
# conda-forge builds for, so a lock made with them runs on any supported machine.
_DEFAULT_LINUX = "4.18"
_DEFAULT_GLIBC = "2.28"
_DEFAULT_OSX = {"osx-64": "10.15", "osx-arm64": "11.0"}
_ARCHSPEC = {"64": "x86_64", "aarch64": "aarch64", "ppc64le": "ppc64le", "arm64": "arm64"}
# Which option supplies a missing virtual package, for the solve error's hint.
_OVERRIDE_OPTION = {"__cuda": "--cuda", "__glibc": "--glibc", "__osx": "--osx"}


# -- the header grammar -------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"%%conda: {message}")


def _parser() -> _Parser:
    parser = _Parser(prog="%%conda", add_help=False)
    parser.add_argument("specs", nargs="*", metavar="SPEC")
    parser.add_argument("-c", "--channel", action="append", default=[], dest="channels")
    parser.add_argument("--platform")
    parser.add_argument("--python", metavar="X.Y")
    parser.add_argument("--cuda", metavar="VERSION")
    parser.add_argument("--glibc", metavar="VERSION")
    parser.add_argument("--osx", metavar="VERSION")
    return parser


def parse_conda_args(argv: Sequence[str]) -> CondaRequest:
    """Parse `%%conda` arguments (already split into words) into a CondaRequest."""
    ns, unknown = _parser().parse_known_args(list(argv))
    if unknown:
        raise UsageError(f"%%conda: unknown option {unknown[0]!r}")
    specs = [_check_spec(spec) for spec in ns.specs]
    if ns.python is not None:
        if not _PYTHON.match(ns.python):
            raise UsageError(f"--python wants a version like 3.11, not {ns.python!r}")
        specs.append(f"python {ns.python}.*")
    if not specs:
        raise UsageError("%%conda needs at least one package spec, e.g. `%%conda numpy>=1.26`")
    platform = _check_platform(ns.platform) if ns.platform is not None else None
    for option in ("cuda", "glibc", "osx"):
        value = getattr(ns, option)
        if value is not None:
            _check_version(option, value)
    request = CondaRequest(
        specs=tuple(dict.fromkeys(specs)),
        channels=tuple(dict.fromkeys(_channel(c) for c in ns.channels)),
        platform=platform,
        cuda=ns.cuda,
        glibc=ns.glibc,
        osx=ns.osx,
        python=ns.python,
    )
    if request.glibc is not None and not request.subdir.startswith("linux-"):
        raise UsageError(f"--glibc applies to linux platforms, not {request.subdir}")
    if request.osx is not None and not request.subdir.startswith("osx-"):
        raise UsageError(f"--osx applies to osx platforms, not {request.subdir}")
    return request


def _check_spec(text: str) -> str:
    import rattler
    from rattler.exceptions import InvalidMatchSpecError, InvalidPackageNameError

    try:
        rattler.MatchSpec(text)  # lenient, as conda: `openmpi=4.1.*=h*` is valid
    except (InvalidMatchSpecError, InvalidPackageNameError) as exc:
        reason = str(exc).splitlines()[0]
        # rattler names the bad fragment after a colon ("unable to parse version spec: >>1")
        fragment = reason.rpartition(": ")[2].strip("'\"")
        position = text.find(fragment) if fragment else -1
        raise CondaSpecError(text, max(position, 0), reason) from None
    return text


def _check_platform(value: str) -> str:
    import rattler
    from rattler.exceptions import ParseSubdirError

    try:
        subdir = rattler.Subdir(value)
    except (ParseSubdirError, ValueError):
        subdir = None
    if subdir is None or str(subdir) == "noarch":
        raise UsageError(
            f"Unknown conda platform {value!r}. Use a conda subdir such as linux-64, "
            "linux-aarch64, osx-64, osx-arm64 or win-64."
        )
    return str(subdir)


def _check_version(option: str, value: str) -> None:
    # numbers only: a virtual package's version is what a driver or a libc reports
    if not re.fullmatch(r"\d+(\.\d+)*", value):
        raise UsageError(f"--{option} wants a version like 12.4, not {value!r}")


def _channel(value: str) -> str:
    """A channel name or URL as given; a local directory becomes its file:// URL."""
    # only an explicit path: a bare word is a channel name, as in conda
    if "://" not in value and value.startswith(("/", "./", "../", "~")):
        return Path(value).expanduser().resolve().as_uri() + "/"
    return value


# -- virtual packages ---------------------------------------------------------------------


def virtual_packages(request: CondaRequest) -> list[rattler.GenericVirtualPackage]:
    """This machine's virtual packages, or defaults for another platform; overrides last."""
    return list(_virtual(request)[0])


def _virtual(
    request: CondaRequest,
) -> tuple[tuple[rattler.GenericVirtualPackage, ...], tuple[str, ...]]:
    """The virtual packages and their "name=version=build" texts, built once per process
    for each platform, set of overrides and CONDA_OVERRIDE_* values."""
    subdir = request.subdir
    native = request.is_native
    return _virtual_for(subdir, native, request.cuda, request.glibc, request.osx,
                        _overrides() if native else ())  # fmt: skip


@functools.lru_cache(maxsize=32)
def _virtual_for(
    subdir: str,
    native: bool,
    cuda: str | None,
    glibc: str | None,
    osx: str | None,
    overrides: tuple[tuple[str, str], ...],
) -> tuple[tuple[rattler.GenericVirtualPackage, ...], tuple[str, ...]]:
    import rattler

    found: dict[str, tuple[str, str]] = {}  # name -> (version, build)
    if native:
        found.update(_detected(overrides))
    else:
        os_name, _, arch = subdir.partition("-")
        if os_name != "win":
            found["__unix"] = ("0", "0")
        if os_name == "linux":
            found["__linux"] = (_DEFAULT_LINUX, "0")
            found["__glibc"] = (_DEFAULT_GLIBC, "0")
        elif os_name == "osx":
            found["__osx"] = (_DEFAULT_OSX.get(subdir, "11.0"), "0")
        elif os_name == "win":
            found["__win"] = ("0", "0")
        found["__archspec"] = ("1", _ARCHSPEC.get(arch, arch))
    for name, value in (("__cuda", cuda), ("__glibc", glibc)):
        if value is not None:
            found[name] = (value, "0")
    if osx is not None:
        found["__osx"] = (osx, "0")
    packages = tuple(
        rattler.GenericVirtualPackage(
            rattler.PackageName(name), rattler.Version(v), rattler.BuildString.new_unchecked(b)
        )
        for name, (v, b) in sorted(found.items())
    )
    texts = tuple(f"{v.name.normalized}={v.version}={v.build_string}" for v in packages)
    return packages, texts


def _overrides() -> tuple[tuple[str, str], ...]:
    # keys first: os.environ.items() would decode every value as well
    names = [k for k in os.environ if k.startswith("CONDA_OVERRIDE_")]
    return tuple(sorted((k, os.environ[k]) for k in names))


@functools.lru_cache(maxsize=8)
def _detected(overrides: tuple[tuple[str, str], ...]) -> dict[str, tuple[str, str]]:
    """This machine's virtual packages, detected once per process (and per set of
    CONDA_OVERRIDE_* values: tests and users may change them)."""
    import rattler

    found = {}
    for package in rattler.VirtualPackage.detect(rattler.VirtualPackageOverrides.from_env()):
        generic = package.into_generic()
        found[generic.name.normalized] = (str(generic.version), str(generic.build_string))
    return found


# -- solving ------------------------------------------------------------------------------


def solve(
    request: CondaRequest,
    *,
    cache_dir: Path | None = None,
    reporter: Reporter | None = None,
    offline: bool = False,
) -> CondaSolution:
    """Solve `request` for its platform. `offline`: repodata from the cache only."""
    # credentials reach rattler through the client alone, never in a URL it keeps
    named = [s.partition("::")[0] for s in request.specs if "::" in s]
    with channel_client([*request.effective_channels, *named]) as client:
        return _solve(request, client, cache_dir, reporter, offline)


def _solve(
    request: CondaRequest,
    client: rattler.Client,
    cache_dir: Path | None,
    reporter: Reporter | None,
    offline: bool,
) -> CondaSolution:
    import rattler
    from rattler.exceptions import SolverError

    reporter = reporter or NullReporter()
    root = (cache_dir or default_cache_dir()) / "conda"
    config = rattler.SourceConfig(cache_action="force-cache-only" if offline else "cache-or-fetch")
    # a new gateway each time: a kept one would answer from memory without revalidating
    gateway = rattler.Gateway(cache_dir=root / "repodata", default_config=config, client=client)
    specs = [rattler.MatchSpec(s) for s in request.specs]
    sources = [clean_url(c) for c in request.effective_channels]
    for spec in specs:  # `chan::pkg` names a channel the user wants searched
        if spec.channel is not None and clean_url(spec.channel.base_url) not in sources:
            sources.append(clean_url(spec.channel.base_url))
    virtual, virtual_texts = _virtual(request)
    reporter.stage("solving conda packages")
    try:
        records = run_async(
            rattler.solve(
                sources=sources,
                specs=specs,
                gateway=gateway,
                platforms=[rattler.Subdir(request.subdir), rattler.Subdir("noarch")],
                virtual_packages=list(virtual),
                channel_relations="disabled",  # exactly the channels asked for
            )
        )
    except SolverError as exc:
        raise _solve_error(request, sources, str(exc), offline) from None
    except Exception as exc:  # rattler raises its own classes for every network failure
        raise _channel_error(sources, exc, offline) from None
    from nbenv.resolve.conda_dists import dists_by_package

    converted = [_package(r) for r in records]
    holding = [r for r, (_, holds) in zip(records, converted, strict=True) if holds]
    owners = dists_by_package(holding, client=client, cache=root / "dists", reporter=reporter)
    dists = {d: v for found in owners.values() for d, v in found.items()}
    packages = sorted((p for p, _ in converted), key=lambda p: p.name)
    python = next((p.version for p in packages if p.name == "python"), None)
    return CondaSolution(
        platform=request.subdir,
        channels=tuple(clean_url(s) for s in sources),
        specs=request.specs,
        virtual_packages=virtual_texts,
        packages=tuple(packages),
        python_version=python,
        python_dists=dict(sorted(dists.items())),
        dist_packages={d: name for name, found in owners.items() for d in sorted(found)},
    )


def _package(record: rattler.RepoDataRecord) -> tuple[CondaPackage, bool]:
    """`CondaPackage.from_record` and whether it can hold Python dists, kept per process: a
    cell run again solves to the same records, and reading each field out of rattler costs
    more than the rest of nbenv's work in a solve. Keyed on the record's full JSON
    (rattler's own serialization: every field, URL and channel included), so a record that
    differs in anything is converted anew."""
    from nbenv.resolve.conda_dists import holds_python

    key = record.to_json()
    entry = _packages.get(key)
    if entry is None:
        package = CondaPackage.from_record(record)
        entry = (package, holds_python(package))
        if len(_packages) >= _PACKAGES_KEPT:
            _packages.clear()  # a bound, not an LRU: refilling costs one solve's conversion
        _packages[key] = entry
    return entry


_PACKAGES_KEPT = 4096
_packages: dict[str, tuple[CondaPackage, bool]] = {}


def _solve_error(
    request: CondaRequest, sources: Sequence[str], message: str, offline: bool
) -> CondaSolveError:
    detail = redact_channels(message).replace("Cannot solve the request because of: ", "", 1)
    hints = []
    for name, option in _OVERRIDE_OPTION.items():
        if re.search(rf"{name}\b[^\n]*no candidates", detail):
            where = "this machine does not provide it" if request.is_native else "it is unset"
            hints.append(
                f"{name} is a virtual package ({where}); to lock for a machine that has it, "
                f"pass {option} VERSION (e.g. {option} {_EXAMPLE[option]})."
            )
    if offline and "No candidates were found" in detail:
        hints.append("Solved offline: only repodata already in the cache was searched.")
    return CondaSolveError(
        request.specs,
        detail.rstrip(),
        channels=tuple(clean_url(s) for s in sources),
        platform=request.subdir,
        hints=tuple(hints),
    )


_EXAMPLE = {"--cuda": "12.4", "--glibc": "2.28", "--osx": "11.0"}


def _channel_error(sources: Sequence[str], exc: Exception, offline: bool) -> CondaChannelError:
    import rattler

    message = redact_channels(str(exc))
    urls = re.findall(r"url \(([^)\s]+)\)", message)
    bases = [clean_url(rattler.Channel(s).base_url) for s in sources]
    channel = next((base for base in bases for u in urls if u.startswith(base)), ", ".join(bases))
    reason = error_summary(exc)
    if offline:
        reason += ". Solved offline: run once with network access to cache its repodata"
    return CondaChannelError(channel, reason)


def with_platform(request: CondaRequest, platform: str | None) -> CondaRequest:
    """The same request for another platform (a multi-platform lock solves once each)."""
    return replace(request, platform=_check_platform(platform) if platform else None)
