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
    # a one-edit typo scores at least (size - 1) / size: never filter those out
    floor = max(_MIN_CUTOFF, min(_BASE_CUTOFF, (size - 1) / size))
    cutoff = floor
    lo, hi = _length_window(size, cutoff)
    # chars of `known` spellings that `target` lacks survive translate(): their count bounds
    # the matches from above, at C speed
    letters = set(target) | {c.upper() for c in target} | ({"_", "."} if "-" in target else set())
    drop = str.maketrans("", "", "".join(letters))
    matcher = SequenceMatcher(None, autojunk=False)
    matcher.set_seq2(target)
    ranked: list[tuple[int, float, str]] = []  # sorted by (-tier, -ratio, canonical)
    spelled: dict[str, str] = {}  # canonical -> spelling in `known`

    def offer(tier: int, ratio: float, canonical: str, raw: str) -> None:
        nonlocal cutoff, lo, hi
        if canonical in spelled:
            return
        entry = (-tier, -ratio, canonical)
        if len(ranked) >= limit and entry >= ranked[-1]:
            return
        bisect.insort(ranked, entry)
        spelled[canonical] = raw
        if len(ranked) > limit:
            del spelled[ranked.pop()[2]]
        if len(ranked) == limit:
            cutoff = max(cutoff, min(-ranked[-1][1], floor if size > 1 else 1.0))
            lo, hi = _length_window(size, cutoff)

    for raw in known:
        length = len(raw)
        if length < lo or length > hi:
            if alias and length == len(alias) and canonicalize_name(raw) == alias:
                offer(_ALIAS, 1.0, alias, raw)
            continue
        if 2.0 * min(length - len(raw.translate(drop)), size) < cutoff * (length + size):
            continue
        candidate = canonicalize_name(raw)
        if candidate == alias:
            offer(_ALIAS, 1.0, alias, raw)
            continue
        matcher.set_seq1(candidate)
        if matcher.quick_ratio() < cutoff:
            continue
        ratio = matcher.ratio()
        if candidate.replace("-", "") == squashed:
            offer(_SEPARATORS, ratio, candidate, raw)
        elif _one_edit(candidate, target):
            offer(_ONE_EDIT, ratio, candidate, raw)
        elif ratio >= cutoff:
            offer(_SIMILAR, ratio, candidate, raw)
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
    text = body.decode("utf-8", "replace")
    names: list[str] = []
    for match in _ANCHOR.finditer(text.encode("utf-8")):
        name = match.group(2).decode("utf-8").strip()
        if not name:
            name = match.group(1).decode("utf-8").rstrip("/").rpartition("/")[2]
        if name:
            names.append(html.unescape(name))
    return names


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
