"""The reliability suite: faults injected into real nbenv runs (the README's "Guarantees").

Each test takes the `faults` fixture and names every fault it injects; the test's outcome
says whether nbenv survived it, and the checks after it count data lost and secrets leaked.
The table of all of them is printed at the end of the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from ledger import FaultLog, LedgerRow, render_table

_LEDGER: list[LedgerRow] = []
_OUTCOME = pytest.StashKey[bool]()
_KNOWN = pytest.StashKey[str]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        # an xfail's call "passes" as skipped; a strict xfail that passes is a failure
        item.stash[_OUTCOME] = report.passed and not hasattr(report, "wasxfail")
        if hasattr(report, "wasxfail"):
            item.stash[_KNOWN] = report.wasxfail.removeprefix("reason: ")
    return report


@pytest.fixture
def faults(request: pytest.FixtureRequest) -> Iterator[FaultLog]:
    log = FaultLog(request.node.nodeid.rpartition("/")[2])
    yield log
    passed = request.node.stash.get(_OUTCOME, False)
    for row in log.rows:
        row.survived = passed
        row.known = request.node.stash.get(_KNOWN, None)
    _LEDGER.extend(log.rows)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _LEDGER:
        return
    terminalreporter.section("nbenv reliability: faults injected")
    for line in render_table(_LEDGER):
        terminalreporter.write_line(line)
