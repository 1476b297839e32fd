"""Real wheels of distributions installed in the test interpreter, without any network.

Environments must contain ipykernel and ipywidgets (and their dependency closure), and the
tests may not download them: this packs the exact installed files back into wheels (the
installed WHEEL file keeps the original tags), so the local index can serve them.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

__all__ = ["closure", "repack"]

_SKIP_META = {"INSTALLER", "REQUESTED", "RECORD", "direct_url.json"}


def closure(roots: Iterable[str]) -> list[md.Distribution]:
    """Installed distributions needed by `roots` on this interpreter (extras ignored)."""
    seen: dict[str, md.Distribution] = {}
    todo = list(roots)
    env = {k: str(v) for k, v in default_environment().items()}
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        dist = md.distribution(name)
        seen[name] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker and not requirement.marker.evaluate({**env, "extra": ""}):
                continue
            todo.append(requirement.name)
    return [seen[n] for n in sorted(seen)]


def _record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def repack(dist: md.Distribution, out_dir: Path) -> Path:
    """Pack an installed distribution into `out_dir/<name>-<version>-<tag>.whl`."""
    wheel_meta = dist.read_text("WHEEL") or ""
    tags = [
        line.split(":", 1)[1].strip() for line in wheel_meta.splitlines() if line.startswith("Tag:")
    ]
    if not tags:
        raise ValueError(f"{dist.metadata['Name']}: no Tag in its installed WHEEL file")
    name = canonicalize_name(dist.metadata["Name"]).replace("-", "_")
    version = dist.version
    pythons = sorted({t.split("-")[0] for t in tags})
    abis = sorted({t.split("-")[1] for t in tags})
    platforms = sorted({t.split("-")[2] for t in tags})
    tag = f"{'.'.join(pythons)}-{'.'.join(abis)}-{'.'.join(platforms)}"
    target = out_dir / f"{name}-{version}-{tag}.whl"
    if target.exists():
        return target
    site = Path(str(dist.locate_file("")))
    prefix = Path(sys.prefix)
    dist_info = f"{name}-{version}.dist-info"
    data_dir = f"{name}-{version}.data"
    records = []
    tmp = target.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        meta_files = []
        for file in dist.files or []:
            source = Path(str(dist.locate_file(file))).resolve()
            if "__pycache__" in file.parts or not source.is_file():
                continue
            if file.parts[0].endswith(".dist-info"):
                if file.name in _SKIP_META:
                    continue
                meta_files.append((f"{dist_info}/{file.name}", source))
                continue
            try:
                arcname = source.relative_to(site.resolve()).as_posix()
            except ValueError:
                relative = source.relative_to(prefix.resolve())
                if relative.parts[0] == "bin":
                    continue  # console scripts are written again from entry_points.txt
                arcname = f"{data_dir}/data/{relative.as_posix()}"
            data = source.read_bytes()
            info = zipfile.ZipInfo(arcname, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = (0o100755 if source.stat().st_mode & 0o111 else 0o100644) << 16
            archive.writestr(info, data)
            records.append(_record_line(arcname, data))
        for arcname, source in meta_files:  # dist-info last, as wheels have it
            data = source.read_bytes()
            archive.writestr(zipfile.ZipInfo(arcname, date_time=(2024, 1, 1, 0, 0, 0)), data)
            records.append(_record_line(arcname, data))
        records.append(f"{dist_info}/RECORD,,")
        archive.writestr(
            zipfile.ZipInfo(f"{dist_info}/RECORD", date_time=(2024, 1, 1, 0, 0, 0)),
            "\n".join(records) + "\n",
        )
    tmp.replace(target)
    return target
