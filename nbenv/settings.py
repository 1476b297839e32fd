"""The user's pip index settings, read the way pip reads them.

Someone who pointed pip at a private index expects nbenv to use it too. The rules follow
pip's `configuration.py` and `cli/parser.py`:

- files, later overriding earlier: global (`$XDG_CONFIG_DIRS/pip/pip.conf`, default
  `/etc/xdg/pip/pip.conf`, then `/etc/pip.conf`), user (`~/.pip/pip.conf`, then
  `$XDG_CONFIG_HOME/pip/pip.conf` or `~/.config/pip/pip.conf`; skipped when
  `PIP_CONFIG_FILE` names an existing file), site (`sys.prefix/pip.conf`), `PIP_CONFIG_FILE`;
  `PIP_CONFIG_FILE=os.devnull` loads no file at all;
- sections beat files: every `[global]` value, then `[install]`, then `PIP_*` variables;
- an empty value unsets; list options are whitespace-separated and replace, not extend
  (so a value of only spaces, which pip keeps, empties a list).

The network options pip shares with nbenv, `timeout` (seconds, pip's `--timeout`) and
`retries` (pip's `--retries`), are read by the same rules; `NBENV_HTTP_TIMEOUT` and
`NBENV_HTTP_RETRIES` win over every pip setting. Unset: 30 s and 3 retries.

Plain paths (`/srv/wheels`, `~/idx`, `./wheels`) become absolute `file://` URLs when read,
relative to the current directory as pip would take them, so downstream code sees only URLs.
URLs keep their credentials (the HTTP client needs them); show them with `strip_userinfo`.
"""

from __future__ import annotations

import configparser
import locale
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from nbenv.errors import NetworkSettingError, PipConfigError
from nbenv.net.auth import strip_userinfo

__all__ = [
    "DEFAULT_INDEX_URL",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "IndexSettings",
    "TlsFiles",
    "effective_indexes",
    "normalize_location",
    "pip_config_files",
    "read_pip_settings",
]

DEFAULT_INDEX_URL = "https://pypi.org/simple"
DEFAULT_TIMEOUT = 30.0  # seconds without an answer (connect: at most 10 of them)
DEFAULT_RETRIES = 3

_CONFIG_NAME = "pip.ini" if sys.platform == "win32" else "pip.conf"
_ETC_DIR = "/etc"  # pip appends it to the XDG dirs on Unix; tests point it elsewhere
_SECTIONS = ("global", "install", ":env:")  # pip's override order for `pip install`
_OPTIONS = {  # config key -> the field it sets ("pypi-url" is pip's alias of --index-url)
    "index-url": "index_url",
    "pypi-url": "index_url",
    "extra-index-url": "extra_index_urls",
    "find-links": "find_links",
    "no-index": "no_index",
    "timeout": "timeout",
    "retries": "retries",
    "cert": "cert",
    "client-cert": "client_cert",
}
_NBENV_NETWORK = (("NBENV_HTTP_TIMEOUT", "timeout"), ("NBENV_HTTP_RETRIES", "retries"))
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # two letters at least: C:\ is a path
_TRUE = ("y", "yes", "t", "true", "on", "1")
_FALSE = ("n", "no", "f", "false", "off", "0")


@dataclass(frozen=True)
class TlsFiles:
    """pip's `cert` (a PEM bundle of CA certificates, or a directory of them, trusted
    instead of the default ones) and `client-cert` (one PEM file with the client's key and
    certificate), with where each was set, for errors that say what to fix."""

    cert: str | None = None
    client_cert: str | None = None
    cert_source: str = ""
    client_cert_source: str = ""


@dataclass(frozen=True)
class IndexSettings:
    """pip's index options as the user configured them (before any request's options)."""

    index_url: str = DEFAULT_INDEX_URL
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False  # pip's --no-index: the configured indexes are off
    timeout: float = DEFAULT_TIMEOUT  # seconds an HTTP request may wait for an answer
    retries: int = DEFAULT_RETRIES  # tries after the first on a transient failure
    tls: TlsFiles = TlsFiles()
    # option -> where its value came from (a file path or "PIP_..."), for --debug output
    sources: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def summary(self) -> str:
        """Human-readable lines for `--debug`; credentials are stripped."""
        origin = dict(self.sources)

        def line(option: str, values: Sequence[str]) -> str:
            shown = " ".join(strip_userinfo(v) for v in values) or "(none)"
            where = f"  [{origin[option]}]" if option in origin else ""
            return f"{option}: {shown}{where}"

        lines = [
            line("index-url", [self.index_url]),
            line("extra-index-url", self.extra_index_urls),
            line("find-links", self.find_links),
        ]
        if self.no_index:
            lines.append(line("no-index", ["true"]))
        lines.append(line("timeout", [f"{self.timeout:g} s"]))
        lines.append(line("retries", [str(self.retries)]))
        if self.tls.cert:
            lines.append(line("cert", [self.tls.cert]))
        if self.tls.client_cert:
            lines.append(line("client-cert", [self.tls.client_cert]))
        return "\n".join(lines)


