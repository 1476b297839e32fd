"""pip's index settings, read from config files and variables built in temp dirs only."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from nbenv import settings as settings_module
from nbenv.errors import NetworkSettingError, PipConfigError
from nbenv.net.auth import strip_userinfo
from nbenv.settings import (
    DEFAULT_INDEX_URL,
    IndexSettings,
    TlsFiles,
    effective_indexes,
    normalize_location,
    pip_config_files,
    read_pip_settings,
)

pytestmark = pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="Unix file layout")


class Machine:
    """A fake machine: its home, XDG dirs, /etc and sys.prefix all under tmp_path."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.home = root / "home"
        self.etc = root / "etc"
        self.xdg_dirs = root / "xdg"
        self.prefix = root / "prefix"
        for d in (self.home, self.etc, self.xdg_dirs, self.prefix):
            d.mkdir()
        monkeypatch.setattr(settings_module, "_ETC_DIR", str(self.etc))
        monkeypatch.setattr(sys, "prefix", str(self.prefix))
        for key in list(os.environ):
            if key.startswith(("PIP_", "XDG_")):
                monkeypatch.delenv(key)
        monkeypatch.setenv("HOME", str(self.home))
        monkeypatch.setenv("XDG_CONFIG_DIRS", str(self.xdg_dirs))
        self.env: dict[str, str] = {"HOME": str(self.home), "XDG_CONFIG_DIRS": str(self.xdg_dirs)}

    @property
    def files(self) -> dict[str, Path]:
        return {
            "xdg": self.xdg_dirs / "pip" / "pip.conf",
            "etc": self.etc / "pip.conf",
            "legacy": self.home / ".pip" / "pip.conf",
            "user": self.home / ".config" / "pip" / "pip.conf",
            "site": self.prefix / "pip.conf",
        }

    def write(self, where: str | Path, text: str) -> Path:
        path = self.files[where] if isinstance(where, str) else where
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def read(self, **extra: str) -> IndexSettings:
        return read_pip_settings({**self.env, **extra})


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Machine:
    return Machine(tmp_path, monkeypatch)


def test_nothing_configured_means_pypi(machine: Machine) -> None:
    assert machine.read() == IndexSettings()
    assert machine.read().index_url == DEFAULT_INDEX_URL == "https://pypi.org/simple"


def test_files_are_found_where_pip_looks(machine: Machine) -> None:
    names = pip_config_files(machine.env)
    assert names == [str(p) for p in machine.files.values()]
    moved = pip_config_files({**machine.env, "XDG_CONFIG_HOME": str(machine.root / "cfg")})
    assert str(machine.root / "cfg" / "pip" / "pip.conf") in moved


def test_each_later_file_overrides_the_one_before(machine: Machine) -> None:
    env_file = machine.write(machine.root / "env.conf", "")
    layers = ["xdg", "etc", "legacy", "user", "site"]
    for n, where in enumerate(layers):
        machine.write(where, f"[global]\nindex-url = https://{where}.example/simple\n")
        expected = f"https://{layers[n]}.example/simple"
        assert machine.read(PIP_CONFIG_FILE=str(machine.root / "absent.conf")).index_url == expected
    machine.write(env_file, "[global]\nindex-url = https://envfile.example/simple\n")
    assert machine.read(PIP_CONFIG_FILE=str(env_file)).index_url == "https://envfile.example/simple"
    from_var = machine.read(PIP_CONFIG_FILE=str(env_file), PIP_INDEX_URL="https://var.example/s")
    assert from_var.index_url == "https://var.example/s"
    assert dict(from_var.sources)["index-url"] == "PIP_INDEX_URL"


def test_an_existing_pip_config_file_hides_the_user_files(machine: Machine) -> None:
    machine.write("user", "[global]\nextra-index-url = https://user.example/simple\n")
    env_file = machine.write(
        machine.root / "env.conf", "[global]\nfind-links = https://f.example/\n"
    )
    read = machine.read(PIP_CONFIG_FILE=str(env_file))
    assert read.extra_index_urls == ()
    assert read.find_links == ("https://f.example/",)
    # a PIP_CONFIG_FILE that does not exist does not hide them
    missing = machine.read(PIP_CONFIG_FILE=str(machine.root / "nope.conf"))
    assert missing.extra_index_urls == ("https://user.example/simple",)


