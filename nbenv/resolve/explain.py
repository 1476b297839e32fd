"""Turn resolvelib's failures into errors a person can act on."""

from __future__ import annotations

from collections.abc import Sequence

from packaging.utils import NormalizedName

from nbenv.errors import (
    ConflictError,
    ConflictSide,
    NbenvError,
    NoCompatibleDistributionError,
    NoMatchingVersionError,
    ProvidedConflictError,
)
from nbenv.resolve.candidates import files_by_version, python_ok
from nbenv.resolve.provider import PYTHON, Candidate, PypiProvider, Req

__all__ = ["explain_impossible"]


def _chain(provider: PypiProvider, parent: Candidate | None) -> tuple[str, ...]:
    chain: list[str] = []
    seen: set[str] = set()
    while parent is not None and parent.name not in seen:
        seen.add(parent.name)
        chain.append(f"{parent.name} {parent.version}")
        parent = provider.parents.get(parent.name)
    return tuple(reversed(chain))


def _side(provider: PypiProvider, requirement: Req, parent: Candidate | None) -> ConflictSide:
    return ConflictSide(
        requirement.text or f"{requirement.name}{requirement.specifier}", _chain(provider, parent)
    )


def explain_impossible(
    provider: PypiProvider, causes: Sequence[tuple[Req, Candidate | None]]
) -> NbenvError:
    target = provider.target
    for requirement, _parent in causes:
        given = provider.provided.get(requirement.name)
        if given is not None and not requirement.specifier.contains(given.version, True):
            asked = [_side(provider, r, p).describe() for r, p in causes
                     if r.name == requirement.name
                     and not r.specifier.contains(given.version, True)]  # fmt: skip
            return ProvidedConflictError(
                requirement.name, list(dict.fromkeys(asked)), str(given.version), given.by
            )
    python_causes = [(r, p) for r, p in causes if r.name == PYTHON]
    if python_causes and len(python_causes) == len(causes):
        requirement, parent = python_causes[0]
        side = _side(provider, requirement, parent)
        return ConflictError(
            "python",
            (side,),
            detail=f"The target is {target.describe()}; choose a matching --python or an "
            "older release.",
        )
    by_project: dict[str, list[tuple[Req, Candidate | None]]] = {}
    for requirement, parent in causes:
        if requirement.name != PYTHON:
            by_project.setdefault(requirement.name, []).append((requirement, parent))
    project, group = next(iter(by_project.items()))
    # A requirement that nothing satisfies on its own is the real problem, not a conflict.
    for requirement, _parent in group:
        lone = _lone_failure(provider, project, requirement)
        if lone is not None:
            return lone
    sides = tuple(dict.fromkeys(_side(provider, r, p) for r, p in group))
    return ConflictError(project, sides)


def _lone_failure(provider: PypiProvider, project: str, requirement: Req) -> NbenvError | None:
    """Why `requirement` alone has no candidate on the target; None if it has some."""
    target = provider.target
    page = provider.prefetcher.page(project).result()
    releases = provider.prefetcher.releases(NormalizedName(project), target)
    if page is None or releases is None:
        return None
    spec = requirement.specifier
    text = requirement.text or f"{project}{spec}"
    usable = [r for r in releases.usable if spec.contains(r.version, prereleases=True)]
    if usable and not all(r.yanked for r in usable):
        return None
    if usable:
        reasons = sorted({r.file.yanked or "no reason given" for r in usable})
        return NoMatchingVersionError(
            project,
            text,
            [str(r.version) for r in usable],
            why="Those releases are yanked (" + "; ".join(reasons) + "); pin one exactly with "
            "== to use it anyway.",
        )
    listing = files_by_version(page)
    matching = [v for v in listing if spec.contains(v, prereleases=True)]
    if not matching:
        return NoMatchingVersionError(project, text, [str(v) for v in listing])
    shown = []
    for version in matching[:3]:  # the newest few are what a person wants to see
        for file in sorted(listing[version], key=lambda f: f.filename):
            name = file.filename
            if not python_ok(file.requires_python, target):
                name += f" (requires Python {file.requires_python})"
            shown.append(name)
    return NoCompatibleDistributionError(project, text, target.describe(), shown)
