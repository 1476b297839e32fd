"""Build real wheels and sdists from a short description, with the standard library only.

Archives are byte-for-byte reproducible (fixed timestamps, seeded padding), so hashes are
stable between runs. The sdists carry an in-tree PEP 517 backend with no build requirements,
so building them needs no network at all.
"""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import random
import re
import stat
import tarfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

__all__ = [
    "BACKEND_MODULE",
    "build_sdist",
    "build_wheel",
    "dist_name",
    "import_name",
    "metadata_text",
    "read_wheel_metadata",
    "record_digest",
    "sha256_file",
    "wheel_filename",
]

BACKEND_MODULE = "nbenv_test_backend"
GENERATOR = "nbenv-tests (1.0)"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # earliest time zip can store; keeps archives reproducible
_SDIST_MTIME = 315532800  # the same instant, for tar


def dist_name(name: str) -> str:
    """The distribution part of a file name: PEP 503 normalized, then `-` as `_`."""
    return re.sub(r"[-_.]+", "_", name).lower()


def import_name(name: str) -> str:
    return dist_name(name)


def wheel_filename(name: str, version: str, tag: str = "py3-none-any") -> str:
    return f"{dist_name(name)}-{version}-{tag}.whl"


def record_digest(data: bytes) -> str:
    """`sha256=<urlsafe b64, no padding>` as RECORD files spell it."""
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def metadata_text(
    name: str,
    version: str,
    *,
    requires_dist: Sequence[str] = (),
    requires_python: str | None = None,
    provides_extra: Sequence[str] = (),
    metadata_version: str = "2.1",
) -> str:
    """Core metadata (the METADATA / PKG-INFO file) for a distribution."""
    lines = [
        f"Metadata-Version: {metadata_version}",
        f"Name: {name}",
        f"Version: {version}",
        f"Summary: {name} test distribution",
    ]
    if requires_python is not None:
        lines.append(f"Requires-Python: {requires_python}")
    lines += [f"Provides-Extra: {extra}" for extra in provides_extra]
    lines += [f"Requires-Dist: {requirement}" for requirement in requires_dist]
    return "\n".join(lines) + "\n\n"


def _expand_tags(tag: str) -> list[str]:
    """`cp39-cp39-manylinux_2_17_x86_64.manylinux2014_x86_64` -> one tag per combination."""
    pythons, abis, platforms = tag.split("-")
    return [
        f"{py}-{abi}-{plat}"
        for py in pythons.split(".")
        for abi in abis.split(".")
        for plat in platforms.split(".")
    ]


def _wheel_text(tag: str) -> str:
    expanded = _expand_tags(tag)
    purelib = all(t.split("-")[1] == "none" for t in expanded)
    lines = [
        "Wheel-Version: 1.0",
        f"Generator: {GENERATOR}",
        f"Root-Is-Purelib: {'true' if purelib else 'false'}",
    ]
    lines += [f"Tag: {t}" for t in expanded]
    return "\n".join(lines) + "\n"


