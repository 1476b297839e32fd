"""The request grammar shared by %%pypi and the CLI, and targets."""

from __future__ import annotations

import pytest

from nbenv.errors import SpecError, UsageError
from nbenv.resolve.target import Target
from nbenv.spec import parse_request


def test_requirements_and_options() -> None:
    request = parse_request(
        [
            "pandas>=2.2",
            "scikit-learn[alldeps]",
            "--index-url", "https://example.invalid/simple",
            "--extra-index-url", "https://a.invalid/simple",
            "--extra-index-url", "https://b.invalid/simple",
            "--python", "3.10",
            "--platform", "manylinux_2_28_x86_64",
            "--pre",
            "--name", "ml-demo",
        ]
    )  # fmt: skip
    assert request.requirement_strings() == ("pandas>=2.2", "scikit-learn[alldeps]")
    assert request.index_url == "https://example.invalid/simple"
    assert request.extra_index_urls == ("https://a.invalid/simple", "https://b.invalid/simple")
    assert request.targets == (Target("3.10", "manylinux_2_28_x86_64"),)
    assert request.pre and request.name == "ml-demo"


def test_repeated_python_and_platform_make_every_combination() -> None:
    request = parse_request(
        ["numpy", "--python", "3.9", "--python", "3.12", "--platform", "win_amd64",
         "--platform", "macosx_11_0_arm64"]
    )  # fmt: skip
    assert request.targets == (
        Target("3.9", "win_amd64"),
        Target("3.9", "macosx_11_0_arm64"),
        Target("3.12", "win_amd64"),
        Target("3.12", "macosx_11_0_arm64"),
    )


def test_request_is_frozen_and_comparable() -> None:
    a = parse_request(["numpy"])
    assert a == parse_request(["numpy"])
    with pytest.raises(AttributeError):
        a.pre = True  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "pandas>=2..0",
            "Invalid requirement 'pandas>=2..0': Expected comma (within version specifier), "
            "semicolon (after version specifier) or end\n    pandas>=2..0\n             ^",
        ),
        (
            "pandas[",
            "Invalid requirement 'pandas[': Expected matching RIGHT_BRACKET for LEFT_BRACKET, "
            "after extras\n    pandas[\n           ^",
        ),
        (
            ">=1",
            "Invalid requirement '>=1': Expected package name at the start of dependency "
            "specifier\n    >=1\n    ^",
        ),
    ],
)
def test_bad_requirement_points_at_the_spot(text: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_request([text])
    assert str(info.value) == message


def test_direct_urls_are_refused_clearly() -> None:
    with pytest.raises(SpecError, match="direct URL requirements are not supported"):
        parse_request(["pkg @ https://example.invalid/pkg.whl"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["x", "--python", "3"], "--python wants a version like 3.11, not '3'"),
        (["x", "--platform", "amiga"], "Unknown platform tag 'amiga'"),
        (["x", "--name", "My Env"], "--name 'My Env': use lowercase letters"),
        (["x", "--frobnicate"], "Unknown option '--frobnicate'"),
    ],
)
def test_bad_options(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_request(argv)
    assert message in str(info.value)


def test_target_markers_for_another_machine() -> None:
    target = Target("3.9", "macosx_11_0_arm64")
    assert target.markers["python_version"] == "3.9"
    assert target.markers["sys_platform"] == "darwin"
    assert target.markers["platform_machine"] == "arm64"
    assert target.marker_expression() == (
        'python_version == "3.9" and sys_platform == "darwin" and platform_machine == "arm64"'
    )
    windows = Target("3.12", "win_amd64").markers
    assert (windows["sys_platform"], windows["os_name"], windows["platform_machine"]) == (
        "win32",
        "nt",
        "AMD64",
    )


def test_manylinux_target_accepts_older_glibc_wheels_best_first() -> None:
    ranks = Target("3.11", "manylinux_2_28_x86_64").tag_rank
    newer = ranks["cp311-cp311-manylinux_2_28_x86_64"]
    older = ranks["cp311-cp311-manylinux_2_17_x86_64"]
    legacy = ranks["cp311-cp311-manylinux2014_x86_64"]
    assert newer < older <= legacy < ranks["py3-none-any"]
    assert "cp311-cp311-manylinux_2_31_x86_64" not in ranks
    assert "cp312-cp312-manylinux_2_17_x86_64" not in ranks