def normalize_location(location: str, environ: Mapping[str, str] | None = None) -> str:
    """A URL unchanged; a plain path as an absolute `file://` URL (`~` is expanded)."""
    location = location.strip()
    if _SCHEME.match(location):
        return location
    env = os.environ if environ is None else environ
    if location == "~" or location.startswith(("~/", "~" + os.sep)):
        location = _home(env) + location[1:]
    return Path(os.path.abspath(os.path.expanduser(location))).as_uri()


def pip_config_files(environ: Mapping[str, str] | None = None) -> list[str]:
    """pip's configuration files, lowest priority first (absent ones included)."""
    env = os.environ if environ is None else environ
    env_file = env.get("PIP_CONFIG_FILE")
    if env_file == os.devnull:
        return []
    files = [os.path.join(d, _CONFIG_NAME) for d in _site_config_dirs(env)]
    if not (env_file and os.path.exists(env_file)):
        legacy = os.path.join(_home(env), "pip" if sys.platform == "win32" else ".pip")
        files += [
            os.path.join(legacy, _CONFIG_NAME),
            os.path.join(_user_config_dir(env), _CONFIG_NAME),
        ]
    files.append(os.path.join(sys.prefix, _CONFIG_NAME))
    if env_file is not None:
        files.append(env_file)
    return files


def read_pip_settings(environ: Mapping[str, str] | None = None) -> IndexSettings:
    """Read pip's index options from its config files and `PIP_*` variables.

    Raises PipConfigError for a file pip itself would refuse, or a bad boolean.
    """
    env = os.environ if environ is None else environ
    # section -> option -> (value, source); a later file replaces an earlier one's value
    merged: dict[str, dict[str, tuple[str, str]]] = {section: {} for section in _SECTIONS}
    for path in dict.fromkeys(pip_config_files(env)):  # pip keys files by name: once each
        for section, items in _read_config_file(path).items():
            if section in merged:
                for name, value in items.items():
                    merged[section][name] = (value, path)
    for key, value in env.items():
        if key.startswith("PIP_") and key[4:].lower() not in ("version", "help"):
            merged[":env:"][_normalize_name(key[4:])] = (value, key)

    values: dict[str, tuple[str, str]] = {}  # field -> (raw value, source)
    for section in _SECTIONS:
        for name, (value, source) in merged[section].items():
            if name in _OPTIONS and value:  # pip drops empty values after merging
                values[_OPTIONS[name]] = (value, source)
    for variable, name in _NBENV_NETWORK:  # nbenv's own wins over anything pip's
        if env.get(variable, "").strip():
            values[name] = (env[variable], variable)

    def urls(name: str) -> tuple[str, ...]:
        raw = values.get(name, ("", ""))[0]
        return tuple(normalize_location(url, env) for url in raw.split())

    index_url = values.get("index_url", ("", ""))[0].strip()
    no_index = False
    if "no_index" in values:
        raw, source = values["no_index"]
        no_index = _to_bool(raw, source)
    option_names = {v: k for k, v in _OPTIONS.items() if k != "pypi-url"}

    def file_option(name: str) -> tuple[str | None, str]:
        raw, source = values.get(name, ("", ""))
        path = raw.strip()
        if path == "~" or path.startswith("~/"):  # pip's path options expand the user
            path = _home(env) + path[1:]
        return (os.path.abspath(path) if path else None), source  # from the cwd, as pip

    cert, cert_source = file_option("cert")
    client_cert, client_source = file_option("client_cert")
    return IndexSettings(
        index_url=normalize_location(index_url, env) if index_url else DEFAULT_INDEX_URL,
        extra_index_urls=urls("extra_index_urls"),
        find_links=urls("find_links"),
        no_index=no_index,
        timeout=_to_timeout(*values["timeout"]) if "timeout" in values else DEFAULT_TIMEOUT,
        retries=_to_retries(*values["retries"]) if "retries" in values else DEFAULT_RETRIES,
        tls=TlsFiles(cert, client_cert, cert_source, client_source),
        sources=tuple((option_names[f], src) for f, (_, src) in values.items()),
    )