def test_devnull_config_file_loads_no_file_but_variables_still_count(machine: Machine) -> None:
    for where in machine.files:
        machine.write(where, "[global]\nindex-url = https://file.example/simple\n")
    assert machine.read(PIP_CONFIG_FILE=os.devnull).index_url == DEFAULT_INDEX_URL
    assert pip_config_files({**machine.env, "PIP_CONFIG_FILE": os.devnull}) == []
    read = machine.read(PIP_CONFIG_FILE=os.devnull, PIP_EXTRA_INDEX_URL="https://v.example/s")
    assert read.extra_index_urls == ("https://v.example/s",)


def test_install_section_beats_global_even_from_an_earlier_file(machine: Machine) -> None:
    # pip orders by section first, file second: [install] in /etc beats [global] in the user file
    machine.write("etc", "[install]\nindex-url = https://install.example/simple\n")
    machine.write("user", "[global]\nindex-url = https://global.example/simple\n")
    assert machine.read().index_url == "https://install.example/simple"
    # other commands' sections are not ours
    machine.write("site", "[download]\nindex-url = https://download.example/simple\n")
    assert machine.read().index_url == "https://install.example/simple"


def test_lists_split_on_whitespace_and_replace_rather_than_extend(machine: Machine) -> None:
    machine.write(
        "user",
        "[global]\nextra-index-url =\n    https://a.example/simple\n"
        "    https://b.example/simple   https://c.example/simple\n",
    )
    read = machine.read()
    assert read.extra_index_urls == (
        "https://a.example/simple",
        "https://b.example/simple",
        "https://c.example/simple",
    )
    replaced = machine.read(PIP_EXTRA_INDEX_URL="https://d.example/simple")
    assert replaced.extra_index_urls == ("https://d.example/simple",)


def test_an_empty_value_unsets(machine: Machine) -> None:
    machine.write("user", "[global]\nindex-url = https://user.example/simple\n")
    machine.write("site", "[global]\nindex-url =\n")
    assert machine.read().index_url == DEFAULT_INDEX_URL
    # an empty variable is ignored like pip ignores it
    machine.write("site", "")
    assert machine.read(PIP_INDEX_URL="").index_url == "https://user.example/simple"


def test_key_spellings_pip_accepts(machine: Machine) -> None:
    machine.write("user", "[global]\nIndex_URL = https://a.example/simple\n--find-links = /srv/w\n")
    read = machine.read()
    assert read.index_url == "https://a.example/simple"
    assert read.find_links == ("file:///srv/w",)
    assert (
        machine.read(PIP_PYPI_URL="https://alias.example/s").index_url == "https://alias.example/s"
    )


