"""Environments from wheels: a venv, then each wheel unpacked once and hardlinked after.

    cache_root/unpacked/<wheel sha256>/tree/...        the wheel's members, as archived
    cache_root/unpacked/<wheel sha256>/manifest.json   their sha256 and sizes, scripts, layout
    cache_root/unpacked/.tmp-<wheel sha256>-*/         an unpack under way (moved in by rename)
    cache_root/unpacked/<wheel sha256>.lock            one unpacker per wheel, across processes

pypa/installer keeps the wheel semantics (schemes, `.data`, entry-point scripts, shebangs,
RECORD, INSTALLER); our destination only changes how regular files arrive: as hardlinks of
the cached copy (or copies), recorded with the hash and size checked once at unpack time.
Scripts are always written, never linked: their shebang names this env's python.

Every check of a wheel (names, RECORD, WHEEL, entry points) runs before anything of it is
written, and a wheel enters the cache only complete. A failed install leaves a half-built env
behind: the caller builds in a temporary directory and discards it (see nbenv.store).
"""

from __future__ import annotations

import base64
import configparser
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, NamedTuple, TypeVar, cast

import filelock
import installer
from installer.destinations import SchemeDictionaryDestination
from installer.exceptions import InstallerError
from installer.records import Hash, RecordEntry, parse_record_file
from installer.sources import WheelContentElement, WheelFile, WheelSource
from installer.utils import (
    SCHEME_NAMES,
    Scheme,
    copyfileobj_with_hashing,
    get_launcher_kind,
    parse_entrypoints,
    parse_metadata_file,
)

from nbenv.errors import (
    InstallConflictError,
    InstallError,
    InvalidWheelError,
    UnsafeWheelError,
    VenvCreationError,
)
from nbenv.report import NullReporter, Reporter

__all__ = [
    "InstallReport",
    "LinkMode",
    "UnpackedFile",
    "UnpackedWheel",
    "WheelCache",
    "WheelToInstall",
    "compile_bytecode",
    "create_venv",
    "env_python",
    "install_wheels",
]