def effective_indexes(
    request_index_url: str | None, request_extra: Sequence[str], settings: IndexSettings
) -> tuple[str, ...]:
    """The indexes to search, primary first, the way `pip install -i ... --extra-index-url ...`
    combines its options with the configured ones.

    The request's index replaces pip's index-url; extras are pip's then the request's.
    Duplicates (same URL up to credentials and a trailing slash) are dropped, keeping the
    first position and whichever spelling carries credentials. pip's no-index turns off the
    configured indexes only: indexes named in the request itself still count, so the result
    may be empty (then only find-links are searched).
    """
    if settings.no_index:
        wanted = [*([request_index_url] if request_index_url else []), *request_extra]
    else:
        wanted = [
            request_index_url or settings.index_url,
            *settings.extra_index_urls,
            *request_extra,
        ]
    chosen: dict[str, str] = {}  # insertion order is the search order
    for url in (normalize_location(u) for u in wanted):
        key = strip_userinfo(url).rstrip("/")
        kept = chosen.get(key)
        if kept is None or (kept == strip_userinfo(kept) and url != strip_userinfo(url)):
            chosen[key] = url
    return tuple(chosen.values())


def _normalize_name(name: str) -> str:
    return name.lower().replace("_", "-").removeprefix("--")


class _ConfigParser(configparser.RawConfigParser):
    def optionxform(self, optionstr: str) -> str:
        return _normalize_name(optionstr)


def _read_config_file(path: str) -> dict[str, dict[str, str]]:
    if not os.path.exists(path):
        return {}
    parser = _ConfigParser()
    encoding = "utf-8" if sys.flags.utf8_mode else locale.getpreferredencoding(False)
    try:
        parser.read(path, encoding=encoding)
    except UnicodeDecodeError:
        raise PipConfigError(path, f"contains invalid {encoding} characters") from None
    except configparser.Error as exc:
        raise PipConfigError(path, " ".join(exc.message.split())) from None
    return {section: dict(parser.items(section)) for section in parser.sections()}


def _to_bool(value: str, source: str) -> bool:
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise PipConfigError(
        source, f"no-index = {value!r} is not a boolean (use true/false, yes/no, 1/0)"
    )


def _to_timeout(value: str, source: str) -> float:
    try:
        seconds = float(value.strip())
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise NetworkSettingError(
            source, "timeout", value, "a number of seconds above 0, e.g. 60 or 2.5"
        )
    return seconds


def _to_retries(value: str, source: str) -> int:
    text = value.strip()
    if not text.isdigit():
        raise NetworkSettingError(source, "retries", value, "a whole number of 0 or more, e.g. 5")
    return int(text)


def _home(env: Mapping[str, str]) -> str:
    return env.get("HOME") or os.path.expanduser("~")


def _site_config_dirs(env: Mapping[str, str]) -> list[str]:
    if sys.platform == "darwin":
        return platformdirs.site_data_dir("pip", appauthor=False, multipath=True).split(os.pathsep)
    if sys.platform == "win32":
        return [platformdirs.site_config_dir("pip", appauthor=False)]
    # platformdirs ignores blank and relative entries
    listed = (p.strip() for p in env.get("XDG_CONFIG_DIRS", "").split(os.pathsep))
    bases = [p for p in listed if os.path.isabs(p)] or ["/etc/xdg"]
    return [os.path.join(base, "pip") for base in bases] + [_ETC_DIR]


def _user_config_dir(env: Mapping[str, str]) -> str:
    if sys.platform == "win32":
        return platformdirs.user_config_dir("pip", appauthor=False, roaming=True)
    if sys.platform == "darwin":
        app_support = platformdirs.user_data_dir("pip", appauthor=False)
        if os.path.isdir(app_support):
            return app_support
        return os.path.join(_home(env), ".config", "pip")
    xdg = env.get("XDG_CONFIG_HOME", "").strip()
    return os.path.join(xdg if os.path.isabs(xdg) else os.path.join(_home(env), ".config"), "pip")
