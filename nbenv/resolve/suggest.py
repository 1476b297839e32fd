""" "Did you mean ...?" for a project no index knows, and the index root's project list.

PyPI lists ~700k projects, so `close_names` filters with bounds that cost almost nothing
(length, then the letters two names share) and runs difflib's `ratio()` on the few
survivors. Typos a person makes rank first: an import name used as a project name
(`sklearn`), a separator dropped or changed (`scikitlearn`), one letter wrong, missing,
extra or two swapped (`reqeusts`).
"""

from __future__ import annotations

import bisect
import html
import json
import re
from collections.abc import Iterable
from difflib import SequenceMatcher

from packaging.utils import canonicalize_name

from nbenv.errors import IndexAccessError

__all__ = ["IMPORT_NAME_ALIASES", "close_names", "parse_project_list"]

# Famous import names that are not the project's name (keys and values canonical).
IMPORT_NAME_ALIASES: dict[str, str] = {
    "attr": "attrs",
    "bs4": "beautifulsoup4",
    "crypto": "pycryptodome",
    "cv2": "opencv-python",
    "dateutil": "python-dateutil",
    "docx": "python-docx",
    "dotenv": "python-dotenv",
    "fitz": "pymupdf",
    "gi": "pygobject",
    "git": "gitpython",
    "jose": "python-jose",
    "jwt": "pyjwt",
    "magic": "python-magic",
    "mysqldb": "mysqlclient",
    "openssl": "pyopenssl",
    "pil": "pillow",
    "pptx": "python-pptx",
    "serial": "pyserial",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "slugify": "python-slugify",
    "usb": "pyusb",
    "win32api": "pywin32",
    "yaml": "pyyaml",
    "zmq": "pyzmq",
}

_BASE_CUTOFF = 0.75
_MIN_CUTOFF = 0.5  # below this nearly every short name would be scored
# ranking tiers: a known alias, then a separator-only difference, then one edit, then the rest
_ALIAS, _SEPARATORS, _ONE_EDIT, _SIMILAR = 3, 2, 1, 0
_ANCHOR = re.compile(rb"<a\s[^>]*?href\s*=\s*[\"']?([^\"'\s>]*)[^>]*>([^<]*)</a\s*>", re.IGNORECASE)


def close_names(name: str, known: Iterable[str], limit: int = 3) -> list[str]:
    """Up to `limit` names from `known` that `name` was probably meant to be, best first.

    Names are compared canonicalized (PEP 503) and returned as `known` spells them. A name
    whose raw spelling is much longer than its canonical form (runs of separators) may be
    missed: the length filter looks at the raw spelling to avoid canonicalizing every name.
    """
    target = canonicalize_name(name)
    if limit <= 0 or not target:
        return []
    size = len(target)
    squashed = target.replace("-", "")
    alias = IMPORT_NAME_ALIASES.get(target, "")
    alias_length = len(alias) if alias else -1
    # a one-edit typo scores at least (size - 1) / size: never filter those out
    cutoff = max(_MIN_CUTOFF, min(_BASE_CUTOFF, (size - 1) / size))
    cap = max(cutoff, (size - 1) / size)  # as the best get better, never rise above this
    lo, hi = _length_window(size, cutoff)
    # chars of `known` spellings that `target` lacks survive translate(): their count bounds
    # the matches from above, at C speed
    letters = set(target) | {c.upper() for c in target} | ({"_", "."} if "-" in target else set())
    drop = str.maketrans("", "", "".join(letters))
    matcher = SequenceMatcher(None, autojunk=False)
    matcher.set_seq2(target)
    ranked: list[tuple[int, float, str]] = []  # (-tier, -ratio, canonical), best first
    spelled: dict[str, str] = {}  # canonical -> the spelling in `known`
    for raw in known:
        length = len(raw)
        if length == alias_length and canonicalize_name(raw) == alias:
            tier, ratio, candidate = _ALIAS, 1.0, alias
        elif (
            length < lo
            or length > hi
            or 2.0 * min(length - len(raw.translate(drop)), size) < cutoff * (length + size)
        ):
            continue
        else:
            candidate = canonicalize_name(raw)
            matcher.set_seq1(candidate)
            if matcher.quick_ratio() < cutoff:
                continue
            ratio = matcher.ratio()
            if candidate.replace("-", "") == squashed:
                tier = _SEPARATORS
            elif _one_edit(candidate, target):
                tier = _ONE_EDIT
            elif ratio >= cutoff:
                tier = _SIMILAR
            else:
                continue
        if _keep(ranked, spelled, limit, (-tier, -ratio, candidate), raw) and len(ranked) == limit:
            cutoff = max(cutoff, min(-ranked[-1][1], cap))
            lo, hi = _length_window(size, cutoff)
    return [spelled[canonical] for _, _, canonical in ranked]


def parse_project_list(body: bytes, content_type: str, url: str = "the index root") -> list[str]:
    """Project names from an index root page (`/simple/`): PEP 691 JSON or PEP 503 HTML.

    HTML is scanned with one regex rather than a parser: PyPI's root page is tens of MB.
    The anchor text is the name (PEP 503); an empty one falls back to the href's last part.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media.endswith("json") or (not media and body.lstrip()[:1] == b"{"):
        try:
            projects = json.loads(body)["projects"]
            return [str(project["name"]) for project in projects]
        except (ValueError, KeyError, TypeError) as exc:
            raise IndexAccessError(url, f"not a PEP 691 project list ({exc})") from None
    names: list[str] = []
    for match in _ANCHOR.finditer(body):
        name = match.group(2).strip() or match.group(1).rstrip(b"/").rpartition(b"/")[2]
        if name:
            names.append(html.unescape(name.decode("utf-8", "replace")))
    return names


def _keep(
    ranked: list[tuple[int, float, str]],
    spelled: dict[str, str],
    limit: int,
    entry: tuple[int, float, str],
    raw: str,
) -> bool:
    """Insert `entry` into the best-first `ranked` if it makes the top `limit`."""
    if entry[2] in spelled or (len(ranked) >= limit and entry >= ranked[-1]):
        return False
    bisect.insort(ranked, entry)
    spelled[entry[2]] = raw
    if len(ranked) > limit:
        del spelled[ranked.pop()[2]]
    return True


def _length_window(size: int, cutoff: float) -> tuple[float, float]:
    # ratio <= 2 * min(len_a, len_b) / (len_a + len_b): lengths outside cannot reach cutoff
    return size * cutoff / (2.0 - cutoff), size * (2.0 - cutoff) / cutoff


def _one_edit(a: str, b: str) -> bool:
    """Whether `a` becomes `b` by one substitution, insertion, deletion or swap of neighbours."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    if len(a) > len(b):
        return a[i + 1 :] == b[i:]
    if len(a) < len(b):
        return a[i:] == b[i + 1 :]
    swapped = i + 1 < len(a) and a[i] == b[i + 1] and a[i + 1] == b[i] and a[i + 2 :] == b[i + 2 :]
    return swapped or a[i + 1 :] == b[i + 1 :]
