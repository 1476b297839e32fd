"""One error hierarchy with structured fields and messages a person can act on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar, cast

if TYPE_CHECKING:
    from nbenv.interpreters import Interpreter

__all__ = [
    "ChildCrashedError",
    "ChildExecutionError",
    "ChildInterrupted",
    "CondaChannelError",
    "CondaInstallError",
    "CondaSolveError",
    "CondaSpecError",
    "ConflictError",
    "DiskFullError",
    "DownloadError",
    "HashMismatchError",
    "IndexAccessError",
    "InstallConflictError",
    "InstallError",
    "InvalidWheelError",
    "KernelSpecError",
    "LockFileError",
    "NbenvError",
    "NetworkSettingError",
    "NoCompatibleDistributionError",
    "NoInterpreterError",
    "NoMatchingVersionError",
    "NotebookExecutionError",
    "NotebookFileError",
    "OfflineFetchError",
    "OfflineMissingError",
    "PipConfigError",
    "ProjectNotFoundError",
    "ProvidedConflictError",
    "SdistBuildError",
    "SpecError",
    "SubKernelError",
    "SubKernelStartError",
    "UnsafeCondaPackageError",
    "UnsafeWheelError",
    "UsageError",
    "VariableTransferError",
    "VenvCreationError",
]


def _tail(output: str, lines: int = 20) -> str:
    """The end of a tool's output: where its error is, without pages of build log."""
    return "\n".join(output.strip().splitlines()[-lines:])


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
        super().__init__(f"Building a wheel from {filename} failed:\n{_tail(output)}")


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


class NetworkSettingError(UsageError):
    """A network setting (pip's `timeout`/`retries`/`cert`/`client-cert`, NBENV_HTTP_*,
    SSL_CERT_FILE/SSL_CERT_DIR) has a value that is not one, or names a file that cannot be
    loaded (`reason`); `source` is the file or variable it came from."""

    def __init__(self, source: str, option: str, value: str, wanted: str, reason: str = "") -> None:
        self.source = source
        self.option = option
        self.value = value
        self.reason = reason
        why = f" ({reason})" if reason else ""
        super().__init__(f"{source}: {option} = {value!r} is not valid{why}; it wants {wanted}")


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


class DiskFullError(InstallError):
    """The disk (or quota) ran out while building; the partial env is already gone."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"No space left on device while writing {path}. The partial environment was "
            "removed and the cache kept; free some space (`nbenv gc` removes leftovers), or "
            "set NBENV_HOME / NBENV_CACHE_DIR to a disk with room, then run it again."
        )


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
        super().__init__(f"`{python} -m venv` could not create an environment:\n{_tail(output)}")


class NotebookFileError(NbenvError):
    """A notebook that cannot be read or written (not JSON, not nbformat, unreadable)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class NotebookExecutionError(NbenvError):
    """A cell failed (or timed out, or its kernel died) while `nbenv run` executed a notebook."""

    def __init__(
        self,
        notebook: str,
        cell: int | None,
        ename: str,
        evalue: str,
        traceback: str = "",
        output: str | None = None,
    ) -> None:
        self.notebook = notebook
        self.cell = cell  # 1-based, counting every cell; None before the first cell ran
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback
        self.output = output
        where = f"Cell {cell} of {notebook}" if cell is not None else notebook
        lines = [f"{where} failed: {ename}: {evalue}" if evalue else f"{where} failed: {ename}"]
        if traceback.strip():
            lines += ["", *traceback.rstrip().splitlines()[-40:], ""]
        if output is not None:
            lines.append(f"The notebook, executed up to that cell, was saved to {output}.")
        super().__init__("\n".join(lines))


# -- child kernels (nbenv.subkernel) ------------------------------------------------------

_E = TypeVar("_E", bound=BaseException)
_NAMED: dict[tuple[type, str], type] = {}


