"""The reliability ledger: every fault a test injects, whether nbenv survived it, and what
the checks after it found (data lost, secrets leaked). Printed as a table at the end of the
run (conftest.py) and asserted to be zero by the tests themselves.

A fault is *survived* when the test that injected it passed: nbenv either did the job or
refused with the clear error the test expects, and every check after it came out clean.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["FaultLog", "LedgerRow", "render_table"]


@dataclass
class LedgerRow:
    category: str
    fault: str
    test: str
    survived: bool | None = None  # None: the test did not finish its call phase
    known: str | None = None  # the reason of a strict xfail: a failure known and reported
    data_lost: int = 0
    secrets_leaked: int = 0


@dataclass
class FaultLog:
    """What one test injected; the conftest fills in `survived` from the test's outcome."""

    test: str
    rows: list[LedgerRow] = field(default_factory=list)

    def inject(self, category: str, fault: str) -> LedgerRow:
        row = LedgerRow(category, fault, self.test)
        self.rows.append(row)
        return row

    def lost(self, problems: list[str]) -> list[str]:
        """Count data-loss problems (store/cache/lock inconsistencies) against the last
        fault; returns them for the test's assertion."""
        if self.rows:
            self.rows[-1].data_lost += len(problems)
        return problems

    def leaked(self, hits: list[str]) -> list[str]:
        """Count places a secret was found against the last fault; returns them."""
        if self.rows:
            self.rows[-1].secrets_leaked += len(hits)
        return hits


def render_table(rows: list[LedgerRow]) -> list[str]:
    """One line per category, then a total; columns a person can read in a CI log."""
    categories: dict[str, list[LedgerRow]] = {}
    for row in rows:
        categories.setdefault(row.category, []).append(row)
    header = ("category", "faults injected", "survived", "data lost", "secrets leaked")
    lines: list[tuple[str, ...]] = [header]
    totals = [0, 0, 0, 0]
    for name in sorted(categories):
        group = categories[name]
        figures = [
            len(group),
            sum(1 for r in group if r.survived),
            sum(r.data_lost for r in group),
            sum(r.secrets_leaked for r in group),
        ]
        totals = [a + b for a, b in zip(totals, figures, strict=True)]
        lines.append((name, *map(str, figures)))
    lines.append(("total", *map(str, totals)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def fmt(line: tuple[str, ...]) -> str:
        cells = [line[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)
        ]
        return "  ".join(cells)

    rule = "  ".join("-" * w for w in widths)
    out = [fmt(lines[0]), rule, *map(fmt, lines[1:-1]), rule, fmt(lines[-1])]
    for r in rows:
        if not r.survived:
            why = f" -- known: {r.known}" if r.known else ""
            out.append(f"not survived: {r.category}: {r.fault} ({r.test}){why}")
    return out
