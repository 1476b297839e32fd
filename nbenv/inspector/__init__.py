"""See and manage what nbenv built, in the notebook.

model.py     the data and actions, from the same core calls as the CLI
widgets.py   the ipywidgets app (`%nbenv inspect`, `nbenv.inspect()`)
html.py      the same information as static HTML (no widgets; `nbenv list/show --html`)
progress.py  progress of a build in the cell (a widget, or text), driven by the Reporter
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbenv.inspector.widgets import InspectorApp
    from nbenv.store import Store

__all__ = ["envs_html", "inspect"]


def envs_html(rows: Any) -> str:
    """`nbenv list --html`: the envs as a table."""
    from nbenv.inspector.html import envs_html as render

    return render(rows)


def inspect(store: Store | None = None, *, display: bool = True) -> InspectorApp | None:
    """Show the inspector in the current cell and return it. Its display carries the static
    HTML too, for front ends that cannot show widgets; without ipywidgets installed, only
    that HTML is shown (and None returned)."""
    from IPython.display import HTML
    from IPython.display import display as show

    try:
        from nbenv.inspector.widgets import InspectorApp
    except ImportError:
        from nbenv.inspector.model import overview

        if display:
            show(HTML(envs_html(overview(store))))  # type: ignore[no-untyped-call]
        return None
    app = InspectorApp(store)
    if display:
        show(app)  # type: ignore[no-untyped-call]
    app.measure_sizes()  # after the first display: sizes not cached yet fill in
    return app
