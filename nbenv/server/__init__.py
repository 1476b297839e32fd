"""The Jupyter server extension: nbenv's REST API for the JupyterLab extension.

Enabled on install by `jupyter_server_config.d/nbenv.json` (key `nbenv.server`). Routes live
in nbenv.server.handlers; they call the same core functions as the CLI.
"""

from __future__ import annotations

from typing import Any

__all__ = ["_jupyter_server_extension_points", "_load_jupyter_server_extension"]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "nbenv.server"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from nbenv.server.handlers import routes

    web_app = serverapp.web_app
    base_url = web_app.settings["base_url"]
    web_app.add_handlers(".*$", routes(base_url))
    serverapp.log.debug("nbenv: REST API at %snbenv/api/", base_url)