LinkMode = Literal["auto", "hardlink", "copy"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_DRIVE = re.compile(r"[A-Za-z]:")
_MANIFEST_FORMAT = 1
_LOCK_TIMEOUT = 900.0  # seconds; unpacking the largest wheels (GPU stacks) takes minutes
_CHUNK = 1 << 20
_INSTALLER = b"nbenv\n"
# Written by whoever installs; a wheel that ships them would collide with our own.
_INSTALL_TIME_FILES = ("INSTALLER", "REQUESTED")
_SIGNATURES = ("RECORD.jws", "RECORD.p7s")  # not in RECORD, and meaningless once installed
# Link errors that hold for every file between this cache and this env: copy from then on.
_LINKS_IMPOSSIBLE = {errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}
# Linking is one short syscall per file under the GIL: more threads only contend. Measured
# (8,078 files, 37 wheels, warm cache): 1 thread 0.27 s, 2: 0.25 s, 4: 0.34 s, 8: 0.41 s.
# Unpacking (zlib, hashing, big writes: the GIL is released) uses every worker.
_LINK_WORKERS = 2
_STAGE_UNPACK = "unpacking wheels"
_STAGE_INSTALL = "installing wheels"
# Run by the env's python: where its installs go (3.6+ syntax, any env we may build).
_LAYOUT_CODE = (
    "import json, sys, sysconfig\n"
    "paths = sysconfig.get_paths()\n"
    "paths['version'] = '%d.%d' % sys.version_info[:2]\n"
    "print(json.dumps(paths))\n"
)

_T = TypeVar("_T")
_R = TypeVar("_R")


# --- public values -------------------------------------------------------------------------


@dataclass(frozen=True)
class WheelToInstall:
    """A wheel file named as wheels are, whose sha256 the caller has verified (nbenv.fetch)."""

    path: Path
    sha256: str
    requested: bool = False  # asked for by the user, not pulled in (PEP 376 REQUESTED)

    def __post_init__(self) -> None:
        if not _SHA256.fullmatch(self.sha256):
            raise ValueError(f"not a lowercase hex sha256: {self.sha256!r}")


class UnpackedFile(NamedTuple):  # a tuple, not a dataclass: big wheels have 10^4 of them
    path: str  # as in the archive: "pkg/mod.py", "pkg-1.0.data/scripts/tool"
    digest: str  # sha256, urlsafe base64 without padding, as RECORD spells it
    size: int
    executable: bool


@dataclass(frozen=True)
class UnpackedWheel:
    home: Path  # cache_root/unpacked/<sha256>
    filename: str
    distribution: str  # as in the file name, as pypa/installer takes it
    version: str
    dist_info: str  # the archive's own `<name>-<version>.dist-info`
    root_scheme: Scheme  # "purelib" or "platlib", from WHEEL's Root-Is-Purelib
    scripts: tuple[str, ...]  # entry-point script names (console and gui)
    files: tuple[UnpackedFile, ...]

    @property
    def tree(self) -> Path:
        return self.home / "tree"

    @property
    def data_dir(self) -> str:
        return self.dist_info[: -len(".dist-info")] + ".data"


@dataclass(frozen=True)
class InstallReport:
    wheels: int
    unpacked: int  # wheels unpacked into the cache by this call; the rest were cached
    linked: int
    copied: int
    written: int  # scripts and install metadata (INSTALLER, REQUESTED, RECORD)
    bytes: int  # placed into the env, however they got there
    seconds: float


# --- venv and bytecode ---------------------------------------------------------------------


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
    argv = [str(python), "-m", "venv", "--without-pip", str(env_dir)]
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VenvCreationError(str(python), str(exc)) from None
    if done.returncode != 0:
        raise VenvCreationError(str(python), (done.stdout + done.stderr).decode(errors="replace"))
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
    layout = _query_layout(python, env_dir)
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
class _Layout:
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


def _query_layout(python: Path, env_dir: Path) -> _Layout:
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
        layout = _Layout(
            purelib=os.path.normpath(paths["purelib"]),
            platlib=os.path.normpath(paths["platlib"]),
            scripts=os.path.normpath(paths["scripts"]),
            data=os.path.normpath(paths["data"]),
            python_version=str(paths["version"]),
        )
    except (KeyError, TypeError) as exc:
        raise InstallError(f"{python} reported no install path for {exc}") from None
    real_env = os.path.realpath(env_dir)
    for where in (layout.purelib, layout.platlib, layout.scripts, layout.data):
        real = os.path.realpath(where)
        if os.path.commonpath([real, real_env]) != real_env:
            raise InstallError(f"{python} installs into {where}, outside the env {env_dir}")
    return layout


# --- the unpacked-wheel cache --------------------------------------------------------------


class WheelCache:
    """Wheels unpacked once, by content hash, shared by every env (and every process)."""

    def __init__(self, cache_root: Path, *, lock_timeout: float = _LOCK_TIMEOUT) -> None:
        self.root = cache_root / "unpacked"
        self._lock_timeout = lock_timeout

    def unpacked(self, wheel: WheelToInstall) -> UnpackedWheel:
        return self.get(wheel)[0]

    def get(self, wheel: WheelToInstall) -> tuple[UnpackedWheel, bool]:
        """The unpacked wheel, and whether this call unpacked it (False: it was cached)."""
        home = self.root / wheel.sha256
        cached = _load_manifest(home)
        if cached is not None:
            return cached, False
        self.root.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(self.root / f"{wheel.sha256}.lock"))
        try:
            with lock.acquire(timeout=self._lock_timeout):
                cached = _load_manifest(home)  # unpacked by whoever held the lock before us
                if cached is not None:
                    return cached, False
                shutil.rmtree(home, ignore_errors=True)  # a manifest we cannot read: redo
                for stale in self.root.glob(f".tmp-{wheel.sha256}-*"):  # a dead unpacker's
                    shutil.rmtree(stale, ignore_errors=True)
                return _unpack(wheel, home), True
        except filelock.Timeout:
            raise InstallError(
                f"another process is still unpacking {wheel.path.name} (lock: {lock.lock_file})"
            ) from None


