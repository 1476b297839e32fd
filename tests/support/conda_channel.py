"""Real conda packages (`.tar.bz2` and `.conda`) and a local channel indexed by rattler.

    path = build_conda_package(out, "hello-tool", "1.0", files={"bin/hello-tool": SCRIPT},
                               executables=["bin/hello-tool"])
    channel = build_channel(tmp / "channel")        # the fixed universe below, indexed

A package holds `info/index.json`, `info/paths.json` (sha256, size, path_type and, for text
files holding PLACEHOLDER, the prefix placeholder), `info/files` and the payload. `.conda` is
a stored zip of `metadata.json`, `pkg-<stem>.tar.zst` and `info-<stem>.tar.zst` (needs
zstandard). Archives are reproducible: fixed times, owners and order.

The `python` package of the universe is NOT an interpreter built for conda (that cannot be
built here): it is a venv-style shim, `bin/python` -> the interpreter running the tests plus
`pyvenv.cfg`, so that `<prefix>/bin/python` runs with `sys.prefix == <prefix>` and
`<prefix>/lib/pythonX.Y/site-packages` on its path, the layout a real conda python gives.
Its version is the running interpreter's. It is built for this machine only.
"""

from __future__ import annotations

import asyncio
import bz2
import hashlib
import io
import json
import os
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "PLACEHOLDER",
    "PYTHON_VERSION",
    "ChannelServer",
    "CondaChannel",
    "build_channel",
    "build_conda_package",
    "build_from_dist",
    "index_channel",
    "native_subdir",
    "serve_channel",
]

# conda-build's historic placeholder: installers replace it with the target prefix.
PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"
PYTHON_VERSION = "{}.{}.{}".format(*sys.version_info[:3])
_MTIME = 315532800  # 1980-01-01, as in the wheels the PyPI fixtures build
_TIMESTAMP_MS = 1_700_000_000_000  # index.json "timestamp": fixed, so repodata is stable

Contents = Mapping[str, "bytes | str"]


def native_subdir() -> str:
    """The conda subdir of this machine (`linux-64`, `osx-arm64`, ...)."""
    import rattler

    return str(rattler.Subdir.current())


@dataclass(frozen=True)
class _Entry:
    path: str
    data: bytes
    executable: bool = False
    link: str | None = None  # a symlink to this target


