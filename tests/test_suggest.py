"""Suggestions for unknown project names, and parsing an index's project list."""

from __future__ import annotations

import json
import random
import time

import pytest

from nbenv.errors import IndexAccessError
from nbenv.resolve.suggest import IMPORT_NAME_ALIASES, close_names, parse_project_list

POPULAR = [
    "requests", "numpy", "pandas", "scikit-learn", "scikit-image", "PyYAML", "Pillow",
    "beautifulsoup4", "attrs", "cattrs", "python-dateutil", "opencv-python", "matplotlib",
    "pydantic", "Flask", "flask-cors", "django", "jupyterlab", "jupyter", "pytest", "pip",
]  # fmt: skip


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("reqeusts", "requests"),  # two letters swapped
        ("requets", "requests"),  # one missing
        ("numpi", "numpy"),  # one wrong
        ("pnadas", "pandas"),
        ("matplot", "matplotlib"),  # a prefix
        ("scikitlearn", "scikit-learn"),  # separator dropped
        ("Flask_Cors", "flask-cors"),  # separator changed (canonical names match)
        ("sklearn", "scikit-learn"),  # import name, not project name
        ("cv2", "opencv-python"),
        ("PIL", "Pillow"),
        ("yaml", "PyYAML"),
        ("bs4", "beautifulsoup4"),
        ("attr", "attrs"),
        ("dateutil", "python-dateutil"),
    ],
)
def test_the_intended_name_comes_first(typed: str, expected: str) -> None:
    assert close_names(typed, POPULAR)[0] == expected


def test_names_come_back_as_the_listing_spells_them_without_duplicates() -> None:
    listing = ["PyYAML", "pyyaml", "py_yaml", "py.yaml"]
    assert close_names("pyyml", listing) == ["PyYAML", "py_yaml"]


def test_limit_and_nothing_close() -> None:
    assert len(close_names("jupyter-lab", POPULAR, limit=2)) == 2
    assert close_names("jupyter-lab", POPULAR, limit=0) == []
    assert close_names("zzzzqqqq", POPULAR) == []
    assert close_names("", POPULAR) == []


def test_one_edit_typos_beat_merely_similar_names() -> None:
    # "reqests" is one letter from "requests"; "requester" shares more letters in a row
    assert close_names("reqests", ["requester", "requests"])[0] == "requests"


def test_aliases_point_only_at_names_the_index_has() -> None:
    assert close_names("sklearn", ["numpy", "pandas"]) == []
    for alias, project in IMPORT_NAME_ALIASES.items():
        assert close_names(alias, [project, "unrelated-name"])[0] == project


def test_accepts_any_iterable_once() -> None:
    assert close_names("numpi", iter(POPULAR)) == ["numpy"]


def _synthetic_names(count: int) -> list[str]:
    # built from common syllables so many names share letters with the query: the slow case
    rng = random.Random(20240521)
    syllables = [
        "py", "on", "req", "ue", "sts", "da", "ta", "ml", "flow", "ten", "sor", "an", "lib",
        "num", "sci", "kit", "learn", "ply", "xt", "io", "web", "net", "ai", "bot", "dj", "flask",
        "tool", "s", "er", "test", "plug", "in", "lite", "sql", "json", "http", "cli", "ut", "il",
        "core", "me", "go", "ra", "lo",
    ]  # fmt: skip
    names = []
    for _ in range(count):
        parts = [rng.choice(syllables) for _ in range(rng.randint(1, 4))]
        name = rng.choice(["", "", "-", "_", "."]).join(parts)
        if rng.random() < 0.2:
            name += str(rng.randint(0, 99))
        names.append(name.capitalize() if rng.random() < 0.1 else name)
    names += ["requests", "scikit-learn", "tensorflow", "python-dateutil"]
    rng.shuffle(names)
    return names


def test_fast_on_a_pypi_sized_listing() -> None:
    names = _synthetic_names(700_000)
    for typed, expected in [
        ("reqeusts", "requests"),
        ("tensorflw", "tensorflow"),
        ("sklearn", "scikit-learn"),
        ("python_dateutl", "python-dateutil"),
    ]:
        # CPU time of this process: other work on a busy machine does not count against it
        start = time.process_time()
        found = close_names(typed, names)
        elapsed = time.process_time() - start
        assert found[0] == expected
        assert elapsed < 1.5, f"{typed!r}: {elapsed:.2f}s of CPU"


# --- the index root's project list ----------------------------------------------------------


def test_pep_691_json() -> None:
    body = json.dumps(
        {"meta": {"api-version": "1.1"}, "projects": [{"name": "Django"}, {"name": "numpy"}]}
    ).encode()
    assert parse_project_list(body, "application/vnd.pypi.simple.v1+json") == ["Django", "numpy"]
    assert parse_project_list(body, "application/json; charset=utf-8") == ["Django", "numpy"]
    assert parse_project_list(body, "") == ["Django", "numpy"]  # sniffed


def test_pep_503_html() -> None:
    body = (
        b"<!DOCTYPE html><html><head><meta name='pypi:repository-version' content='1.0'>"
        b"</head><body>\n"
        b'<a href="/simple/django/">Django</a>\n'
        b"<A HREF='/simple/zope-interface/' data-x=1>  zope.interface </A>\n"
        b'<a href="/simple/a-b/">a&amp;b</a>\n'
        b'<a href="/simple/no-text/"></a>\n'
        b"<a href=/simple/unquoted/>unquoted</a>\n"
        b"</body></html>"
    )
    expected = ["Django", "zope.interface", "a&b", "no-text", "unquoted"]
    assert parse_project_list(body, "text/html") == expected
    assert parse_project_list(body, "application/vnd.pypi.simple.v1+html") == expected


def test_bad_json_is_an_index_error() -> None:
    with pytest.raises(IndexAccessError) as err:
        parse_project_list(
            b"{not json", "application/vnd.pypi.simple.v1+json", url="https://i/simple/"
        )
    assert err.value.url == "https://i/simple/"
    with pytest.raises(IndexAccessError):
        parse_project_list(b'{"meta": {}}', "application/vnd.pypi.simple.v1+json")


def test_a_pypi_sized_html_page_parses_quickly() -> None:
    names = [f"project-{i}" for i in range(700_000)]
    body = "".join(f'<a href="/simple/{n}/">{n}</a>\n' for n in names).encode()
    start = time.perf_counter()
    assert parse_project_list(body, "text/html") == names
    assert time.perf_counter() - start < 3.0
