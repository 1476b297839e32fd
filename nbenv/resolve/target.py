"""The environment a resolution is for: python version and platform, as markers and tags.

A target may differ from the running interpreter (`--python 3.9 --platform
manylinux_2_28_x86_64` on a 3.11 machine); markers and wheel tags are computed for it.
"""

from __future__ import annotations

import hashlib
import platform
import re
import sys
from dataclasses import dataclass
from functools import cached_property

from packaging import tags
from packaging.markers import default_environment

from nbenv.errors import UsageError

__all__ = ["Target", "platform_markers"]

_MANYLINUX = re.compile(r"^manylinux_(\d+)_(\d+)_(\w+)$")
_MUSLLINUX = re.compile(r"^musllinux_(\d+)_(\d+)_(\w+)$")
_MACOS = re.compile(r"^macosx_(\d+)_(\d+)_(\w+)$")
_LEGACY_MANYLINUX = {"manylinux2014": (2, 17), "manylinux2010": (2, 12), "manylinux1": (2, 5)}
_WINDOWS = {"win_amd64": "AMD64", "win32": "x86", "win_arm64": "ARM64"}


def platform_markers(platform_tag: str) -> dict[str, str]:
    """Marker values implied by a wheel platform tag."""
    if platform_tag in _WINDOWS:
        return {
            "sys_platform": "win32",
            "platform_system": "Windows",
            "os_name": "nt",
            "platform_machine": _WINDOWS[platform_tag],
        }
    mac = _MACOS.match(platform_tag)
    if mac:
        arch = mac.group(3)
        machine = {"universal2": "arm64", "intel": "x86_64"}.get(arch, arch)
        return {
            "sys_platform": "darwin",
            "platform_system": "Darwin",
            "os_name": "posix",
            "platform_machine": machine,
        }
    linux = _MANYLINUX.match(platform_tag) or _MUSLLINUX.match(platform_tag)
    legacy = next((k for k in _LEGACY_MANYLINUX if platform_tag.startswith(k + "_")), None)
    if linux or legacy or platform_tag.startswith("linux_"):
        if linux:
            arch = linux.group(3)
        elif legacy:
            arch = platform_tag[len(legacy) + 1 :]
        else:
            arch = platform_tag[len("linux_") :]
        return {
            "sys_platform": "linux",
            "platform_system": "Linux",
            "os_name": "posix",
            "platform_machine": arch,
        }
    raise UsageError(
        f"Unknown platform tag {platform_tag!r}. Use a wheel platform tag such as "
        "manylinux_2_28_x86_64, musllinux_1_2_aarch64, macosx_11_0_arm64 or win_amd64."
    )


def _expand_platform(platform_tag: str) -> list[str]:
    """Every platform tag a wheel may carry and still install on `platform_tag`, best first."""
    manylinux = _MANYLINUX.match(platform_tag)
    if manylinux:
        major, minor, arch = int(manylinux.group(1)), int(manylinux.group(2)), manylinux.group(3)
        out = []
        for glibc_minor in range(minor, 4, -1):
            out.append(f"manylinux_{major}_{glibc_minor}_{arch}")
            for legacy, (lmajor, lminor) in _LEGACY_MANYLINUX.items():
                if (lmajor, lminor) == (major, glibc_minor):
                    out.append(f"{legacy}_{arch}")
        return [*out, f"linux_{arch}"]
    for legacy, (lmajor, lminor) in _LEGACY_MANYLINUX.items():
        if platform_tag.startswith(legacy + "_"):
            return _expand_platform(
                f"manylinux_{lmajor}_{lminor}_{platform_tag[len(legacy) + 1 :]}"
            )
    musl = _MUSLLINUX.match(platform_tag)
    if musl:
        major, minor, arch = int(musl.group(1)), int(musl.group(2)), musl.group(3)
        return [f"musllinux_{major}_{m}_{arch}" for m in range(minor, -1, -1)] + [f"linux_{arch}"]
    mac = _MACOS.match(platform_tag)
    if mac:
        version = (int(mac.group(1)), int(mac.group(2)))
        return list(tags.mac_platforms(version, mac.group(3)))
    return [platform_tag]


_PYTHON = re.compile(r"^(\d+)\.(\d+)$")


@dataclass(frozen=True)
class Target:
    """python X.Y plus a wheel platform tag; both None means "this interpreter"."""

    python: str | None = None
    platform: str | None = None
    # The exact X.Y.Z when a real interpreter is known (building an env); otherwise X.Y.0.
    patch: int | None = None

    def __post_init__(self) -> None:
        if self.python is not None and not _PYTHON.match(self.python):
            raise UsageError(f"--python wants a version like 3.11, not {self.python!r}")
        if self.platform is not None:
            platform_markers(self.platform)  # validates

    @property
    def python_version(self) -> tuple[int, int]:
        if self.python is None:
            return sys.version_info[:2]
        major, minor = self.python.split(".")
        return int(major), int(minor)

    @property
    def is_native(self) -> bool:
        return self.python is None and self.platform is None

    def describe(self) -> str:
        python = "Python {}.{}".format(*self.python_version)
        return f"{python} on {self.platform or _native_platform_name()}"

    @cached_property
    def markers(self) -> dict[str, str]:
        """Marker environment for the target (PEP 508 names)."""
        env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
        if self.python is not None:
            major, minor = self.python_version
            env["python_version"] = f"{major}.{minor}"
            # The patch level is unknown unless given; the lowest one is the safe guess.
            full = f"{major}.{minor}.{self.patch or 0}"
            env["python_full_version"] = full
            env["implementation_name"] = "cpython"
            env["platform_python_implementation"] = "CPython"
            env["implementation_version"] = full
        if self.platform is not None:
            env.update(platform_markers(self.platform))
            env["platform_release"] = ""
            env["platform_version"] = ""
        return env

    @cached_property
    def python_full_version(self) -> str:
        return self.markers["python_full_version"]

    @cached_property
    def tag_priority(self) -> dict[tags.Tag, int]:
        """Supported wheel tags mapped to a rank; lower is better."""
        if self.is_native:
            supported = list(tags.sys_tags())
        else:
            version = self.python_version
            platforms = (
                _expand_platform(self.platform)
                if self.platform is not None
                else list(tags.platform_tags())
            )
            supported = [
                *tags.cpython_tags(version, platforms=platforms),
                *tags.compatible_tags(
                    version, interpreter=f"cp{version[0]}{version[1]}", platforms=platforms
                ),
            ]
        ranks: dict[tags.Tag, int] = {}
        for rank, tag in enumerate(supported):
            ranks.setdefault(tag, rank)
        return ranks

    @cached_property
    def tag_rank(self) -> dict[str, int]:
        """`tag_priority` keyed by "interpreter-abi-platform" strings (fast lookups)."""
        return {str(tag): rank for tag, rank in self.tag_priority.items()}

    @cached_property
    def fingerprint(self) -> str:
        """Identifies what this target accepts (python version and tags), for caches."""
        text = self.python_full_version + "\n" + "\n".join(self.tag_rank)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def marker_expression(self) -> str:
        """A PEP 508 marker that is true on this target (for multi-target locks)."""
        m = self.markers
        return (
            f'python_version == "{m["python_version"]}" and sys_platform == "{m["sys_platform"]}"'
            f' and platform_machine == "{m["platform_machine"]}"'
        )


def _native_platform_name() -> str:
    return f"{sys.platform} {platform.machine()}"