def _load_manifest(home: Path) -> UnpackedWheel | None:
    try:
        data = json.loads((home / "manifest.json").read_bytes())
        if data["format"] != _MANIFEST_FORMAT:
            return None
        # trusted as written: every path passed _unsafe_member before it was unpacked
        files = tuple(UnpackedFile(p, d, int(s), bool(x)) for p, d, s, x in data["files"])
        return UnpackedWheel(
            home=home,
            filename=data["filename"],
            distribution=data["distribution"],
            version=data["version"],
            dist_info=data["dist_info"],
            root_scheme=Scheme(data["root_scheme"]),
            scripts=tuple(data["scripts"]),
            files=files,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _unsafe_member(name: str) -> bool:
    """True for a name that could land outside the directory it is unpacked into."""
    if not name or "\\" in name or "\0" in name or name.startswith("/") or _DRIVE.match(name):
        return True
    parts = name[:-1].split("/") if name.endswith("/") else name.split("/")
    return any(part in ("", ".", "..") for part in parts)


@dataclass(frozen=True)
class _Checked:
    """What inspecting an archive found, before anything of it is written."""

    distribution: str
    version: str
    dist_info: str
    root_scheme: Scheme
    scripts: tuple[str, ...]
    members: tuple[zipfile.ZipInfo, ...]  # to unpack
    records: dict[str, RecordEntry]


def _unpack(wheel: WheelToInstall, home: Path) -> UnpackedWheel:
    name = wheel.path.name
    _check_sha256(wheel)
    try:
        archive = zipfile.ZipFile(wheel.path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise InvalidWheelError(name, f"not a readable zip archive ({exc})") from None
    with archive:
        checked = _inspect(archive, name)
        work = Path(tempfile.mkdtemp(prefix=f".tmp-{wheel.sha256}-", dir=home.parent))
        try:
            files = _extract(archive, checked, work / "tree", name)
            manifest = {
                "format": _MANIFEST_FORMAT,
                "filename": name,
                "distribution": checked.distribution,
                "version": checked.version,
                "dist_info": checked.dist_info,
                "root_scheme": checked.root_scheme,
                "scripts": list(checked.scripts),
                "files": [list(f) for f in files],
            }
            (work / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
            os.rename(work, home)  # same directory: atomic, and only ever complete
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    loaded = _load_manifest(home)
    assert loaded is not None
    return loaded


def _check_sha256(wheel: WheelToInstall) -> None:
    """The cache is keyed by this hash: a wrong pairing must not poison it for everyone."""
    hasher = hashlib.sha256()
    try:
        with wheel.path.open("rb") as stream:
            while block := stream.read(_CHUNK):
                hasher.update(block)
    except OSError as exc:
        raise InvalidWheelError(wheel.path.name, f"cannot read it ({exc})") from None
    if hasher.hexdigest() != wheel.sha256:
        raise InvalidWheelError(
            wheel.path.name, f"its sha256 is {hasher.hexdigest()}, not {wheel.sha256}"
        )


def _inspect(archive: zipfile.ZipFile, name: str) -> _Checked:
    infos = archive.infolist()
    names = [info.filename for info in infos]
    for member in names:
        if _unsafe_member(member):
            raise UnsafeWheelError(name, member)
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise InvalidWheelError(name, f"it holds {twice[0]!r} more than once")
    try:
        source = WheelFile(archive)
        dist_info = source.dist_info_dir
        for required in ("METADATA", "WHEEL", "RECORD"):
            if f"{dist_info}/{required}" not in names:
                raise InvalidWheelError(name, f"it has no {dist_info}/{required}")
        source.validate_record(validate_contents=False)  # contents: checked as they unpack
        wheel_meta = parse_metadata_file(source.read_dist_info("WHEEL"))
        records = {
            row[0]: RecordEntry.from_elements(*row)
            for row in parse_record_file(source.read_dist_info("RECORD").splitlines())
        }
    except (InstallerError, ValueError) as exc:
        issues = getattr(exc, "issues", None) or [str(exc)]
        raise InvalidWheelError(name, "\n  " + "\n  ".join(map(str, issues))) from None
    if not str(wheel_meta["Wheel-Version"] or "").startswith("1."):
        raise InvalidWheelError(name, f"Wheel-Version {wheel_meta['Wheel-Version']} is not 1.x")
    data_dir = dist_info[: -len(".dist-info")] + ".data/"
    members = []
    for info in infos:
        path = info.filename
        if path.endswith("/") or "__pycache__" in path.split("/")[:-1]:
            continue  # directories come with files; stale bytecode is a risk, never needed
        if path.startswith(dist_info + "/") and path[len(dist_info) + 1 :] in (
            _INSTALL_TIME_FILES + _SIGNATURES
        ):
            continue
        if path.startswith(data_dir):
            scheme, _, rest = path[len(data_dir) :].partition("/")
            if scheme not in SCHEME_NAMES or not rest:
                raise InvalidWheelError(name, f"{path} is not in a valid .data subdirectory")
        members.append(info)
    return _Checked(
        distribution=source.distribution,
        version=source.version,
        dist_info=dist_info,
        root_scheme=Scheme("purelib" if wheel_meta["Root-Is-Purelib"] == "true" else "platlib"),
        scripts=_script_names(source, name),
        members=tuple(members),
        records=records,
    )


def _script_names(source: WheelFile, name: str) -> tuple[str, ...]:
    if "entry_points.txt" not in source.dist_info_filenames:
        return ()
    member = f"{source.dist_info_dir}/entry_points.txt"
    try:
        entries = list(parse_entrypoints(source.read_dist_info("entry_points.txt")))
    except (AssertionError, AttributeError, ValueError, configparser.Error):
        # installer asserts on a malformed entry point; refuse it here, with a message
        raise InvalidWheelError(name, f"{member} cannot be parsed") from None
    scripts = tuple(script for script, _, _, _ in entries)
    for script in scripts:
        if "/" in script or _unsafe_member(script):
            raise UnsafeWheelError(name, f"{member}: {script}")
    return scripts


def _extract(
    archive: zipfile.ZipFile, checked: _Checked, tree: Path, name: str
) -> list[UnpackedFile]:
    files = []
    made: set[Path] = set()
    for info in checked.members:
        target = tree / info.filename
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        record = checked.records[info.filename]  # validate_record: every member is listed
        digest, size = _copy_checked(archive, info, target, record, name)
        mode = info.external_attr >> 16
        executable = bool(mode and stat.S_ISREG(mode) and mode & 0o111)  # as installer reads it
        if executable:
            _make_executable(target)
        files.append(UnpackedFile(info.filename, digest, size, executable))
    return files


def _copy_checked(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, record: RecordEntry, name: str
) -> tuple[str, int]:
    """Unpack one member, hashing as it goes; refuse it if RECORD disagrees."""
    sha256 = hashlib.sha256()
    other = None
    if record.hash_ is not None and record.hash_.name != "sha256":
        other = hashlib.new(record.hash_.name)
    limit = record.size if record.size is not None else None
    size = 0
    with archive.open(info) as stream, target.open("xb") as out:
        while block := stream.read(_CHUNK):
            size += len(block)
            if limit is not None and size > limit:  # stop a lying entry before it fills disks
                break
            sha256.update(block)
            if other is not None:
                other.update(block)
            out.write(block)
    digest = _b64(sha256.digest())
    if record.hash_ is not None or record.size is not None:
        expected = record.hash_.value if record.hash_ is not None else None
        actual = _b64(other.digest()) if other is not None else digest
        if (limit is not None and size != limit) or (expected is not None and actual != expected):
            raise InvalidWheelError(
                name, f"{info.filename} does not match its RECORD entry (hash or size differ)"
            )
    return digest, size


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _make_executable(path: Path | str) -> None:
    # x wherever r is set: honours the umask without reading it (os.umask is process-wide
    # and would race with other threads creating files)
    mode = os.stat(path).st_mode
    os.chmod(path, mode | (mode & 0o444) >> 2)


# --- installing ----------------------------------------------------------------------------


def install_wheels(
    env_dir: Path,
    wheels: Sequence[WheelToInstall],
    *,
    cache_root: Path,
    link_mode: LinkMode = "auto",
    reporter: Reporter | None = None,
    workers: int = 8,
    final_dir: Path | None = None,
) -> InstallReport:
    """Install `wheels` into the venv at `env_dir`; the env is usable on return.

    Regular files are hardlinks of the unpacked cache (`auto` copies when the filesystems
    differ, `hardlink` raises then, `copy` always copies). `final_dir`, when the caller will
    rename the env, is what scripts' shebangs name. `workers` threads unpack wheels new to
    the cache. Compile bytecode after, with `compile_bytecode`, once the env is in its final
    place.
    """
    started = time.perf_counter()
    if link_mode not in ("auto", "hardlink", "copy"):
        raise ValueError(f"unknown link mode {link_mode!r}")
    report = reporter or NullReporter()
    env_dir = Path(os.path.abspath(env_dir))
    python = env_python(env_dir)
    layout = _query_layout(python, env_dir)
    interpreter = str(Path(os.path.abspath(final_dir or env_dir)) / python.relative_to(env_dir))
    unique = _dedupe(wheels)

    cache = WheelCache(cache_root)
    got = _parallel(cache.get, unique, workers, report, _STAGE_UNPACK)
    unpacked = [wheel for wheel, _ in got]
    shared = _check_conflicts(layout, unpacked)

    linker = _Linker(link_mode, report)

    def install_one(index: int) -> _Tally:
        return _install_one(unique[index], unpacked[index], layout, interpreter, linker, shared)

    link_workers = min(workers, _LINK_WORKERS)
    tallies = _parallel(install_one, range(len(unique)), link_workers, report, _STAGE_INSTALL)
    return InstallReport(
        wheels=len(unique),
        unpacked=sum(1 for _, fresh in got if fresh),
        linked=sum(t.linked for t in tallies),
        copied=sum(t.copied for t in tallies),
        written=sum(t.written for t in tallies),
        bytes=sum(t.bytes for t in tallies),
        seconds=time.perf_counter() - started,
    )


def _dedupe(wheels: Sequence[WheelToInstall]) -> list[WheelToInstall]:
    by_hash: dict[str, WheelToInstall] = {}
    for wheel in wheels:
        prior = by_hash.get(wheel.sha256)
        if prior is None or (wheel.requested and not prior.requested):
            by_hash[wheel.sha256] = wheel
    return list(by_hash.values())


def _join(root: str, relative: str) -> str:
    # `relative` passed _unsafe_member: no "..", "." or empty parts, so no normpath needed
    return root + os.sep + (relative if os.sep == "/" else relative.replace("/", os.sep))


def _placement(path: str, data_dir: str, root_scheme: str) -> tuple[str, str]:
    """(scheme, path within it) of an archive member, as installer's _determine_scheme;
    `data_dir` ends with "/"."""
    if path.startswith(data_dir):
        scheme, _, rest = path[len(data_dir) :].partition("/")
        return scheme, rest
    return root_scheme, path


def _targets(wheel: UnpackedWheel, schemes: dict[str, str]) -> Iterator[tuple[str, str | None]]:
    """Every path a wheel writes, with the sha256 of its bytes (None: made at install time)."""
    record = f"{wheel.dist_info}/RECORD"
    data_dir = wheel.data_dir + "/"
    for file in wheel.files:
        if file.path != record:
            scheme, path = _placement(file.path, data_dir, wheel.root_scheme)
            yield _join(schemes[scheme], path), file.digest
    root = schemes[wheel.root_scheme]
    for generated in ("RECORD", *_INSTALL_TIME_FILES):
        yield _join(root, f"{wheel.dist_info}/{generated}"), None
    suffix = "" if get_launcher_kind() == "posix" else ".exe"
    for script in wheel.scripts:
        yield _join(schemes["scripts"], script + suffix), None


def _check_conflicts(layout: _Layout, wheels: Sequence[UnpackedWheel]) -> frozenset[str]:
    """Refuse two wheels writing one path, unless with identical bytes (old-style namespace
    `__init__.py` files are the classic case); return those shared paths."""
    owners: dict[str, tuple[int, str | None]] = {}
    shared: set[str] = set()
    for index, wheel in enumerate(wheels):
        for target, digest in _targets(wheel, layout.schemes(wheel.distribution)):
            prior = owners.setdefault(target, (index, digest))
            if prior[0] == index:
                continue
            if digest is None or prior[1] != digest:
                raise InstallConflictError(target, (wheels[prior[0]].filename, wheel.filename))
            shared.add(target)
    return frozenset(shared)


@dataclass
class _Tally:  # mutable on purpose: one per wheel, touched by one thread
    linked: int = 0
    copied: int = 0
    written: int = 0
    bytes: int = 0


def _install_one(
    wheel: WheelToInstall,
    unpacked: UnpackedWheel,
    layout: _Layout,
    interpreter: str,
    linker: _Linker,
    shared: frozenset[str],
) -> _Tally:
    destination = _LinkingDestination(
        scheme_dict=layout.schemes(unpacked.distribution),
        interpreter=interpreter,
        script_kind=get_launcher_kind(),
        bytecode_optimization_levels=(),  # compile_bytecode does it, after, in parallel
        linker=linker,
        wheel_name=unpacked.filename,
        shared=shared,
    )
    metadata = {"INSTALLER": _INSTALLER}
    if wheel.requested:
        metadata["REQUESTED"] = b""
    try:
        installer.install(_CachedSource(unpacked), destination, additional_metadata=metadata)
    except (InstallerError, ValueError) as exc:
        raise InvalidWheelError(unpacked.filename, str(exc)) from exc
    except OSError as exc:
        raise InstallError(f"Installing {unpacked.filename} failed: {exc}") from exc
    return destination.tally


class _CachedMember:
    """A file of an unpacked wheel: linked by path, or read (opened on first use only)."""

    def __init__(self, path: str, digest: str, size: int) -> None:
        self.path = path
        self.digest = digest
        self.size = size
        self._file: BinaryIO | None = None

    def _open(self) -> BinaryIO:
        if self._file is None:
            self._file = open(self.path, "rb")  # noqa: SIM115  # closed by close()
        return self._file

    def read(self, size: int = -1) -> bytes:
        return self._open().read(size)

    def readline(self, size: int = -1) -> bytes:
        return self._open().readline(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._open().seek(offset, whence)

    def tell(self) -> int:
        return self._open().tell()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _CachedSource(WheelSource):
    """installer's view of an unpacked wheel: the archive's members, read from the cache."""

    def __init__(self, wheel: UnpackedWheel) -> None:
        super().__init__(wheel.distribution, wheel.version)
        self._wheel = wheel
        self._tree = str(wheel.tree)

    @property
    def dist_info_dir(self) -> str:
        return self._wheel.dist_info

    @property
    def data_dir(self) -> str:
        return self._wheel.data_dir

    @property
    def dist_info_filenames(self) -> list[str]:
        prefix = self._wheel.dist_info + "/"
        return [f.path[len(prefix) :] for f in self._wheel.files if f.path.startswith(prefix)]

    def read_dist_info(self, filename: str) -> str:
        return (self._wheel.tree / self._wheel.dist_info / filename).read_text(encoding="utf-8")

    def get_contents(self) -> Iterator[WheelContentElement]:
        for file in self._wheel.files:
            member = _CachedMember(_join(self._tree, file.path), file.digest, file.size)
            try:
                elements = (file.path, f"sha256={file.digest}", str(file.size))
                yield elements, cast(BinaryIO, member), file.executable
            finally:
                member.close()


class _Linker:
    """Places cached files into envs (thread-safe); remembers when links cannot work."""

    def __init__(self, mode: LinkMode, reporter: Reporter) -> None:
        self._mode = mode
        self._copying = mode == "copy"
        self._reporter = reporter
        self._lock = threading.Lock()

    def place(self, source: str, target: str) -> bool:
        """Link (True) or copy (False); FileExistsError when `target` exists."""
        if not self._copying:
            try:
                os.link(source, target)
                return True
            except FileExistsError:
                raise
            except OSError as exc:
                if self._mode == "hardlink":
                    raise InstallError(
                        f"Cannot hardlink {source} to {target}: {exc.strerror}. "
                        "Use link mode 'auto' or 'copy'."
                    ) from None
                if exc.errno in _LINKS_IMPOSSIBLE:
                    self._stop_linking(exc)
                elif exc.errno != errno.EMLINK:  # EMLINK: this file only has too many links
                    raise
        _copy(source, target)
        return False

    def _stop_linking(self, exc: OSError) -> None:
        with self._lock:
            if not self._copying:
                self._copying = True
                self._reporter.note(
                    f"cannot hardlink from the wheel cache ({exc.strerror}); copying files"
                )


def _copy(source: str, target: str) -> None:
    with open(source, "rb") as src, open(target, "xb") as dst:
        shutil.copyfileobj(src, dst, _CHUNK)
    shutil.copymode(source, target)


@dataclass(kw_only=True)
class _LinkingDestination(SchemeDictionaryDestination):
    """installer's destination, with regular files linked from the cache and every file
    created exclusively (a path written twice is a conflict, never a silent overwrite)."""

    linker: _Linker
    wheel_name: str
    shared: frozenset[str]  # identical in several wheels: whoever comes first places it
    tally: _Tally = field(default_factory=_Tally)
    _made: set[str] = field(default_factory=set)

    def _target(self, scheme: Scheme, path: str) -> str:
        target = _join(self.scheme_dict[scheme], path)
        parent = target.rpartition(os.sep)[0]
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)  # exist_ok: other threads make dirs too
            self._made.add(parent)
        return target

    def write_file(
        self,
        scheme: Scheme,
        path: str | os.PathLike[str],
        stream: BinaryIO,
        is_executable: bool,
    ) -> RecordEntry:
        if scheme == "scripts" or not isinstance(stream, _CachedMember):
            return super().write_file(scheme, path, stream, is_executable)  # shebangs
        relative = os.fspath(path)
        target = self._target(scheme, relative)
        record = RecordEntry(relative, Hash("sha256", stream.digest), stream.size)
        try:
            linked = self.linker.place(stream.path, target)
        except FileExistsError:
            if target in self.shared:
                return record
            raise InstallConflictError(target, (self.wheel_name,)) from None
        if linked:
            self.tally.linked += 1
        else:
            self.tally.copied += 1
        self.tally.bytes += stream.size
        return record

    def write_to_fs(
        self, scheme: Scheme, path: str, stream: BinaryIO, is_executable: bool
    ) -> RecordEntry:
        target = self._target(scheme, path)
        try:
            with open(target, "xb") as out:
                digest, size = copyfileobj_with_hashing(stream, out, self.hash_algorithm)
        except FileExistsError:
            raise InstallConflictError(target, (self.wheel_name,)) from None
        if is_executable:
            _make_executable(target)
        self.tally.written += 1
        self.tally.bytes += size
        return RecordEntry(path, Hash(self.hash_algorithm, digest), size)


def _parallel(
    work: Callable[[_T], _R],
    items: Sequence[_T],
    workers: int,
    reporter: Reporter,
    stage: str,
) -> list[_R]:
    """`work` over `items` on a thread pool, results in order; the first failure cancels
    what has not started and is raised once the running ones finish."""
    reporter.stage(stage)
    if not items:
        return []
    results: dict[int, _R] = {}
    with ThreadPoolExecutor(max(1, min(workers, len(items))), "nbenv-install") as pool:
        futures = {pool.submit(work, item): index for index, item in enumerate(items)}
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                reporter.progress(stage, len(results), len(items))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return [results[index] for index in range(len(items))]