def _tar_bytes(entries: Sequence[_Entry]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(entries, key=lambda e: e.path):
            info = tarfile.TarInfo(entry.path)
            info.mtime = _MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if entry.link is not None:
                info.type = tarfile.SYMTYPE
                info.linkname = entry.link
                info.mode = 0o777
                tar.addfile(info)
                continue
            info.size = len(entry.data)
            info.mode = 0o755 if entry.executable else 0o644
            tar.addfile(info, io.BytesIO(entry.data))
    return buffer.getvalue()


def _paths_json(entries: Sequence[_Entry]) -> dict[str, Any]:
    paths: list[dict[str, Any]] = []
    for entry in sorted(entries, key=lambda e: e.path):
        if entry.link is not None:
            paths.append({"_path": entry.path, "path_type": "softlink"})
            continue
        item: dict[str, Any] = {
            "_path": entry.path,
            "path_type": "hardlink",
            "sha256": hashlib.sha256(entry.data).hexdigest(),
            "size_in_bytes": len(entry.data),
        }
        if PLACEHOLDER.encode() in entry.data:
            item["file_mode"] = "text"
            item["prefix_placeholder"] = PLACEHOLDER
        paths.append(item)
    return {"paths": paths, "paths_version": 1}


def _dist_info(name: str, version: str) -> dict[str, bytes]:
    """A `.dist-info` as conda-forge packages ship them (METADATA, INSTALLER, RECORD)."""
    folder = f"{name.replace('-', '_')}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n".encode()
    files = {f"{folder}/METADATA": metadata, f"{folder}/INSTALLER": b"conda\n"}
    record = "".join(f"{path},,\n" for path in files) + f"{folder}/RECORD,,\n"
    files[f"{folder}/RECORD"] = record.encode()
    return files


def build_conda_package(
    out_dir: Path,
    name: str,
    version: str,
    build: str = "h0_0",
    *,
    depends: Sequence[str] = (),
    files: Contents | None = None,
    subdir: str = "linux-64",
    fmt: Literal["tar.bz2", "conda"] = "tar.bz2",
    python_dist: tuple[str, str] | None = None,
    executables: Sequence[str] = (),
    symlinks: Mapping[str, str] | None = None,
    build_number: int | None = None,
) -> Path:
    """Write `<out_dir>/<subdir>/<name>-<version>-<build>.<fmt>` and return its path.

    `files` maps prefix-relative paths to contents; `executables` names those that get mode
    0755; `symlinks` maps paths to link targets. A noarch package (`subdir="noarch"`) is
    `noarch: python` when it has a `python_dist` or depends on python, else `generic`.
    `python_dist=(name, version)` adds that `.dist-info` under site-packages (`site-packages/`
    for noarch python, as conda-build lays them out; else `lib/pythonX.Y/site-packages/`).
    """
    entries = [
        _Entry(path, data.encode() if isinstance(data, str) else data, path in executables)
        for path, data in (files or {}).items()
    ]
    entries += [_Entry(path, b"", link=target) for path, target in (symlinks or {}).items()]
    noarch = None
    if subdir == "noarch":
        wants_python = python_dist is not None or any(d.split()[0] == "python" for d in depends)
        noarch = "python" if wants_python else "generic"
    if python_dist is not None:
        site = "site-packages" if noarch == "python" else _site_packages()
        dist_files = _dist_info(*python_dist)
        entries += [_Entry(f"{site}/{path}", data) for path, data in dist_files.items()]
    if build_number is None:
        digits = build.rpartition("_")[2]
        build_number = int(digits) if digits.isdigit() else 0
    index: dict[str, Any] = {
        "name": name,
        "version": version,
        "build": build,
        "build_number": build_number,
        "depends": list(depends),
        "license": "BSD-3-Clause",
        "subdir": subdir,
        "timestamp": _TIMESTAMP_MS,
    }
    if noarch is not None:
        index["noarch"] = noarch
    else:
        platform, _, arch = subdir.partition("-")
        index["platform"] = platform
        index["arch"] = {"64": "x86_64", "aarch64": "aarch64", "arm64": "arm64"}.get(arch, arch)
    info = [
        _Entry("info/index.json", _json(index)),
        _Entry("info/paths.json", _json(_paths_json(entries))),
        _Entry("info/files", "".join(f"{e.path}\n" for e in sorted(entries, key=_path)).encode()),
    ]
    stem = f"{name}-{version}-{build}"
    target = out_dir / subdir / f"{stem}.{fmt}"
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "tar.bz2":
        target.write_bytes(bz2.compress(_tar_bytes([*info, *entries]), 9))
    else:
        _write_conda(target, stem, info, entries)
    return target


def _write_conda(target: Path, stem: str, info: list[_Entry], payload: list[_Entry]) -> None:
    import zstandard  # only `.conda` needs it

    compressor = zstandard.ZstdCompressor(level=19)
    members = [
        ("metadata.json", _json({"conda_pkg_format_version": 2})),
        (f"pkg-{stem}.tar.zst", compressor.compress(_tar_bytes(payload))),
        (f"info-{stem}.tar.zst", compressor.compress(_tar_bytes(info))),
    ]
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        for member, data in members:
            archive.writestr(zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0)), data)


def _json(value: object) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True).encode()


def _path(entry: _Entry) -> str:
    return entry.path


def _site_packages() -> str:
    return "lib/python{}.{}/site-packages".format(*sys.version_info[:2])


# -- the universe -------------------------------------------------------------------------

HELLO = f"""#!/bin/sh
echo "hello from hello-tool 1.0 in {PLACEHOLDER}"
"""