def _named(base: type[_E], name: str) -> type[_E]:
    """A subclass of `base` called `name` (cached), so that IPython, which reports an error
    by its class name, shows the child's exception name (`ZeroDivisionError`), not ours."""
    if not name.isidentifier() or name == base.__name__:
        return base
    key = (base, name)
    if key not in _NAMED:
        _NAMED[key] = type(name, (base,), {"__module__": base.__module__, "__qualname__": name})
    return cast("type[_E]", _NAMED[key])


class SubKernelError(NbenvError):
    """An env's kernel running cells for a parent kernel failed. In IPython it shows as its
    message alone (`_render_traceback_`): nbenv's own frames mean nothing to the user."""

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self}"]


class SubKernelStartError(SubKernelError):
    def __init__(self, env_id: str, python: str, reason: str, output: str = "") -> None:
        self.env_id = env_id
        self.python = python
        self.reason = reason
        self.output = output
        message = f"The kernel of env {env_id[:12]} ({python}) did not start: {reason}"
        if output.strip():
            message += "\n" + _tail(output)
        super().__init__(message)


class ChildCrashedError(SubKernelError):
    """The env's kernel died while running a cell; the next cell starts a fresh one."""

    def __init__(self, env_id: str, exit_code: int | None, output: str = "") -> None:
        self.env_id = env_id
        self.exit_code = exit_code
        self.status = _exit_status(exit_code)  # "exit code 3", "killed by signal 9, SIGKILL"
        self.output = output
        message = f"The env's kernel died ({self.status}); it restarts on next use; "
        message += "state was lost."
        if output.strip():
            message += "\nIts last words:\n" + _tail(output)
        super().__init__(message)


def _exit_status(code: int | None) -> str:
    if code is None:
        return "exit code unknown"
    if code < 0:
        import signal

        try:
            return f"killed by signal {-code}, {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class VariableTransferError(SubKernelError):
    """A value passed into (`--in`) or out of (`--out`) an env's kernel cannot cross."""

    def __init__(self, name: str, direction: str, reason: str) -> None:
        self.name = name
        self.direction = direction  # "in" | "out"
        self.reason = reason
        where = "into the env's kernel" if direction == "in" else "out of the env's kernel"
        super().__init__(
            f"Variable {name!r} cannot be passed {where}: {reason}. Values cross as pickles: "
            "pass plain data (numbers, strings, lists, dicts, arrays) or objects whose classes "
            "both kernels can import."
        )


class ChildExecutionError(SubKernelError):
    """The cell's code raised in the env's kernel. Raised out of a magic, IPython shows the
    child's own traceback (ANSI-colored, as the child formatted it) and nothing of nbenv, and
    the cell's error reads as the child's: build it with `from_child`, whose class carries the
    child's exception name, and `str()` is the child's evalue."""

    def __init__(self, ename: str, evalue: str, traceback: Sequence[str]) -> None:
        self.ename = ename
        self.evalue = evalue
        self.traceback = tuple(traceback)
        super().__init__(evalue)

    @classmethod
    def from_child(cls, ename: str, evalue: str, traceback: Sequence[str]) -> ChildExecutionError:
        return _named(cls, ename)(ename, evalue, traceback)

    def render(self) -> str:
        """The child's traceback as text (with ANSI colors), for a non-IPython display."""
        return "\n".join(self._render_traceback_())

    def _render_traceback_(self) -> list[str]:
        return list(self.traceback) or [f"{self.ename}: {self.evalue}"]


class ChildInterrupted(KeyboardInterrupt):
    """The parent was interrupted while the env's kernel ran a cell: the child was
    interrupted too, and this carries its traceback. A KeyboardInterrupt, not an NbenvError,
    so that code which handles interrupts keeps working."""

    def __init__(self, ename: str, evalue: str, traceback: Sequence[str]) -> None:
        self.ename = ename
        self.evalue = evalue
        self.traceback = tuple(traceback)
        super().__init__(evalue)

    @classmethod
    def from_child(cls, ename: str, evalue: str, traceback: Sequence[str]) -> ChildInterrupted:
        return _named(cls, ename)(ename, evalue, traceback)

    def render(self) -> str:
        return "\n".join(self._render_traceback_())

    def _render_traceback_(self) -> list[str]:
        detail = f": {self.evalue}" if self.evalue else ""
        return list(self.traceback) or [f"\x1b[0;31m{self.ename}\x1b[0m{detail}"]