def test_plain_paths_become_file_urls(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(machine.root)
    machine.write(
        "user",
        "[global]\nfind-links = ~/wheels ./local /abs/dir file:///already/url\n"
        "index-url = ~/mirror/simple\n",
    )
    read = machine.read()
    assert read.find_links == (
        (machine.home / "wheels").as_uri(),
        (machine.root / "local").as_uri(),
        "file:///abs/dir",
        "file:///already/url",
    )
    assert read.index_url == (machine.home / "mirror" / "simple").as_uri()
    assert normalize_location("https://x.example/s") == "https://x.example/s"


def test_no_index(machine: Machine) -> None:
    machine.write("user", "[global]\nextra-index-url = https://extra.example/simple\n")
    read = machine.read(PIP_NO_INDEX="yes")
    assert read.no_index
    assert effective_indexes(None, [], read) == ()
    assert effective_indexes("https://mine.example/s", ["https://more.example/s"], read) == (
        "https://mine.example/s",
        "https://more.example/s",
    )
    assert not machine.read(PIP_NO_INDEX="off").no_index
    with pytest.raises(PipConfigError, match="PIP_NO_INDEX") as err:
        machine.read(PIP_NO_INDEX="perhaps")
    assert "true/false" in str(err.value)


def test_a_broken_file_names_itself(machine: Machine) -> None:
    broken = machine.write("user", "index-url = https://no-section.example/\n")
    with pytest.raises(PipConfigError) as err:
        machine.read()
    assert err.value.source == str(broken)
    assert str(broken) in str(err.value)


def test_reads_os_environ_by_default(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    machine.write("user", "[install]\nfind-links = https://links.example/\n")
    monkeypatch.setenv("PIP_INDEX_URL", "https://from-env.example/simple")
    read = read_pip_settings()
    assert read.index_url == "https://from-env.example/simple"
    assert read.find_links == ("https://links.example/",)


def test_effective_indexes_combine_like_pip_install() -> None:
    configured = IndexSettings(
        index_url="https://corp.example/simple",
        extra_index_urls=("https://extra.example/simple", "https://pypi.org/simple"),
    )
    assert effective_indexes(None, [], configured) == (
        "https://corp.example/simple",
        "https://extra.example/simple",
        "https://pypi.org/simple",
    )
    assert effective_indexes(
        "https://mine.example/simple",
        ["https://pypi.org/simple/", "https://new.example/simple"],
        configured,
    ) == (
        "https://mine.example/simple",
        "https://extra.example/simple",
        "https://pypi.org/simple",
        "https://new.example/simple",
    )


def test_duplicates_keep_the_spelling_with_credentials() -> None:
    configured = IndexSettings(index_url="https://idx.example/simple")
    assert effective_indexes(None, ["https://u:tok@idx.example/simple/"], configured) == (
        "https://u:tok@idx.example/simple/",
    )
    configured = IndexSettings(index_url="https://u:tok@idx.example/simple")
    assert effective_indexes(None, ["https://idx.example/simple"], configured) == (
        "https://u:tok@idx.example/simple",
    )


def test_credentials_never_shown(machine: Machine) -> None:
    assert strip_userinfo("https://user:s3cret@h.example:8443/simple?x=1") == (
        "https://h.example:8443/simple?x=1"
    )
    assert strip_userinfo("https://TOKEN@h.example/simple") == "https://h.example/simple"
    assert strip_userinfo("file:///srv/simple") == "file:///srv/simple"
    read = machine.read(PIP_INDEX_URL="https://user:s3cret@h.example/simple")
    assert read.index_url == "https://user:s3cret@h.example/simple"  # the client needs them
    assert "s3cret" not in read.summary()
    assert "PIP_INDEX_URL" in read.summary()


# --- the same answers as pip itself ---------------------------------------------------------

Scenario = Callable[[Machine], dict[str, str]]


def _layered(m: Machine) -> dict[str, str]:
    m.write("xdg", "[install]\nextra-index-url = https://xdg.example/s\n")
    m.write(
        "user",
        "[global]\nextra-index-url = https://user.example/s\nindex-url = https://u.example/s\n",
    )
    m.write("site", "[global]\nfind-links = https://links.example/ https://more.example/\n")
    return {"PIP_FIND_LINKS": "https://env-links.example/"}


def _env_file(m: Machine) -> dict[str, str]:
    m.write("user", "[global]\nindex-url = https://hidden.example/s\n")
    m.write("etc", "[global]\nno-index = true\n")
    f = m.write(m.root / "custom.conf", "[install]\nextra-index-url = https://custom.example/s\n")
    return {"PIP_CONFIG_FILE": str(f), "PIP_NO_INDEX": "false"}


def _devnull(m: Machine) -> dict[str, str]:
    m.write("user", "[global]\nindex-url = https://hidden.example/s\n")
    return {
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_EXTRA_INDEX_URL": "https://a.example/s https://b.example/s",
    }


def _unset(m: Machine) -> dict[str, str]:
    m.write("etc", "[global]\nindex-url = https://etc.example/s\nno-index = yes\n")
    m.write("legacy", "[install]\nindex-url = https://legacy.example/s\n")
    m.write("user", "[install]\nindex-url =\n")
    return {"XDG_CONFIG_HOME": str(m.root / "nowhere")}


def _blank(m: Machine) -> dict[str, str]:
    m.write("user", "[global]\nextra-index-url = https://user.example/s\n")
    return {"PIP_EXTRA_INDEX_URL": " "}  # spaces are a value: an empty list, not "unset"


@pytest.mark.parametrize("scenario", [_layered, _env_file, _devnull, _unset, _blank])
def test_agrees_with_pip(
    scenario: Scenario, machine: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pip")
    from pip._internal.commands import create_command
    from pip._internal.utils import appdirs as pip_appdirs

    real_site_dirs = pip_appdirs.site_config_dirs
    monkeypatch.setattr(
        pip_appdirs,
        "site_config_dirs",
        lambda app: [str(machine.etc) if d == "/etc" else d for d in real_site_dirs(app)],
    )
    extra = scenario(machine)
    for key, value in extra.items():
        monkeypatch.setenv(key, value)
    options, _ = create_command("install").parse_args([])
    ours = read_pip_settings()
    assert ours == machine.read(**extra)
    assert ours.index_url == normalize_location(options.index_url)
    assert ours.extra_index_urls == tuple(map(normalize_location, options.extra_index_urls))
    assert ours.find_links == tuple(map(normalize_location, options.find_links))
    assert ours.no_index == options.no_index


# -- network options: pip's timeout and retries, NBENV_HTTP_* winning ----------------------


def test_timeout_and_retries_default_to_30_s_and_3(machine: Machine) -> None:
    found = machine.read()
    assert (found.timeout, found.retries) == (30.0, 3)


def test_timeout_and_retries_follow_pips_order(machine: Machine) -> None:
    machine.write("user", "[global]\ntimeout = 60\nretries = 5\n[install]\nretries = 7\n")
    found = machine.read()
    assert (found.timeout, found.retries) == (60.0, 7)  # [install] beats [global]
    found = machine.read(PIP_TIMEOUT="2.5", PIP_RETRIES="0")
    assert (found.timeout, found.retries) == (2.5, 0)  # variables beat files
    found = machine.read(PIP_TIMEOUT="2.5", NBENV_HTTP_TIMEOUT="9", NBENV_HTTP_RETRIES="1")
    assert (found.timeout, found.retries) == (9.0, 1)  # nbenv's own beat pip's
    assert machine.read(NBENV_HTTP_TIMEOUT=" ").timeout == 60.0  # blank: unset
    assert "timeout: 60 s  [" in machine.read().summary()
    assert "retries: 7  [" in machine.read().summary()


def test_cert_and_client_cert_are_read_as_pip_reads_them(
    machine: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert machine.read().tls == TlsFiles()
    path = machine.write("user", "[global]\ncert = ~/corp-ca.pem\nclient-cert = me.pem\n")
    monkeypatch.chdir(machine.root)  # pip opens a relative path from the current directory
    found = machine.read().tls
    assert found == TlsFiles(
        cert=str(machine.home / "corp-ca.pem"),
        client_cert=str(machine.root / "me.pem"),
        cert_source=str(path),
        client_cert_source=str(path),
    )
    from_variable = machine.read(PIP_CERT="/etc/ca-dir").tls
    assert (from_variable.cert, from_variable.cert_source) == ("/etc/ca-dir", "PIP_CERT")
    elsewhere = machine.read(PIP_CERT="~/ca.pem", HOME="/elsewhere").tls
    assert elsewhere.cert == "/elsewhere/ca.pem"  # the home of the environment read
    summary = machine.read().summary()
    assert f"cert: {machine.home / 'corp-ca.pem'}  [{path}]" in summary
    assert f"client-cert: {machine.root / 'me.pem'}  [{path}]" in summary


@pytest.mark.parametrize(
    ("key", "value"),
    [("timeout", "soon"), ("timeout", "0"), ("timeout", "-3"), ("timeout", "nan"),
     ("timeout", "inf"), ("retries", "-1"), ("retries", "1.5"), ("retries", "lots")],
)  # fmt: skip
def test_a_bad_timeout_or_retries_names_where_it_came_from(
    machine: Machine, key: str, value: str
) -> None:
    path = machine.write("user", f"[global]\n{key} = {value}\n")
    with pytest.raises(NetworkSettingError) as info:
        machine.read()
    assert info.value.source == str(path) and info.value.option == key
    assert repr(value) in str(info.value)
    variable = f"NBENV_HTTP_{key.upper()}"
    with pytest.raises(NetworkSettingError) as info:
        machine.read(**{variable: value})
    assert info.value.source == variable
