"""One error hierarchy with structured fields and messages a person can act on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbenv.interpreters import Interpreter

__all__ = [
    "ConflictError",
    "DownloadError",
    "HashMismatchError",
    "IndexAccessError",
    "InstallConflictError",
    "InstallError",
    "InvalidWheelError",
    "KernelSpecError",
    "LockFileError",
    "NbenvError",
    "NoCompatibleDistributionError",
    "NoInterpreterError",
    "NoMatchingVersionError",
    "OfflineFetchError",
    "OfflineMissingError",
    "PipConfigError",
    "ProjectNotFoundError",
    "SdistBuildError",
    "SpecError",
    "UnsafeWheelError",
    "UsageError",
    "VenvCreationError",
]


class NbenvError(Exception):
    """Base of every error nbenv raises on purpose; `str()` is the user-facing message."""


class UsageError(NbenvError):
    """Bad options or arguments (not a requirement string)."""


class SpecError(UsageError):
    """A requirement or option value that cannot be parsed, pointing at the bad spot."""

    def __init__(self, text: str, position: int, reason: str) -> None:
        self.text = text
        self.position = max(0, min(position, len(text)))
        self.reason = reason
        caret = " " * self.position + "^"
        super().__init__(f"Invalid requirement {text!r}: {reason}\n    {text}\n    {caret}")


class IndexAccessError(NbenvError):
    """A package index or file could not be read (the URL never carries credentials)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"Could not read {url}: {reason}")


class ProjectNotFoundError(NbenvError):
    def __init__(self, project: str, indexes: Sequence[str], suggestions: Sequence[str]) -> None:
        self.project = project
        self.indexes = tuple(indexes)
        self.suggestions = tuple(suggestions)
        where = ", ".join(self.indexes)
        message = f"No project named {project!r} was found on {where}."
        if self.suggestions:
            message += " Did you mean: " + ", ".join(self.suggestions) + "?"
        super().__init__(message)


@dataclass(frozen=True)
class ConflictSide:
    """One requirement taking part in a conflict and the chain that brought it in."""

    requirement: str
    chain: tuple[str, ...]  # outermost first: ("a 1.0", "b 2.0"); empty: the user asked

    def describe(self) -> str:
        if not self.chain:
            return f"{self.requirement} (requested by you)"
        return f"{self.requirement} (required by {' -> '.join(self.chain)})"


@dataclass
class ConflictError(NbenvError):
    project: str
    sides: tuple[ConflictSide, ...]
    detail: str = ""
    message: str = field(init=False)

    def __post_init__(self) -> None:
        lines = [f"Cannot find a version of {self.project!r} that satisfies every requirement:"]
        lines += [f"  - {side.describe()}" for side in self.sides]
        if self.detail:
            lines.append(self.detail)
        lines.append("Loosen one of these requirements, or pin versions that agree.")
        self.message = "\n".join(lines)
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class NoCompatibleDistributionError(NbenvError):
    """Versions exist, but none has a file usable on the target."""

    def __init__(
        self, project: str, requirement: str, target: str, available: Sequence[str]
    ) -> None:
        self.project = project
        self.requirement = requirement
        self.target = target
        self.available = tuple(available)
        message = f"No distribution of {project!r} matching {requirement!r} is usable on {target}."
        if self.available:
            message += "\nFiles that exist:\n" + "\n".join(f"  {name}" for name in self.available)
        else:
            message += "\nThe index lists no files for it."
        super().__init__(message)


class OfflineMissingError(NbenvError):
    """`--offline` was asked and the cache lacks something the resolution needs."""

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing = tuple(missing)
        listing = "\n".join(f"  {item}" for item in self.missing)
        super().__init__(
            "Cannot resolve offline: the cache does not hold\n"
            f"{listing}\nRun once without --offline to fill the cache."
        )


class SdistBuildError(NbenvError):
    def __init__(self, filename: str, output: str) -> None:
        self.filename = filename
        self.output = output
        tail = "\n".join(output.strip().splitlines()[-20:])
        super().__init__(f"Building a wheel from {filename} failed:\n{tail}")


class LockFileError(NbenvError):
    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class NoMatchingVersionError(NbenvError):
    """The project exists but no version satisfies the requirement."""

    def __init__(
        self, project: str, requirement: str, available: Sequence[str], why: str = ""
    ) -> None:
        self.project = project
        self.requirement = requirement
        self.available = tuple(available)
        shown = ", ".join(self.available[:15]) + (" ..." if len(self.available) > 15 else "")
        message = f"No version of {project!r} matches {requirement!r}"
        message += f" (available: {shown})." if self.available else " (the index lists none)."
        if why:
            message += "\n" + why
        super().__init__(message)