# foo-app "links" to libfoo: it reads the library its prefix holds, as a loader would.
FOO_APP = """#!/bin/sh
here="$(cd "$(dirname "$0")/.." && pwd)"
echo "foo-app 1.0 using $(cat "$here/lib/libfoo.so")"
"""


# as GDAL or MPI packages do: activation sets a variable pointing into the prefix
FOO_ACTIVATE = 'export FOO_APP_HOME="$CONDA_PREFIX/share/foo-app"\n'


@dataclass(frozen=True)
class CondaChannel:
    path: Path
    url: str  # file:// URL of the channel directory
    subdir: str  # the native subdir its platform packages are built for


def build_channel(root: Path) -> Path:
    """Build the fixed universe under `root` and index it; returns `root`.

    hello-tool 1.0   `bin/hello-tool` (sh), native .tar.bz2 and osx-arm64 .conda
    libfoo 1.0, 2.0  `lib/libfoo.so.N` + `lib/libfoo.so` link; 1.0 .tar.bz2, 2.0 .conda
    foo-app 1.0      depends on `libfoo >=2`; `bin/foo-app` prints the libfoo it finds;
                     an activate.d script sets FOO_APP_HOME
    conflict-a 1.0   depends on `libfoo <2` (with foo-app: a conflict)
    python X.Y.Z     the venv-style shim (see the module docstring), native .tar.bz2
    purepy 1.0       noarch python, `purepy/__init__.py` + `purepy-1.0.dist-info`, .conda
    gpu-lib 1.0      depends on `__cuda >=12`
    """
    native = native_subdir()
    (root / "noarch").mkdir(parents=True, exist_ok=True)
    build_conda_package(
        root, "hello-tool", "1.0", subdir=native, files={"bin/hello-tool": HELLO},
        executables=["bin/hello-tool"],
    )  # fmt: skip
    build_conda_package(
        root, "hello-tool", "1.0", "h1_0", subdir="osx-arm64", fmt="conda",
        files={"bin/hello-tool": HELLO}, executables=["bin/hello-tool"],
    )  # fmt: skip
    for version, fmt in (("1.0", "tar.bz2"), ("2.0", "conda")):
        major = version.split(".")[0]
        build_conda_package(
            root, "libfoo", version, subdir=native, fmt=fmt,  # type: ignore[arg-type]
            files={f"lib/libfoo.so.{major}": f"libfoo {version}\n"},
            symlinks={"lib/libfoo.so": f"libfoo.so.{major}"},
        )  # fmt: skip
    build_conda_package(
        root, "foo-app", "1.0", subdir=native, depends=["libfoo >=2"],
        files={"bin/foo-app": FOO_APP, "etc/conda/activate.d/foo-app.sh": FOO_ACTIVATE},
        executables=["bin/foo-app"],
    )  # fmt: skip
    build_conda_package(
        root, "conflict-a", "1.0", subdir=native, depends=["libfoo <2"],
        files={"share/conflict-a/README": "needs the old libfoo\n"},
    )  # fmt: skip
    _build_python_shim(root, native)
    build_conda_package(
        root, "purepy", "1.0", "pyh0_0", subdir="noarch", fmt="conda", depends=["python >=3.8"],
        files={"site-packages/purepy/__init__.py": '__version__ = "1.0"\n'},
        python_dist=("purepy", "1.0"),
    )  # fmt: skip
    build_conda_package(
        root, "gpu-lib", "1.0", subdir=native, depends=["__cuda >=12"],
        files={"lib/libgpu.so": "gpu\n"},
    )  # fmt: skip
    index_channel(root)
    return root