# -- conda (nbenv.resolve.conda, nbenv.conda) ---------------------------------------------


class CondaSpecError(SpecError):
    """A conda MatchSpec that cannot be parsed, pointing at the bad spot."""

    def __init__(self, text: str, position: int, reason: str) -> None:
        self.text = text
        self.position = max(0, min(position, len(text)))
        self.reason = reason
        caret = " " * self.position + "^"
        UsageError.__init__(
            self,
            f"Invalid conda spec {text!r}: {reason}\n    {text}\n    {caret}\n"
            "Conda specs look like `numpy>=1.26`, `openmpi=4.1.*=h*` or `conda-forge::pkg`.",
        )


class CondaSolveError(NbenvError):
    """No set of conda packages satisfies the specs; `detail` is rattler's explanation
    (channel credentials removed)."""

    def __init__(
        self,
        specs: Sequence[str],
        detail: str,
        *,
        channels: Sequence[str] = (),
        platform: str | None = None,
        hints: Sequence[str] = (),
    ) -> None:
        self.specs = tuple(specs)
        self.detail = detail
        self.channels = tuple(channels)
        self.platform = platform
        self.hints = tuple(hints)
        lines = []
        if self.specs:
            where = f" for {platform}" if platform else ""
            source = f" from {', '.join(self.channels)}" if self.channels else ""
            lines.append(f"Cannot solve the conda packages {' '.join(self.specs)}{where}{source}:")
        lines += [f"  {line}" for line in detail.splitlines()]
        lines += self.hints
        if self.specs and not self.hints:
            lines.append(
                "Check the names and the channels searched (-c CHANNEL)."
                if "No candidates were found" in detail
                else "Loosen or remove one of these specs, or pin versions that agree."
            )
        super().__init__("\n".join(lines))


class CondaChannelError(IndexAccessError):
    """A conda channel (or a package on it) could not be read; the URL has no credentials."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        NbenvError.__init__(self, f"Could not read conda channel {url}: {reason}")


class CondaInstallError(InstallError):
    """rattler could not fetch or link the solved packages into the prefix."""

    def __init__(self, prefix: str, reason: str) -> None:
        self.prefix = prefix
        self.reason = reason
        super().__init__(f"Installing conda packages into {prefix} failed: {reason}")


class UnsafeCondaPackageError(InstallError):
    """A conda package's file list names a path outside the prefix; nothing was linked."""

    def __init__(self, package: str, path: str) -> None:
        self.package = package
        self.path = path
        super().__init__(
            f"Cannot install the conda package {package}: its info/paths.json names {path!r}, "
            "which would be written outside the environment. The package is refused and "
            "nothing was installed; report it to its channel."
        )


class ProvidedConflictError(NbenvError):
    """A PyPI requirement of a mixed env contradicts a Python dist its conda packages
    already install (the PyPI pass takes those as they are)."""

    def __init__(self, project: str, requirements: Sequence[str], version: str, by: str) -> None:
        self.project = project
        self.requirements = tuple(requirements)
        self.version = version
        self.by = by
        asked = "; ".join(self.requirements)
        super().__init__(
            f"The PyPI requirement {asked} contradicts {project} {version}, which {by} "
            f"installs. The PyPI pass of a mixed env keeps the Python packages conda "
            f"installed: loosen the PyPI requirement, or ask conda for the version you need "
            f"(e.g. `%%conda {project}>=...`) and drop it from the PyPI side."
        )