def _zip_entry(
    archive: zipfile.ZipFile,
    path: str,
    data: bytes,
    *,
    stored: bool = False,
    executable: bool = False,
) -> None:
    info = zipfile.ZipInfo(path, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    # Regular-file type bits too: installers check S_ISREG before honouring the x bit.
    info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
    archive.writestr(info, data)


def build_wheel(
    out_dir: Path,
    name: str,
    version: str,
    *,
    requires_dist: Sequence[str] = (),
    requires_python: str | None = None,
    provides_extra: Sequence[str] = (),
    tag: str = "py3-none-any",
    modules: Mapping[str, str] | None = None,
    console_scripts: Mapping[str, str] | None = None,
    data_files: Mapping[str, str] | None = None,
    pad_bytes: int = 0,
) -> Path:
    """Write a wheel into `out_dir` and return its path.

    `modules` maps archive paths to text (default: `<import>/__init__.py` with `__version__`);
    `console_scripts` maps script names to `module:function`; `data_files` maps
    `<scheme>/<path>` (e.g. `scripts/tool`, `data/share/x`) into the `.data` directory.
    `pad_bytes` adds a stored (uncompressed) file of seeded random bytes placed *after*
    METADATA, so METADATA sits at least that far from the end of the archive.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    dist = dist_name(name)
    dist_info = f"{dist}-{version}.dist-info"
    if modules is None:
        modules = {f"{import_name(name)}/__init__.py": f'__version__ = "{version}"\n'}

    entries: list[tuple[str, bytes, bool]] = []  # (path, data, stored)
    entries += [(path, text.encode(), False) for path, text in modules.items()]
    entries += [
        (f"{dist}-{version}.data/{key}", text.encode(), False)
        for key, text in (data_files or {}).items()
    ]
    metadata = metadata_text(
        name,
        version,
        requires_dist=requires_dist,
        requires_python=requires_python,
        provides_extra=provides_extra,
    )
    entries.append((f"{dist_info}/METADATA", metadata.encode(), False))
    entries.append((f"{dist_info}/WHEEL", _wheel_text(tag).encode(), False))
    if console_scripts:
        lines = "".join(f"{script} = {target}\n" for script, target in console_scripts.items())
        text = f"[console_scripts]\n{lines}"
        entries.append((f"{dist_info}/entry_points.txt", text.encode(), False))
    if pad_bytes:
        seeded = random.Random(f"{dist}-{version}-{tag}")
        entries.append((f"{import_name(name)}/_pad.bin", seeded.randbytes(pad_bytes), True))

    record_path = f"{dist_info}/RECORD"
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for path, data, _ in entries:
        writer.writerow([path, record_digest(data), len(data)])
    writer.writerow([record_path, "", ""])

    wheel = out_dir / wheel_filename(name, version, tag)
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data, stored in entries:
            executable = path.startswith(f"{dist}-{version}.data/scripts/")
            _zip_entry(archive, path, data, stored=stored, executable=executable)
        _zip_entry(archive, record_path, record.getvalue().encode())
    return wheel


def read_wheel_metadata(wheel: Path) -> bytes:
    """The METADATA file of a wheel, exactly as stored (what PEP 658 serves)."""
    with zipfile.ZipFile(wheel) as archive:
        for entry in archive.namelist():
            parts = entry.split("/")
            if len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "METADATA":
                return archive.read(entry)
    raise ValueError(f"{wheel.name} has no .dist-info/METADATA")


# The in-tree backend shipped inside every sdist. Stdlib only: the isolated build env that
# frontends create for it has nothing installed. It reads everything from PKG-INFO.
_BACKEND_SOURCE = '''\
"""PEP 517 backend for nbenv test sdists (stdlib only)."""

import base64
import csv
import hashlib
import io
import os
import re
import tarfile
import zipfile
from email.parser import HeaderParser

_HERE = os.path.dirname(os.path.abspath(__file__))
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _pkg_info():
    with open(os.path.join(_HERE, "PKG-INFO"), encoding="utf-8") as stream:
        text = stream.read()
    headers = HeaderParser().parsestr(text)
    return text, headers["Name"], headers["Version"]


def _dist(name):
    return re.sub(r"[-_.]+", "_", name).lower()


def _digest(data):
    raw = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


_WHEEL = (
    "Wheel-Version: 1.0\\nGenerator: nbenv_test_backend\\nRoot-Is-Purelib: true\\n"
    "Tag: py3-none-any\\n"
)


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    pkg_info, name, version = _pkg_info()
    dist_info = f"{_dist(name)}-{version}.dist-info"
    target = os.path.join(metadata_directory, dist_info)
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, "METADATA"), "w", encoding="utf-8") as stream:
        stream.write(pkg_info)  # PKG-INFO and METADATA share one format
    with open(os.path.join(target, "WHEEL"), "w", encoding="utf-8") as stream:
        stream.write(_WHEEL)
    return dist_info


def _sources():
    for folder, dirs, files in os.walk(_HERE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for filename in sorted(files):
            full = os.path.join(folder, filename)
            rel = os.path.relpath(full, _HERE).replace(os.sep, "/")
            yield rel, full


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    pkg_info, name, version = _pkg_info()
    dist = _dist(name)
    dist_info = f"{dist}-{version}.dist-info"
    entries = []
    for rel, full in _sources():
        if "/" in rel:  # package directories only; top-level files are sdist plumbing
            with open(full, "rb") as stream:
                entries.append((rel, stream.read()))
    entries.append((dist_info + "/METADATA", pkg_info.encode()))
    entries.append((dist_info + "/WHEEL", _WHEEL.encode()))
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\\n")
    for path, data in entries:
        writer.writerow([path, _digest(data), len(data)])
    writer.writerow([dist_info + "/RECORD", "", ""])
    entries.append((dist_info + "/RECORD", record.getvalue().encode()))
    filename = f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as archive:
        for path, data in entries:
            info = zipfile.ZipInfo(path, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return filename


def build_sdist(sdist_directory, config_settings=None):
    _, name, version = _pkg_info()
    base = f"{_dist(name)}-{version}"
    filename = base + ".tar.gz"
    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz") as archive:
        for rel, full in _sources():
            archive.add(full, arcname=f"{base}/{rel}", recursive=False)
    return filename
'''


def _pyproject() -> str:
    # No [project] table on purpose: the metadata is only knowable by running the backend
    # (or reading PKG-INFO), which is the path sdist-only releases must exercise.
    return (
        f'[build-system]\nrequires = []\nbuild-backend = "{BACKEND_MODULE}"\nbackend-path = ["."]\n'
    )


def _tar_entries(archive: tarfile.TarFile, files: Iterable[tuple[str, bytes]]) -> None:
    for path, data in files:
        info = tarfile.TarInfo(path)
        info.size = len(data)
        info.mtime = _SDIST_MTIME
        info.mode = 0o644
        archive.addfile(info, io.BytesIO(data))


def build_sdist(
    out_dir: Path,
    name: str,
    version: str,
    *,
    requires_dist: Sequence[str] = (),
    requires_python: str | None = None,
) -> Path:
    """Write `<dist>-<version>.tar.gz` (PEP 625 name) with an in-tree, stdlib-only backend."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base = f"{dist_name(name)}-{version}"
    pkg_info = metadata_text(
        name, version, requires_dist=requires_dist, requires_python=requires_python
    )
    files = [
        (f"{base}/PKG-INFO", pkg_info.encode()),
        (f"{base}/pyproject.toml", _pyproject().encode()),
        (f"{base}/{BACKEND_MODULE}.py", _BACKEND_SOURCE.encode()),
        (f"{base}/{import_name(name)}/__init__.py", f'__version__ = "{version}"\n'.encode()),
    ]
    sdist = out_dir / f"{base}.tar.gz"
    # gzip stores a timestamp and file name in its header; pin both for reproducibility.
    with (
        sdist.open("wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        _tar_entries(archive, files)
    return sdist