def build_from_dist(out_dir: Path, dist: Any, *, build: str = "pyh0_0") -> Path:
    """A noarch python conda package of an installed distribution (`importlib.metadata`),
    its files under `site-packages/` as conda-forge lays them out, its `.dist-info` kept:
    e.g. the real ipywidgets as a conda package."""
    name = str(dist.metadata["Name"]).lower().replace("_", "-")
    files: dict[str, bytes | str] = {}
    for file in dist.files or []:
        if "__pycache__" in file.parts or file.parts[0] == ".." or file.name in ("RECORD",):
            continue
        source = Path(str(dist.locate_file(file)))
        if source.is_file():
            files[f"site-packages/{file.as_posix()}"] = source.read_bytes()
    return build_conda_package(out_dir, name, dist.version, build, subdir="noarch",
                               depends=["python >=3.8"], files=files)  # fmt: skip


def _build_python_shim(root: Path, subdir: str) -> None:
    major, minor = sys.version_info[:2]
    base = Path(sys.base_prefix)
    executable = Path(sys._base_executable if hasattr(sys, "_base_executable") else sys.executable)
    pyvenv = f"home = {executable.parent}\ninclude-system-site-packages = false\n"
    pyvenv += f"version = {PYTHON_VERSION}\n"
    build_conda_package(
        root, "python", PYTHON_VERSION, "h0_shim", subdir=subdir,
        files={
            "pyvenv.cfg": pyvenv,
            f"lib/python{major}.{minor}/site-packages/README.txt": f"shim over {base}\n",
        },
        symlinks={
            "bin/python": str(executable.resolve()),
            "bin/python3": "python",
            f"bin/python{major}.{minor}": "python",
        },
    )  # fmt: skip


def index_channel(root: Path) -> None:
    """Write `<subdir>/repodata.json` for every subdir with rattler's indexer (plain JSON
    only: no `.zst`, no shards, so a bare static file server can serve the channel)."""
    from rattler.index import index_fs

    (root / "noarch").mkdir(parents=True, exist_ok=True)
    # a private loop: asyncio.run would leave the main thread without a current loop,
    # which tornado-based tests that run later in the session rely on
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(index_fs(root, write_zst=False, write_shards=False, force=True))
    finally:
        loop.close()


# -- an HTTP server for the channel -------------------------------------------------------


class _Handler(SimpleHTTPRequestHandler):
    token: str | None = None
    basic: str | None = None  # the expected Authorization header value
    log: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _allowed(self) -> bool:
        self.log.append(self.path)
        if self.basic is not None and self.headers.get("Authorization") != self.basic:
            self.send_error(401, "Unauthorized")
            return False
        if self.token is not None:
            prefix = f"/t/{self.token}/"
            if not self.path.startswith(prefix):
                self.send_error(403, "Forbidden")
                return False
            self.path = "/" + self.path[len(prefix) :]
        return True

    def do_GET(self) -> None:
        if self._allowed():
            super().do_GET()

    def do_HEAD(self) -> None:
        if self._allowed():
            super().do_HEAD()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients (rattler) drop connections they no longer need: not a test failure


class ChannelServer:
    """Serves a channel directory over HTTP on 127.0.0.1, optionally behind a conda token
    (`/t/<token>/...`) or basic auth; `url` is the channel URL with no credentials."""

    def __init__(
        self, root: Path, *, token: str | None = None, basic: tuple[str, str] | None = None
    ) -> None:
        import base64

        auth = None
        if basic is not None:
            auth = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
        self.log: list[str] = []
        handler = type("Handler", (_Handler,), {"token": token, "basic": auth, "log": self.log})
        self._server = _Server(("127.0.0.1", 0), partial(handler, directory=os.fspath(root)))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@contextmanager
def serve_channel(root: Path, **knobs: Any) -> Iterator[ChannelServer]:
    server = ChannelServer(root, **knobs)
    try:
        yield server
    finally:
        server.stop()


def solve_on(channel: str, *argv: str, **kwargs: object) -> Any:
    """nbenv's conda solve of `%%conda -c CHANNEL ARGV...` (a CondaSolution)."""
    from nbenv.resolve.conda import parse_conda_args, solve

    return solve(parse_conda_args(["-c", channel, *argv]), **kwargs)  # type: ignore[arg-type]