class PipConfigError(NbenvError):
    """pip's configuration (a file, or a PIP_* variable) has a value pip would refuse."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"pip configuration {source}: {reason}")


class NoInterpreterError(NbenvError):
    """No Python interpreter matches `--python` (a version like 3.12, or a path)."""

    def __init__(self, requested: str, found: Sequence[Interpreter] = (), reason: str = "") -> None:
        self.requested = requested
        self.found = tuple(found)
        self.reason = reason
        if reason:  # a path that is not a usable interpreter
            lines = [f"Cannot use {requested} as the Python interpreter: {reason}."]
            lines.append("Pass the path of a python executable, or a version: --python 3.12")
        else:
            lines = [f"No Python {requested} interpreter was found."]
            if self.found:
                lines.append("Interpreters found:")
                newest_first = sorted(self.found, key=lambda i: i.version, reverse=True)
                lines += [f"  {interpreter.describe()}" for interpreter in newest_first]
            else:
                lines.append("No Python interpreter was found on PATH or in pyenv.")
            lines.append(
                f"Install one (for example `pyenv install {requested}` or "
                f"`uv python install {requested}`), or pass its path: "
                f"--python /path/to/python{requested}"
            )
        super().__init__("\n".join(lines))


class KernelSpecError(NbenvError):
    """A kernelspec could not be installed or removed (permissions, a name we do not own)."""

    def __init__(self, kernel_name: str, path: str, reason: str) -> None:
        self.kernel_name = kernel_name
        self.path = path
        self.reason = reason
        super().__init__(f"Kernel {kernel_name!r} ({path}): {reason}")


class DownloadError(IndexAccessError):
    """A file a lock names could not be downloaded (the URL never carries credentials)."""

    def __init__(self, filename: str, url: str, reason: str) -> None:
        self.filename = filename
        self.url = url
        self.reason = reason
        NbenvError.__init__(self, f"Could not download {filename} from {url}: {reason}")


class HashMismatchError(NbenvError):
    """A downloaded file is not the one the lock records; it was deleted, never used."""

    def __init__(self, filename: str, url: str, expected: str, actual: str) -> None:
        self.filename = filename
        self.url = url
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{filename} downloaded from {url} does not match the lock:\n"
            f"  expected sha256 {expected}\n"
            f"  got      sha256 {actual}\n"
            "The download was deleted. The index served different bytes than the lock records; "
            "re-lock with `nbenv lock --refresh` if the release was replaced, otherwise report "
            "it to the index."
        )


class OfflineFetchError(OfflineMissingError):
    """`--offline` was asked and the download cache lacks files a lock needs."""

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing = tuple(missing)
        listing = "\n".join(f"  {item}" for item in self.missing)
        NbenvError.__init__(
            self,
            "Cannot build offline: the download cache does not hold\n"
            f"{listing}\nRun once without --offline to download them.",
        )


class InstallError(NbenvError):
    """Putting files into an environment failed; the half-built env must be discarded."""


class InvalidWheelError(InstallError):
    """A wheel breaks the wheel format (RECORD, WHEEL, .dist-info) and is refused."""

    def __init__(self, wheel: str, reason: str) -> None:
        self.wheel = wheel
        self.reason = reason
        super().__init__(f"Cannot install {wheel}: {reason}")


class UnsafeWheelError(InvalidWheelError):
    """A wheel names a file outside the environment (`../x`, `/x`, `C:x`); nothing was written."""

    def __init__(self, wheel: str, member: str) -> None:
        self.member = member
        super().__init__(
            wheel,
            f"it names {member!r}, which would be written outside the environment. "
            "The wheel is refused and nothing from it was written; report it to its publisher.",
        )


class InstallConflictError(InstallError):
    """Two wheels (or a wheel and the env itself) would write one path with different bytes."""

    def __init__(self, path: str, wheels: Sequence[str]) -> None:
        self.path = path
        self.wheels = tuple(wheels)
        if len(self.wheels) > 1:
            message = (
                f"{' and '.join(self.wheels)} both install {path} with different contents; "
                "they cannot share one environment. Drop one of the packages, or pin versions "
                "that do not overlap."
            )
        else:
            message = f"{self.wheels[0]} would overwrite {path}, already in the environment."
        super().__init__(message)


class VenvCreationError(InstallError):
    def __init__(self, python: str, output: str) -> None:
        self.python = python
        self.output = output
        tail = "\n".join(output.strip().splitlines()[-20:])
        super().__init__(f"`{python} -m venv` could not create an environment:\n{tail}")
