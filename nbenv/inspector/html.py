"""The inspector's information as static, readable HTML: what front ends without widgets
show (the inspector's display carries it as text/html), `nbenv list --html` and
`nbenv show ENV --html`. Built from the same rows as the widget app (nbenv.inspector.model).
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePath
from typing import Any

from nbenv.inspector.model import EnvDetail, EnvRow, Overview, ago
from nbenv.report import format_bytes

__all__ = ["STYLE", "detail_html", "envs_html", "overview_table", "packages_table", "tree_html"]

STYLE = (
    "<style>.nbenv-inspect table{border-collapse:collapse;font-size:0.9em}"
    ".nbenv-inspect th,.nbenv-inspect td{text-align:left;padding:2px 8px;"
    "border-bottom:1px solid #ddd;vertical-align:top}"
    ".nbenv-inspect td.num,.nbenv-inspect th.num{text-align:right}"
    ".nbenv-inspect code{font-size:0.95em}</style>"
)

_COLUMNS = (
    ("Name", False),
    ("Env id", False),
    ("Kind", False),
    ("Python", False),
    ("Packages", True),
    ("Size", True),
    ("Frees", True),
    ("Created", False),
    ("Last used", False),
    ("Notebooks", False),
    ("Kernel", False),
)


def _e(value: object) -> str:
    return html.escape("-" if value in (None, "") else str(value))


def _size(value: int | None) -> str:
    return "…" if value is None else format_bytes(value)


def _row_cells(row: EnvRow, now: float) -> list[tuple[str, bool]]:
    # the file name, with its full path on hover: the table stays narrow
    notebooks = "<br>".join(
        f"<span title='{_e(n)}'>{_e(PurePath(n).name)}</span>" for n in row.notebooks
    ) or "-"  # fmt: skip
    return [
        (_e(row.name), False),
        (f"<code>{_e(row.env_id)}</code>", False),
        (_e(row.kind), False),
        (_e(row.python), False),
        (str(row.packages), True),
        (_size(row.size), True),
        (_size(row.size_unique), True),
        (_e(ago(row.created, now)), False),
        (_e(ago(row.last_used, now)), False),
        (notebooks, False),
        (_e(row.kernel_display_name), False),
    ]


def overview_table(rows: Sequence[EnvRow], now: float | None = None) -> str:
    """The envs as a table (already filtered and sorted)."""
    now = now or time.time()
    head = "".join(f"<th{' class=num' if num else ''}>{html.escape(t)}</th>" for t, num in _COLUMNS)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if num else ''}>{v}</td>" for v, num in _row_cells(r, now))
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def envs_html(rows: Iterable[Mapping[str, Any]] | Overview) -> str:
    """All envs (rows as `describe_envs` gives them, or an Overview), with a summary line."""
    view = rows if isinstance(rows, Overview) else Overview(
        tuple(EnvRow.from_description(r) for r in rows)
    )  # fmt: skip
    if not view.rows:
        return (
            "<div class='nbenv-inspect'><p><b>nbenv</b>: no environments yet. Declare one "
            "with <code>%%pypi</code>.</p></div>"
        )
    return (
        f"{STYLE}<div class='nbenv-inspect'><p><b>nbenv</b>: {html.escape(view.summary())}</p>"
        f"{overview_table(view.view())}</div>"
    )


def packages_table(detail: EnvDetail) -> str:
    head = "".join(
        f"<th{' class=num' if n else ''}>{t}</th>"
        for t, n in (("Package", False), ("Version", False), ("Source", False), ("Size", True),
                     ("Required by", False))
    )  # fmt: skip
    names = {p.key: p.name for p in detail.packages.packages}
    body = []
    for p in detail.packages.packages:
        required_by = ", ".join(names.get(k, k) for k in p.required_by)
        if p.requested:
            required_by = "<i>requested</i>" + (f", {_e(required_by)}" if required_by else "")
        else:
            required_by = _e(required_by)
        body.append(
            f"<tr><td>{_e(p.name)}</td><td>{_e(p.version)}</td><td>{_e(p.source)}</td>"
            f"<td class=num>{format_bytes(p.size)}</td><td>{required_by}</td></tr>"
        )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def tree_html(detail: EnvDetail) -> str:
    """The requirement tree as indented text; `(*)`: expanded above."""
    lines = [
        "  " * depth + label + ("  (*)" if again else "")
        for depth, label, again in detail.packages.tree()
    ]
    return f"<pre>{html.escape(chr(10).join(lines))}</pre>"


def why_html(detail: EnvDetail, name: str) -> str:
    chains = detail.packages.why(name)
    if not chains:
        return f"<p>Nothing in this env requires {_e(name)}.</p>"
    items = "".join(
        "<li>" + (" &rarr; ".join(_e(n) for n in chain) if len(chain) > 1
                  else f"{_e(chain[0])} was asked for") + "</li>"
        for chain in chains
    )  # fmt: skip
    return f"<p>Why {_e(name)} is here:</p><ul>{items}</ul>"


def _facts(detail: EnvDetail) -> str:
    row = detail.row
    facts = [
        ("Env id", f"<code>{_e(row.env_id)}</code>"),
        ("Kind", _e(row.kind)),
        ("Python", _e(row.python)),
        ("Path", f"<code>{_e(row.path)}</code>"),
        ("Asked for", _e(" ".join(row.requirements) or "(a lock file)")),
        ("Indexes", _e(", ".join(detail.indexes))),
        ("Size", f"{_size(row.size)} on disk; removing it frees {_size(row.size_unique)}"),
        ("Created", _e(ago(row.created))),
        ("Last used", _e(ago(row.last_used))),
        ("Kernel", _e(row.kernel_display_name) + (f" (<code>{_e(row.kernel)}</code>)"
                                                  if row.kernel else "")),
        ("Notebooks", "<br>".join(_e(n) for n in row.notebooks) or "-"),
        ("Lock", f"<code>{_e(detail.lock_path)}</code>"),
    ]  # fmt: skip
    return (
        "<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts) + ("</table>")
    )


def facts_html(detail: EnvDetail) -> str:
    return _facts(detail)


def detail_html(detail: EnvDetail, *, with_lock: bool = True) -> str:
    """One env: facts, packages, requirement tree and lock (`nbenv show --html`)."""
    lock = (
        f"<details><summary>Lock ({_e(detail.lock_path)})</summary>"
        f"<pre>{html.escape(detail.lock_text)}</pre></details>"
        if with_lock and detail.lock_text
        else ""
    )
    return (
        f"{STYLE}<div class='nbenv-inspect'><h3>{_e(detail.row.label)}</h3>{_facts(detail)}"
        f"<h4>Packages ({len(detail.packages.packages)})</h4>{packages_table(detail)}"
        f"<h4>Requirement tree</h4>{tree_html(detail)}{lock}</div>"
    )
