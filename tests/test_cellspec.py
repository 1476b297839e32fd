"""What a %%pypi / %%conda cell declares."""

from __future__ import annotations

import pytest

from nbenv.cellspec import parse_cell
from nbenv.errors import SpecError, UsageError


def test_stacked_header_lines_make_one_declaration() -> None:
    declaration = parse_cell(
        "pypi",
        "--python 3.12 pandas --in a,b",
        "%pypi --extra-index-url https://example.invalid/simple private-lib\n"
        "%%conda -c conda-forge openmpi\n"
        "\n"
        "%pypi --out result\n"
        "import pandas\n"
        "%time x = 1\n",
    )
    assert declaration.pypi.requirement_strings() == ("pandas", "private-lib")
    assert declaration.pypi.extra_index_urls == ("https://example.invalid/simple",)
    assert declaration.pypi.pythons == ("3.12",)
    assert declaration.conda == (("-c", "conda-forge", "openmpi"),)
    assert declaration.inputs == ("a", "b") and declaration.outputs == ("result",)
    assert declaration.body == "import pandas\n%time x = 1\n"


def test_key_ignores_order_and_cell_options() -> None:
    a = parse_cell("pypi", "pandas numpy --in x", "print(1)\n")
    b = parse_cell("pypi", "numpy", "%pypi pandas --out y\nprint(2)\n")
    c = parse_cell("pypi", "numpy pandas==2.2", "")
    assert a.key == b.key != c.key


def test_empty_body_and_line_only() -> None:
    declaration = parse_cell("pypi", "requests", "")
    assert declaration.body == "" and declaration.pypi.requirement_strings() == ("requests",)


@pytest.mark.parametrize(
    ("line", "cell", "message"),
    [
        ("pandas", "%pypi --python 3.11\n%pypi --python 3.12\nx", "give --python once"),
        ("pandas --platform win_amd64", "", "--platform is for `nbenv lock`"),
        ("pandas --in 1x", "", "--in takes variable names separated by commas, not '1x'"),
        ("pandas --frobnicate", "", "%pypi: unknown option '--frobnicate'"),
        ("'pandas", "", "No closing quotation"),
        ("--index-url https://a.invalid/simple x", "%pypi --index-url https://b.invalid/s y\n",
         "the header lines give different --index-url values"),
    ],
)  # fmt: skip
def test_bad_headers_say_what_is_wrong(line: str, cell: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_cell("pypi", line, cell)
    assert message in str(info.value)


def test_bad_requirement_in_a_header_points_at_it() -> None:
    with pytest.raises(SpecError) as info:
        parse_cell("pypi", "pandas>=2..0", "")
    assert "pandas>=2..0\n             ^" in str(info.value)
