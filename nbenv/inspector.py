"""What exists, as a readable HTML table: `%nbenv inspect` and `nbenv list --html`.

The static view for any front end; the interactive ipywidgets inspector builds on the same
rows (nbenv.envs.describe_envs), so there is one source of truth.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["envs_html"]

_COLUMNS = (
    ("name", "Name"),
    ("env_id", "Env id"),
    ("python", "Python"),
    ("packages", "Packages"),
    ("size_unique", "Size (not shared)"),
    ("last_used", "Last used"),
    ("kernel", "Kernel"),
)


def _cell(key: str, value: Any) -> str:
    if key == "size_unique":
        return f"{float(value) / 1e6:.1f} MB"
    if key == "last_used":
        minutes = max(0.0, time.time() - float(value)) / 60
        return (
            "just now"
            if minutes < 1
            else f"{minutes:.0f} min ago"
            if minutes < 120
            else (f"{minutes / 60:.0f} h ago" if minutes < 2880 else f"{minutes / 1440:.0f} d ago")
        )
    return "-" if value in (None, "") else str(value)


def envs_html(rows: Sequence[Mapping[str, Any]]) -> str:
    """An HTML table of environments (rows as `describe_envs` gives them)."""
    if not rows:
        return "<p><b>nbenv</b>: no environments yet. Declare one with <code>%%pypi</code>.</p>"
    head = "".join(f"<th style='text-align:left'>{html.escape(t)}</th>" for _, t in _COLUMNS)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(_cell(k, row.get(k)))}</td>" for k, _ in _COLUMNS)
        + "</tr>"
        for row in rows
    )
    total = sum(float(r.get("size_unique", 0)) for r in rows) / 1e6
    return (
        f"<div class='nbenv-inspect'><b>nbenv</b>: {len(rows)} environment(s), "
        f"{total:.1f} MB not shared with the cache<table><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
    )
