"""The inspector as an ipywidgets (8) app: every env (filter, sort), one env in detail
(packages, "why is X here", lock, outdated check) and actions that ask before they act
(remove, clean up, register/unregister kernel, export, upgrade).

Widgets hold no data of their own: every view is redrawn from nbenv.inspector.model, which
asks the core. The first display builds only the list, from cached figures; sizes not
measured yet show as "…" and are measured in a background thread after the display (then
cached in the store); an env's detail is built when it is chosen. So opening the inspector
stays fast with many envs.
"""

from __future__ import annotations

import html
import threading
import time
from pathlib import Path
from typing import Any

import ipywidgets as w

from nbenv.errors import NbenvError
from nbenv.inspector import html as views
from nbenv.inspector.model import (
    SORT_KEYS,
    EnvDetail,
    EnvRow,
    Overview,
    Plan,
    env_detail,
    export_formats,
    export_text,
    measure,
    overview,
    plan_gc,
    plan_kernel,
    plan_remove,
    plan_upgrade,
)
from nbenv.inspector.progress import ProgressDisplay
from nbenv.net.auth import redact
from nbenv.store import Store

__all__ = ["InspectorApp"]


class InspectorApp:
    """`app.widget` is the root; the other attributes are its parts (tests drive them as a
    person would: set `filter.value`, `select.value`, click `buttons["remove"]`, then
    `confirm_button`)."""

    def __init__(self, store: Store | None = None, data: Overview | None = None) -> None:
        self.store = store or Store()
        self.data = data or overview(self.store, walk=False)
        self.detail: EnvDetail | None = None
        self.pending: Plan | None = None
        self._lock = threading.RLock()  # the size thread redraws too
        self._measuring: threading.Thread | None = None

        self.header = w.HTML()
        self.filter = w.Text(placeholder="filter: name, id, requirement, notebook, kernel",
                             continuous_update=True, layout=w.Layout(width="24em"))  # fmt: skip
        self.sort = w.Dropdown(options=list(SORT_KEYS), value="last used", description="sort",
                               layout=w.Layout(width="14em"))  # fmt: skip
        self.descending = w.ToggleButton(value=True, description="descending", icon="sort-down",
                                         layout=w.Layout(width="9em"))  # fmt: skip
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.gc_button = w.Button(description="Clean up…", icon="eraser",
                                  tooltip="orphaned kernels, killed builds")  # fmt: skip
        self.table = w.HTML(layout=w.Layout(max_height="24em", overflow="auto"))
        self.select = w.Dropdown(description="env", options=[], value=None,
                                 layout=w.Layout(width="36em"))  # fmt: skip
        self.question = w.HTML()
        self.confirm_button = w.Button(description="Confirm", button_style="danger")
        self.cancel_button = w.Button(description="Cancel")
        self.confirm_box = w.HBox([self.question, self.confirm_button, self.cancel_button],
                                  layout=w.Layout(display="none"))  # fmt: skip
        self.status = w.HTML()
        self.detail_box = w.VBox([], layout=w.Layout(display="none"))  # built on first use
        self.buttons: dict[str, Any] = {}
        self.widget = w.VBox(
            [
                self.header,
                w.HBox([self.filter, self.sort, self.descending, self.refresh_button,
                        self.gc_button]),
                self.table,  # scrolls past 24em: the chooser below stays in view
                self.select,
                self.confirm_box,
                self.status,
                self.detail_box,
            ]
        )  # fmt: skip
        self.widget.add_class("nbenv-inspector")

        self.filter.observe(lambda _: self._redraw_list(), "value")
        self.sort.observe(self._sorted_by, "value")
        self.descending.observe(lambda _: self._redraw_list(), "value")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.gc_button.on_click(lambda _: self._ask(plan_gc(self.store)))
        self.select.observe(lambda _: self._show_env(), "value")
        self.confirm_button.on_click(lambda _: self.confirm())
        self.cancel_button.on_click(lambda _: self.cancel())
        self._redraw_list()

    # -- the list ---------------------------------------------------------------------------
    def _sorted_by(self, change: dict[str, Any]) -> None:
        self.descending.value = SORT_KEYS[change["new"]][1]  # each column's natural order
        self._redraw_list()

    def rows(self) -> list[EnvRow]:
        """The envs shown: filtered and sorted as the controls say."""
        return self.data.view(self.filter.value, self.sort.value, self.descending.value)

    def _redraw_list(self) -> None:
        with self._lock:
            self._redraw_list_locked()

    def _redraw_list_locked(self) -> None:
        rows = self.rows()
        self.header.value = f"<b>nbenv</b>: {html.escape(self.data.summary(shown=len(rows)))}"
        self.table.value = (
            views.STYLE + "<div class='nbenv-inspect'>" + views.overview_table(rows) + "</div>"
            if rows else ""
        )  # fmt: skip
        chosen = self.select.value
        options = [(f"{r.label}  ({r.env_id[:12]}, {r.packages} packages)", r.env_id)
                   for r in rows]  # fmt: skip
        self.select.options = options
        ids = [v for _, v in options]
        self.select.value = chosen if chosen in ids else None
        self.descending.icon = "sort-down" if self.descending.value else "sort-up"
        self.descending.description = "descending" if self.descending.value else "ascending"

    def refresh(self) -> None:
        """Read the store again (after an action, or a change made elsewhere)."""
        with self._lock:
            self.data = overview(self.store, walk=False)
            self._redraw_list()
            self._show_env()
        self.measure_sizes()

    def measure_sizes(self) -> None:
        """Measure the sizes not cached yet in a background thread, then redraw the list."""
        with self._lock:
            pending = self.data.unmeasured
            if not pending or (self._measuring and self._measuring.is_alive()):
                return

            def work() -> None:
                shown = time.monotonic()
                for index, env_id in enumerate(pending, start=1):
                    measure([env_id], self.store)
                    if time.monotonic() - shown > 1.0 or index == len(pending):
                        shown = time.monotonic()  # the figures appear as they come
                        with self._lock:
                            self.data = overview(self.store, walk=False)
                            self._redraw_list()

            self._measuring = threading.Thread(target=work, name="nbenv-sizes", daemon=True)
            self._measuring.start()

    def wait_for_sizes(self, timeout: float | None = None) -> None:
        thread = self._measuring
        if thread is not None:
            thread.join(timeout)

    # -- one env ------------------------------------------------------------------------------
    def _build_detail(self) -> None:
        """The one-env pane: made when an env is first chosen, not at the first display
        (half the widgets, each a comm message to the front end)."""
        if self.detail_box.children:
            return
        self.facts = w.HTML()
        self.packages = w.HTML(layout=w.Layout(max_height="28em", overflow="auto"))
        self.why_select = w.Dropdown(description="why is", options=[], value=None)
        self.why = w.HTML()
        self.tree = w.HTML()
        self.lock = w.Textarea(disabled=True, layout=w.Layout(width="100%", height="18em"))
        self.outdated_button = w.Button(description="Check for updates", icon="search")
        self.outdated = w.HTML()
        self.export_format = w.Dropdown(options=list(export_formats()), description="format")
        self.export_button = w.Button(description="Export", icon="download")
        self.export_path = w.Text(placeholder="save to (optional): path/to/file")
        self.export_text = w.Textarea(disabled=True,
                                      layout=w.Layout(width="100%", height="14em"))  # fmt: skip
        self.tabs = w.Tab(
            children=[
                self.packages,
                w.VBox([self.why_select, self.why, self.tree]),
                self.lock,
                w.VBox([self.outdated_button, self.outdated]),
                w.VBox([w.HBox([self.export_format, self.export_button, self.export_path]),
                        self.export_text]),
            ],
            titles=("Packages", "Why is it here", "Lock", "Outdated", "Export"),
        )  # fmt: skip
        wide = w.Layout(width="auto")  # "Unregister kernel…" is longer than a button
        self.buttons.update(
            {
                "remove": w.Button(description="Remove…", icon="trash", button_style="danger"),
                "kernel": w.Button(description="Register kernel…", icon="plug", layout=wide),
                "upgrade": w.Button(description="Upgrade…", icon="arrow-up"),
            }
        )
        self.why_select.observe(lambda _: self._show_why(), "value")
        self.outdated_button.on_click(lambda _: self._check_outdated())
        self.export_button.on_click(lambda _: self._export())
        self.buttons["remove"].on_click(lambda _: self._ask_for_row(plan_remove))
        self.buttons["kernel"].on_click(lambda _: self._ask_for_row(plan_kernel))
        self.buttons["upgrade"].on_click(
            lambda _: self._ask_for_row(
                lambda row, store: plan_upgrade(row, store, reporter=self._status_reporter())
            )
        )
        self.detail_box.children = [self.facts, w.HBox(list(self.buttons.values())), self.tabs]

    def _show_env(self) -> None:
        env_id = self.select.value
        if env_id is None or not self.store.exists(env_id):
            self.detail = None
            self.detail_box.layout.display = "none"
            return
        try:
            self.detail = detail = env_detail(env_id, self.store)
        except NbenvError as exc:
            self._say(str(exc), error=True)
            return
        self._build_detail()
        self.facts.value = views.STYLE + "<div class='nbenv-inspect'>" + views.facts_html(
            detail
        ) + "</div>"  # fmt: skip
        self.packages.value = (
            views.STYLE + "<div class='nbenv-inspect'>" + views.packages_table(detail) + "</div>"
        )
        self.why_select.options = [p.name for p in detail.packages.packages]
        self.why_select.value = None
        self.why.value = ""
        self.tree.value = "<b>Requirement tree</b>" + views.tree_html(detail)
        self.lock.value = detail.lock_text
        self.outdated.value = ""
        self.export_text.value = ""
        registered = bool(detail.row.kernel)
        self.buttons["kernel"].description = (
            "Unregister kernel…" if registered else "Register kernel…"
        )
        self.detail_box.layout.display = ""

    def _show_why(self) -> None:
        if self.detail is None or not self.why_select.value:
            self.why.value = ""
            return
        self.why.value = views.why_html(self.detail, self.why_select.value)

    def _status_reporter(self) -> ProgressDisplay:
        """Progress of a long action (an upgrade) in the status line, live: comm messages
        reach the front end while the action runs."""

        def show(line: str) -> None:
            self.status.value = html.escape(line)

        return ProgressDisplay("callback", callback=show)

    def _check_outdated(self) -> None:
        from nbenv.upgrade import check_outdated

        if self.detail is None:
            return
        self.outdated.value = "<i>resolving again, with fresh index pages…</i>"
        try:
            found = check_outdated(self.store, self.detail.row.env_id,
                                   reporter=self._status_reporter())  # fmt: skip
        except NbenvError as exc:
            self.outdated.value = f"<span style='color:#b00'>{html.escape(redact(str(exc)))}</span>"
            return
        finally:
            self.status.value = ""
        if found.up_to_date:
            self.outdated.value = "Up to date: the requirements resolve to this env's lock."
            return
        items = "".join(f"<li><code>{html.escape(c)}</code></li>" for c in found.changes)
        self.outdated.value = (
            f"Newer versions resolve (env {found.new_env_id}):<ul>{items}</ul>"
            "<i>Upgrade…</i> builds that env."
        )

    def _export(self) -> None:
        if self.detail is None:
            return
        try:
            text = export_text(self.detail.row.env_id, self.export_format.value)
        except NbenvError as exc:
            self._say(str(exc), error=True)
            return
        self.export_text.value = text
        target = self.export_path.value.strip()
        if target:
            path = Path(target).expanduser()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
            except OSError as exc:
                self._say(f"Could not write {path}: {exc.strerror or exc}", error=True)
                return
            self._say(f"Wrote {path}")

    # -- confirmation -------------------------------------------------------------------------
    def _ask_for_row(self, make: Any) -> None:
        if self.detail is not None:
            self._ask(make(self.detail.row, self.store))

    def _ask(self, plan: Plan) -> None:
        self.pending = plan
        self.question.value = html.escape(plan.question)
        self.confirm_button.button_style = "danger" if plan.danger else "primary"
        nothing = plan.action == "gc" and not plan.danger
        self.confirm_button.layout.display = "none" if nothing else ""
        self.cancel_button.description = "OK" if nothing else "Cancel"
        self.confirm_box.layout.display = ""

    def confirm(self) -> None:
        """Do what was asked, then read the store again."""
        plan, self.pending = self.pending, None
        self.confirm_box.layout.display = "none"
        if plan is None:
            return
        env_id = self.detail.row.env_id if self.detail is not None else None
        try:
            self._say(plan.run())
        except NbenvError as exc:
            self._say(str(exc), error=True)
        _announce(plan.action, None if plan.action == "gc" else env_id)
        self.refresh()

    def cancel(self) -> None:
        self.pending = None
        self.confirm_box.layout.display = "none"
        self.question.value = ""

    def _say(self, message: str, *, error: bool = False) -> None:
        text = html.escape(redact(message))
        self.status.value = f"<span style='color:#b00'>{text}</span>" if error else text

    # -- display ----------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The widget, plus the static HTML and a text line for front ends without widgets
        (nbconvert, GitHub's viewer, a terminal)."""
        bundle = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        bundle["text/html"] = views.envs_html(self.data)
        bundle["text/plain"] = f"nbenv inspector: {self.data.summary()}"
        return bundle


# The JupyterLab extension refreshes its kernel picker and sidebar on the magics' change
# message (nbenv.magics.announce_change): the inspector's actions send it too.
_EVENTS = {"remove": "remove", "gc": "gc", "register kernel": "kernel",
           "unregister kernel": "kernel", "upgrade": "create"}  # fmt: skip


def _announce(action: str, env_id: str | None) -> None:
    from IPython.core.getipython import get_ipython

    if get_ipython() is None or action not in _EVENTS:
        return
    from nbenv.magics import announce_change

    announce_change(_EVENTS[action], env_id)
