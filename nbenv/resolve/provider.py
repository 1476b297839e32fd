"""The resolvelib provider: PyPI semantics for one target, answers from the Prefetcher."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version
from resolvelib import AbstractProvider
from resolvelib.structs import RequirementInformation

from nbenv.resolve.candidates import Release
from nbenv.resolve.model import DistFile, ProvidedDist
from nbenv.resolve.prefetch import Prefetcher, active_dependencies
from nbenv.resolve.target import Target

__all__ = ["PYTHON", "Candidate", "PypiProvider", "Req", "UnknownProject"]

PYTHON = "<python>"  # a virtual project standing for the target's interpreter


class UnknownProject(Exception):
    """Raised inside the resolver; turned into ProjectNotFoundError with suggestions."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@dataclass(frozen=True)
class Req:
    """A requirement as the resolver sees it (markers already evaluated for the target)."""

    name: str  # normalized project name, or PYTHON
    extras: frozenset[str]
    specifier: SpecifierSet
    text: str  # as written, for messages

    @property
    def key(self) -> str:
        if self.extras:
            return f"{self.name}[{','.join(sorted(self.extras))}]"
        return self.name

    @property
    def pinned(self) -> bool:
        return any(s.operator in ("==", "===") and "*" not in s.version for s in self.specifier)

    @classmethod
    def from_requirement(cls, requirement: Requirement) -> Req:
        return cls(
            canonicalize_name(requirement.name),
            frozenset(canonicalize_name(e) for e in requirement.extras),
            requirement.specifier,
            str(requirement),
        )


@dataclass(frozen=True)
class Candidate:
    name: str
    version: Version
    extras: frozenset[str] = frozenset()
    release: Release | None = field(default=None, compare=False)  # None for PYTHON

    @property
    def key(self) -> str:
        if self.extras:
            return f"{self.name}[{','.join(sorted(self.extras))}]"
        return self.name

    def __str__(self) -> str:
        return f"{self.key} {self.version}"


class PypiProvider(AbstractProvider[Req, Candidate, str]):
    def __init__(
        self,
        target: Target,
        prefetcher: Prefetcher,
        user_requirements: Sequence[Req],
        *,
        allow_pre: bool = False,
        provided: Mapping[str, ProvidedDist] | None = None,
        on_pin: Callable[[DistFile], None] | None = None,
    ) -> None:
        self.target = target
        # told each file the resolver pins, before its metadata is awaited: an env build
        # starts downloading it (the final lock nearly always keeps the pin)
        self.on_pin = on_pin
        # dists the env already holds (conda's): fixed, never fetched, never installed
        self.provided = dict(provided or {})
        self.prefetcher = prefetcher
        self.allow_pre = allow_pre
        self.user_keys = {r.key for r in user_requirements}
        # first parent seen for each project, to explain conflicts as chains
        self.parents: dict[str, Candidate | None] = {r.name: None for r in user_requirements}
        self.dependencies: dict[tuple[str, Version], tuple[NormalizedName, ...]] = {}
        self._python = Version(target.python_full_version)

    # -- resolvelib API ------------------------------------------------------------------
    def identify(self, requirement_or_candidate: Req | Candidate) -> str:
        return requirement_or_candidate.key

    def get_preference(
        self,
        identifier: str,
        resolutions: Mapping[str, Candidate],
        candidates: Mapping[str, Iterator[Candidate]],
        information: Mapping[str, Iterator[RequirementInformation[Req, Candidate]]],
        backtrack_causes: Sequence[RequirementInformation[Req, Candidate]],
    ) -> tuple[bool, bool, bool, bool, str]:
        infos = list(information[identifier])
        causes = {c.requirement.name for c in backtrack_causes}
        return (
            identifier != PYTHON,  # the interpreter is fixed: decide it first
            not any(i.requirement.pinned for i in infos),
            identifier.split("[")[0] not in causes,
            identifier not in self.user_keys,
            identifier,
        )

    def find_matches(
        self,
        identifier: str,
        requirements: Mapping[str, Iterator[Req]],
        incompatibilities: Mapping[str, Iterator[Candidate]],
    ) -> list[Candidate]:
        reqs = list(requirements[identifier])
        bad = {c.version for c in incompatibilities[identifier]}
        if identifier == PYTHON:
            ok = all(r.specifier.contains(self._python, prereleases=True) for r in reqs)
            return [Candidate(PYTHON, self._python)] if ok and self._python not in bad else []
        name = identifier.split("[")[0]
        extras = frozenset().union(*(r.extras for r in reqs)) if reqs else frozenset()
        given = self.provided.get(name)
        if given is not None:  # the only candidate; `release=None`: nothing to install
            ok = all(r.specifier.contains(given.version, prereleases=True) for r in reqs)
            fits = ok and given.version not in bad
            return [Candidate(name, given.version, extras)] if fits else []
        releases = self.prefetcher.releases(NormalizedName(name), self.target)
        if releases is None:
            raise UnknownProject(name)
        specifier = SpecifierSet()
        for r in reqs:
            specifier &= r.specifier
        pinned = any(r.pinned for r in reqs)
        matches = self._matching(releases.usable, specifier, pinned, bad)
        return [Candidate(name, rel.version, extras, rel) for rel in matches]

    def _matching(
        self, releases: Iterable[Release], specifier: SpecifierSet, pinned: bool, bad: set[Version]
    ) -> list[Release]:
        def select(prereleases: bool) -> list[Release]:
            return [
                r
                for r in releases
                if r.version not in bad
                and (not r.yanked or pinned)  # PEP 592: yanked only for exact pins
                and specifier.contains(r.version, prereleases=prereleases)
            ]

        # Pre-releases when asked, when the specifier names one, or when nothing else fits.
        explicit = self.allow_pre or bool(specifier.prereleases)
        found = select(explicit)
        if not found and not explicit:
            found = select(True)
        return found

    def is_satisfied_by(self, requirement: Req, candidate: Candidate) -> bool:
        return requirement.specifier.contains(candidate.version, prereleases=True)

    def get_dependencies(self, candidate: Candidate) -> list[Req]:
        if candidate.release is None:
            return []
        if self.on_pin is not None:
            self.on_pin(candidate.release.file)
        metadata = self.prefetcher.metadata(candidate.release.file).result()
        out: list[Req] = []
        if candidate.extras:  # the extra-variant pins its base project to the same version
            out.append(Req(candidate.name, frozenset(), SpecifierSet(f"=={candidate.version}"), ""))
        if metadata.requires_python:
            try:
                spec = SpecifierSet(metadata.requires_python)
            except InvalidSpecifier:
                spec = SpecifierSet()
            out.append(Req(PYTHON, frozenset(), spec, f"Requires-Python {spec}"))
        deps = active_dependencies(metadata, candidate.extras, self.target)
        names = []
        for requirement in deps:
            req = Req.from_requirement(requirement)
            if req.name == candidate.name and not req.extras:
                continue  # self-references in extras, e.g. pkg[all] -> pkg[a]
            out.append(req)
            names.append(req.name)
            self.parents.setdefault(req.name, candidate)
            self.prefetcher.speculate(requirement, self.target)
        if not candidate.extras:
            self.dependencies[(candidate.name, candidate.version)] = tuple(
                NormalizedName(n) for n in sorted(set(names))
            )
        return out
