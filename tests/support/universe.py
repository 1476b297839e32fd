"""The fixed set of projects the test indexes serve, built once per session.

Three indexes: "main" (most projects), "extra" (for --extra-index-url: `extraonly` and an
`alpha` 3.0 that main lacks), "private" (basic auth, `private` only). Files of each index sit
in their own folder under the universe root, usable as a pip --find-links directory too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from .index_server import Index, IndexServer
from .wheels import build_sdist, build_wheel

__all__ = [
    "AUTH",
    "EXTRA",
    "MAIN",
    "NATIVEONLY_TAGS",
    "NATIVE_TAGS",
    "PRIVATE",
    "Universe",
    "UniverseFile",
    "build_universe",
]

MAIN = "main"
EXTRA = "extra"
PRIVATE = "private"
AUTH = ("alice", "s3cret")

NATIVE_TAGS = (
    "cp39-cp39-manylinux_2_17_x86_64.manylinux2014_x86_64",
    "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64",
    "cp312-cp312-macosx_11_0_arm64",
    "cp311-cp311-win_amd64",
)
NATIVEONLY_TAGS = ("cp312-cp312-macosx_11_0_arm64", "cp313-cp313-win_amd64")
BETA_PAD = 300 * 1024  # METADATA ends up ~300 KB before the end of the wheel
_FIRST_UPLOAD = datetime(2024, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class UniverseFile:
    """One built file and how its index lists it."""

    path: Path
    index: str  # MAIN, EXTRA or PRIVATE
    pep658: bool = False
    yanked: bool | str = False
    upload_time: str | None = None

    @property
    def filename(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Universe:
    root: Path
    files: tuple[UniverseFile, ...]
    _by_name: dict[str, UniverseFile] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {f.filename: f for f in self.files})

    def entries(self, index: str = MAIN) -> tuple[UniverseFile, ...]:
        return tuple(f for f in self.files if f.index == index)

    def entry(self, filename: str) -> UniverseFile:
        return self._by_name[filename]

    def path(self, filename: str) -> Path:
        return self._by_name[filename].path

    def folder(self, index: str = MAIN) -> Path:
        """The directory holding one index's files (a pip --find-links source)."""
        return self.root / index

    def make_index(self, index: str = MAIN) -> Index:
        """A fresh Index listing one index's files with their configuration."""
        listing = Index()
        for item in self.entries(index):
            listing.add(
                item.path, pep658=item.pep658, yanked=item.yanked, upload_time=item.upload_time
            )
        return listing

    def serve(self, index: str = MAIN, **knobs: Any) -> IndexServer:
        """A started server over one index; `auth` defaults to AUTH for PRIVATE."""
        if index == PRIVATE:
            knobs.setdefault("auth", AUTH)
        return IndexServer(self.make_index(index), **knobs).start()


class _Builder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: list[UniverseFile] = []

    def _upload_time(self) -> str:
        # Strictly increasing in build order, so later versions are newer uploads.
        moment = _FIRST_UPLOAD + timedelta(hours=len(self.files))
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def wheel(
        self,
        name: str,
        version: str,
        *,
        index: str = MAIN,
        pep658: bool = False,
        yanked: bool | str = False,
        tags: Sequence[str] = ("py3-none-any",),
        requires_dist: Sequence[str] = (),
        requires_python: str | None = None,
        provides_extra: Sequence[str] = (),
        pad_bytes: int = 0,
    ) -> None:
        for tag in tags:
            path = build_wheel(
                self.root / index,
                name,
                version,
                tag=tag,
                requires_dist=requires_dist,
                requires_python=requires_python,
                provides_extra=provides_extra,
                pad_bytes=pad_bytes,
            )
            self.files.append(UniverseFile(path, index, pep658, yanked, self._upload_time()))

    def sdist(self, name: str, version: str, *, requires_dist: Sequence[str] = ()) -> None:
        path = build_sdist(self.root / MAIN, name, version, requires_dist=requires_dist)
        self.files.append(UniverseFile(path, MAIN, upload_time=self._upload_time()))


def build_universe(root: Path) -> Universe:
    b = _Builder(root)
    b.wheel("alpha", "1.0", pep658=True)
    b.wheel("alpha", "2.0", pep658=True)
    # No .metadata and padded: METADATA must be read with HTTP ranges, far from the end.
    b.wheel("beta", "1.0", requires_dist=["gamma>=1"], pad_bytes=BETA_PAD)
    b.wheel("gamma", "1.0")
    b.wheel("gamma", "1.1", pep658=True)
    b.wheel("gamma", "2.0", yanked="broken build")
    b.sdist("sdistonly", "0.5", requires_dist=["alpha>=1"])
    b.wheel(
        "withextras",
        "1.0",
        provides_extra=["fast", "docs"],
        requires_dist=[
            "alpha",
            'gamma ; extra == "fast"',
            'beta ; extra == "docs" and python_version >= "3.10"',
            'winonly ; sys_platform == "win32"',
            'oldpy ; python_version < "3.10"',
        ],
    )
    b.wheel("winonly", "1.0")
    b.wheel("oldpy", "1.0")
    # A conflict two levels deep: top -> left -> shared<2, top -> middle -> right -> shared>=2.
    b.wheel("shared", "1.0")
    b.wheel("shared", "2.0")
    b.wheel("left", "1.0", requires_dist=["shared<2"])
    b.wheel("right", "1.0", requires_dist=["shared>=2"])
    b.wheel("middle", "1.0", requires_dist=["right"])
    b.wheel("top", "1.0", requires_dist=["left", "middle"])
    b.wheel("native", "0.9")
    b.wheel("native", "1.0", tags=NATIVE_TAGS)
    b.wheel("nativeonly", "1.0", tags=NATIVEONLY_TAGS)
    b.wheel("prerel", "1.0")
    b.wheel("prerel", "2.0b1")
    b.wheel("onlypre", "1.0a1")
    b.wheel("newpy", "1.0", requires_python=">=3.8")
    b.wheel("newpy", "2.0", requires_python=">=3.12")
    b.wheel("private", "1.0", index=PRIVATE)
    b.wheel("extraonly", "1.0", index=EXTRA)
    b.wheel("alpha", "3.0", index=EXTRA)
    return Universe(root, tuple(b.files))
