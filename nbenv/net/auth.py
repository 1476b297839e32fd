"""Credentials for indexes: URL userinfo and ~/.netrc. Never shown, never stored.

Everything that leaves nbenv (locks, logs, error messages, kernelspecs) goes through
`redact`, which drops userinfo from every URL in a text.
"""

from __future__ import annotations

import netrc
import os
import re
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["Credentials", "redact", "split_credentials", "strip_userinfo"]

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def redact(text: str) -> str:
    """Remove `user:password@` from every URL in `text`."""
    return _USERINFO.sub(r"\g<scheme>", text)


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """`https://u:p@host/x` -> (`https://host/x`, ("u", "p"))."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    # keep the host part exactly as written (case, IPv6 brackets, port)
    host = parts.netloc.rpartition("@")[2]
    clean = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    user = unquote(parts.username or "")
    password = unquote(parts.password or "")
    return clean, (user, password)


def strip_userinfo(url: str) -> str:
    return split_credentials(url)[0]


class Credentials:
    """Credentials by network location, from index URLs first, then netrc."""

    def __init__(self, urls: Iterable[str] = (), netrc_path: Path | None = None) -> None:
        self._by_netloc: dict[str, tuple[str, str]] = {}
        for url in urls:
            clean, cred = split_credentials(url)
            if cred is not None:
                self._by_netloc.setdefault(urlsplit(clean).netloc.lower(), cred)
        self._netrc_path = netrc_path
        self._netrc: netrc.netrc | None = None
        self._netrc_loaded = False
        self._lock = threading.Lock()

    def _load_netrc(self) -> netrc.netrc | None:
        with self._lock:
            if not self._netrc_loaded:
                self._netrc_loaded = True
                path = self._netrc_path
                if path is None:
                    env = os.environ.get("NETRC")
                    path = Path(env) if env else Path.home() / ".netrc"
                try:
                    self._netrc = netrc.netrc(str(path)) if path.is_file() else None
                except (OSError, netrc.NetrcParseError):
                    self._netrc = None  # an unreadable netrc is ignored, as pip does
            return self._netrc

    def to_json(self) -> dict[str, Any]:
        """For a client in another process (nbenv.downloading): secrets, so only ever sent
        over a pipe, never put on a command line or in the environment."""
        netrc_path = str(self._netrc_path) if self._netrc_path is not None else None
        return {"by_netloc": {k: list(v) for k, v in self._by_netloc.items()},
                "netrc": netrc_path}  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Credentials:
        made = cls(netrc_path=Path(data["netrc"]) if data.get("netrc") else None)
        made._by_netloc = {k: (v[0], v[1]) for k, v in data["by_netloc"].items()}
        return made

    def for_url(self, url: str) -> tuple[str, str] | None:
        parts = urlsplit(url)
        found = self._by_netloc.get(parts.netloc.lower())
        if found is not None:
            return found
        rc = self._load_netrc()
        if rc is None or not parts.hostname:
            return None
        entry = rc.authenticators(parts.hostname)
        if entry is None:
            return None
        login, _account, password = entry
        return login or "", password or ""
