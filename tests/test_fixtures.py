"""The hermetic fixtures are real: installable wheels, buildable sdists, an honest index."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import struct
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile
from pyproject_hooks import BuildBackendHookCaller
from support import IsolatedEnv
from support.index_server import HTML, JSON, Index, IndexServer, negotiate
from support.universe import AUTH, NATIVE_TAGS, NATIVEONLY_TAGS, Universe
from support.wheels import (
    build_sdist,
    build_wheel,
    read_wheel_metadata,
    record_digest,
    sha256_file,
)

PIP_ACCEPT = (  # what pip sends
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=10) as http:
        yield http


def project_json(http: httpx.Client, server: IndexServer, project: str) -> dict[str, object]:
    response = http.get(server.project_url(project), headers={"Accept": JSON})
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON
    data: dict[str, object] = response.json()
    return data


def files_by_name(data: dict[str, object]) -> dict[str, dict[str, object]]:
    files = data["files"]
    assert isinstance(files, list)
    return {item["filename"]: item for item in files}


class Anchors(HTMLParser):
    """Anchors of a PEP 503 page: (text, attributes)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []
        self._open: dict[str, str | None] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open = dict(attrs)

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.found.append((data, self._open))
            self._open = None

    def by_text(self) -> dict[str, dict[str, str | None]]:
        return dict(self.found)


def project_html(
    http: httpx.Client, server: IndexServer, project: str
) -> tuple[str, dict[str, dict[str, str | None]]]:
    response = http.get(server.project_url(project), headers={"Accept": HTML})
    assert response.status_code == 200
    assert response.headers["content-type"] == HTML
    return response.text, Anchors(response.text).by_text()


# -- wheels and sdists -------------------------------------------------------------------------


def check_record(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (record_name,) = [n for n in names if n.endswith(".dist-info/RECORD")]
        rows = list(csv.reader(io.StringIO(archive.read(record_name).decode())))
        assert sorted(row[0] for row in rows) == sorted(names)
        for path, digest, size in rows:
            if path == record_name:
                assert (digest, size) == ("", "")
            else:
                data = archive.read(path)
                assert digest == record_digest(data)
                assert int(size) == len(data)


def test_every_universe_wheel_has_a_valid_record(universe: Universe) -> None:
    wheels = [f.path for f in universe.files if f.filename.endswith(".whl")]
    assert len(wheels) > 25
    for wheel in wheels:
        check_record(wheel)
        with WheelFile.open(wheel) as source:
            source.validate_record()


def test_wheel_file_name_metadata_and_wheel_file(tmp_path: Path) -> None:
    wheel = build_wheel(
        tmp_path,
        "My.Pkg",
        "1.0",
        requires_dist=["alpha>=1", 'gamma ; extra == "fast"'],
        requires_python=">=3.8",
        provides_extra=["fast"],
        tag="cp39-cp39-manylinux_2_17_x86_64.manylinux2014_x86_64",
    )
    assert wheel.name == "my_pkg-1.0-cp39-cp39-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    metadata = read_wheel_metadata(wheel).decode()
    assert "Metadata-Version: 2.1\nName: My.Pkg\nVersion: 1.0\n" in metadata
    assert "Requires-Python: >=3.8\n" in metadata
    assert "Provides-Extra: fast\n" in metadata
    assert 'Requires-Dist: gamma ; extra == "fast"\n' in metadata
    with zipfile.ZipFile(wheel) as archive:
        wheel_text = archive.read("my_pkg-1.0.dist-info/WHEEL").decode()
        assert archive.read("my_pkg/__init__.py") == b'__version__ = "1.0"\n'
    assert "Root-Is-Purelib: false\n" in wheel_text
    assert "Tag: cp39-cp39-manylinux_2_17_x86_64\n" in wheel_text
    assert "Tag: cp39-cp39-manylinux2014_x86_64\n" in wheel_text
    pure = build_wheel(tmp_path, "pure", "1.0")
    with zipfile.ZipFile(pure) as archive:
        assert "Root-Is-Purelib: true\n" in archive.read("pure-1.0.dist-info/WHEEL").decode()


def test_archives_are_reproducible(tmp_path: Path) -> None:
    def both(out: Path) -> tuple[str, str]:
        wheel = build_wheel(out, "same", "1.0", pad_bytes=1000, requires_dist=["alpha"])
        sdist = build_sdist(out, "same", "1.0", requires_dist=["alpha"])
        return sha256_file(wheel), sha256_file(sdist)

    assert both(tmp_path / "one") == both(tmp_path / "two")


def test_padded_wheel_keeps_metadata_far_from_the_end(universe: Universe) -> None:
    beta = universe.path("beta-1.0-py3-none-any.whl")
    size = beta.stat().st_size
    assert size > 300_000
    with zipfile.ZipFile(beta) as archive:
        info = archive.getinfo("beta-1.0.dist-info/METADATA")
    assert size - info.header_offset > 256 * 1024


def installer_scheme(root: Path) -> dict[str, str]:
    return {key: str(root / key) for key in ("purelib", "platlib", "headers", "scripts", "data")}


def test_wheels_install_with_pypa_installer(tmp_path: Path, universe: Universe) -> None:
    tool = build_wheel(
        tmp_path / "dist",
        "tool-kit",
        "0.3",
        modules={"tool_kit/__init__.py": "def main():\n    print('hello from tool')\n"},
        console_scripts={"toolkit": "tool_kit:main"},
        data_files={"scripts/raw-script": "#!python\nprint('raw')\n", "data/share/tk.txt": "x"},
    )
    scheme = installer_scheme(tmp_path / "env")
    destination = SchemeDictionaryDestination(scheme, sys.executable, "posix")
    native = universe.path("native-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
    for wheel in (tool, universe.path("withextras-1.0-py3-none-any.whl"), native):
        with WheelFile.open(wheel) as source:
            source.validate_record()
            install(source, destination, additional_metadata={})
    purelib = Path(scheme["purelib"])
    assert (purelib / "withextras" / "__init__.py").read_text() == '__version__ = "1.0"\n'
    assert (Path(scheme["platlib"]) / "native" / "__init__.py").exists()  # not purelib
    assert (Path(scheme["scripts"]) / "toolkit").exists()
    raw_script = Path(scheme["scripts"]) / "raw-script"
    assert raw_script.read_text().startswith("#!")
    assert os.access(raw_script, os.X_OK)
    assert (Path(scheme["data"]) / "share" / "tk.txt").read_text() == "x"
    output = subprocess.run(
        [sys.executable, "-c", "import tool_kit; tool_kit.main()"],
        env={**os.environ, "PYTHONPATH": str(purelib)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert output.stdout == "hello from tool\n"


def test_pip_installs_from_the_index_using_pep658_and_skipping_yanked(
    tmp_path: Path, index: IndexServer
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    target = venv / "bin" / "python"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(target), "install", "--quiet"),
            *("--disable-pip-version-check", "--index-url", index.url, "withextras[fast,docs]"),
        ],
        check=True,
        capture_output=True,
    )
    versions = subprocess.run(
        [
            str(target),
            "-c",
            "import alpha, beta, gamma as g; print(alpha.__version__, "
            "beta.__version__, g.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert versions == ["2.0", "1.0", "1.1"]  # gamma 2.0 is yanked
    assert index.count("/files/alpha-2.0-py3-none-any.whl.metadata") == 1
    assert index.count("/files/gamma-2.0") == 0
    assert index.count("/files/winonly") == 0
    assert all(record.accept == PIP_ACCEPT for record in index.requests("/simple/"))
    installed = {p.name for p in (venv / "lib").glob("python*/site-packages/*")}
    assert "winonly" not in installed
    assert "oldpy" not in installed


def test_sdist_builds_offline_with_python_build(
    tmp_path: Path, universe: Universe, isolated_env: IsolatedEnv
) -> None:
    sdist = universe.path("sdistonly-0.5.tar.gz")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull}
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "out"), str(sdist)],
        env=env,
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "out").glob("*.whl")
    assert wheel.name == "sdistonly-0.5-py3-none-any.whl"
    metadata = read_wheel_metadata(wheel).decode()
    assert "Name: sdistonly\nVersion: 0.5\n" in metadata
    assert "Requires-Dist: alpha>=1\n" in metadata
    with WheelFile.open(wheel) as source:
        source.validate_record()
    with zipfile.ZipFile(wheel) as archive:
        assert "sdistonly/__init__.py" in archive.namelist()


def test_sdist_backend_hooks(tmp_path: Path) -> None:
    sdist = build_sdist(tmp_path, "hooked", "2.1", requires_dist=["beta"], requires_python=">=3.9")
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
        archive.extractall(tmp_path / "src", filter="data")
    assert sorted(names) == [
        "hooked-2.1/PKG-INFO",
        "hooked-2.1/hooked/__init__.py",
        "hooked-2.1/nbenv_test_backend.py",
        "hooked-2.1/pyproject.toml",
    ]
    tree = tmp_path / "src" / "hooked-2.1"
    hooks = BuildBackendHookCaller(str(tree), "nbenv_test_backend", backend_path=["."])
    assert hooks.get_requires_for_build_wheel() == []
    (tmp_path / "meta").mkdir()
    dist_info = hooks.prepare_metadata_for_build_wheel(str(tmp_path / "meta"))
    assert dist_info == "hooked-2.1.dist-info"
    metadata = (tmp_path / "meta" / dist_info / "METADATA").read_text()
    assert "Requires-Python: >=3.9\n" in metadata
    assert "Requires-Dist: beta\n" in metadata
    (tmp_path / "sdists").mkdir()
    rebuilt = hooks.build_sdist(str(tmp_path / "sdists"))
    assert rebuilt == "hooked-2.1.tar.gz"
    with tarfile.open(tmp_path / "sdists" / rebuilt) as archive:
        assert sorted(archive.getnames()) == sorted(names)


# -- the index: pages --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (JSON, JSON),
        (HTML, HTML),
        ("text/html", "text/html"),
        (PIP_ACCEPT, JSON),
        (f"text/html, {JSON}", "text/html"),  # equal q: the client's order decides
        (f"{JSON}, text/html", JSON),
        (f"text/html;q=0.5, {JSON}", JSON),
        (f"{JSON};q=0, text/html", "text/html"),
        ("application/vnd.pypi.simple.latest+json", JSON),
        (None, "text/html"),
        ("*/*", "text/html"),
        ("application/json", "text/html"),  # nothing acceptable: PyPI's HTML fallback
    ],
)
def test_content_negotiation(
    client: httpx.Client, index: IndexServer, accept: str | None, content_type: str
) -> None:
    headers = {"Accept": accept} if accept is not None else {}
    if accept is None:
        client.headers.pop("accept", None)
    for url in (index.url, index.project_url("alpha")):
        response = client.get(url, headers=headers)
        assert response.status_code == 200
        assert response.headers["content-type"] == content_type
        if content_type == JSON:
            assert response.json()["meta"] == {"api-version": "1.1"}
        else:
            assert response.text.startswith("<!DOCTYPE html>")


def test_single_format_servers(client: httpx.Client, index: IndexServer) -> None:
    index.formats = {"html"}
    response = client.get(index.project_url("alpha"), headers={"Accept": JSON})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html"
    index.formats = {"json"}
    response = client.get(index.project_url("alpha"), headers={"Accept": "text/html"})
    assert response.status_code == 406
    response = client.get(index.project_url("alpha"), headers={"Accept": PIP_ACCEPT})
    assert response.headers["content-type"] == JSON
    assert negotiate(None, {"json"}) == ("json", JSON)


def test_root_lists_projects(client: httpx.Client, index: IndexServer) -> None:
    data = client.get(index.url, headers={"Accept": JSON}).json()
    names = [project["name"] for project in data["projects"]]
    assert "alpha" in names and "sdistonly" in names and "nativeonly" in names
    assert "private" not in names and "extraonly" not in names
    anchors = Anchors(client.get(index.url, headers={"Accept": HTML}).text).by_text()
    assert anchors["alpha"]["href"] == "/simple/alpha/"
    assert set(anchors) == set(names)


def test_project_page_json(client: httpx.Client, index: IndexServer, universe: Universe) -> None:
    data = project_json(client, index, "gamma")
    assert data["name"] == "gamma"
    assert data["versions"] == ["1.0", "1.1", "2.0"]
    files = files_by_name(data)
    assert list(files) == [
        "gamma-1.0-py3-none-any.whl",
        "gamma-1.1-py3-none-any.whl",
        "gamma-2.0-py3-none-any.whl",
    ]
    first = files["gamma-1.0-py3-none-any.whl"]
    path = universe.path("gamma-1.0-py3-none-any.whl")
    assert first["url"] == index.file_url(path.name)
    assert first["hashes"] == {"sha256": sha256_file(path)}
    assert first["size"] == path.stat().st_size
    assert first["requires-python"] is None
    assert isinstance(first["upload-time"], str) and first["upload-time"].endswith("Z")
    assert [f["yanked"] for f in files.values()] == [False, False, "broken build"]


def test_pep658_metadata_only_where_configured(
    client: httpx.Client, index: IndexServer, universe: Universe
) -> None:
    for project in ("alpha", "beta", "gamma", "sdistonly", "native"):
        files = files_by_name(project_json(client, index, project))
        _, anchors = project_html(client, index, project)
        for filename, item in files.items():
            entry = universe.entry(filename)
            url = str(item["url"]) + ".metadata"
            response = client.get(url)
            if entry.pep658:
                metadata = read_wheel_metadata(entry.path)
                digest = hashlib.sha256(metadata).hexdigest()
                assert item["core-metadata"] == {"sha256": digest}
                assert anchors[filename]["data-core-metadata"] == f"sha256={digest}"
                assert anchors[filename]["data-dist-info-metadata"] == f"sha256={digest}"
                assert response.status_code == 200
                assert response.content == metadata
            else:
                assert "core-metadata" not in item
                assert "data-dist-info-metadata" not in item
                assert "data-core-metadata" not in anchors[filename]
                assert response.status_code == 404
    assert universe.entry("alpha-2.0-py3-none-any.whl").pep658
    assert universe.entry("gamma-1.1-py3-none-any.whl").pep658
    assert not universe.entry("beta-1.0-py3-none-any.whl").pep658


def test_project_page_html(client: httpx.Client, index: IndexServer, universe: Universe) -> None:
    text, anchors = project_html(client, index, "newpy")
    assert 'data-requires-python="&gt;=3.12"' in text
    assert anchors["newpy-2.0-py3-none-any.whl"]["data-requires-python"] == ">=3.12"
    href = anchors["newpy-1.0-py3-none-any.whl"]["href"]
    path = universe.path("newpy-1.0-py3-none-any.whl")
    assert href == f"{index.file_url(path.name)}#sha256={sha256_file(path)}"
    assert "data-yanked" not in anchors["newpy-1.0-py3-none-any.whl"]
    _, gamma = project_html(client, index, "gamma")
    assert gamma["gamma-2.0-py3-none-any.whl"]["data-yanked"] == "broken build"
    assert "data-yanked" not in gamma["gamma-1.1-py3-none-any.whl"]
    newpy = files_by_name(project_json(client, index, "newpy"))
    assert newpy["newpy-2.0-py3-none-any.whl"]["requires-python"] == ">=3.12"


def test_yanked_without_reason(
    tmp_path: Path, client: httpx.Client, make_index: Callable[..., IndexServer]
) -> None:
    server = make_index()
    server.add(build_wheel(tmp_path, "gone", "1.0"), yanked=True)
    assert (
        files_by_name(project_json(client, server, "gone"))["gone-1.0-py3-none-any.whl"]["yanked"]
        is True
    )
    _, anchors = project_html(client, server, "gone")
    assert anchors["gone-1.0-py3-none-any.whl"]["data-yanked"] == ""


def test_universe_shape(
    client: httpx.Client, index: IndexServer, extra_index: IndexServer, universe: Universe
) -> None:
    native = files_by_name(project_json(client, index, "native"))
    assert sorted(native) == sorted(
        ["native-0.9-py3-none-any.whl"] + [f"native-1.0-{tag}.whl" for tag in NATIVE_TAGS]
    )
    nativeonly = files_by_name(project_json(client, index, "nativeonly"))
    assert sorted(nativeonly) == sorted(f"nativeonly-1.0-{tag}.whl" for tag in NATIVEONLY_TAGS)
    assert project_json(client, index, "prerel")["versions"] == ["1.0", "2.0b1"]
    assert project_json(client, index, "onlypre")["versions"] == ["1.0a1"]
    sdist_files = files_by_name(project_json(client, index, "sdistonly"))
    assert list(sdist_files) == ["sdistonly-0.5.tar.gz"]
    assert project_json(client, index, "alpha")["versions"] == ["1.0", "2.0"]
    assert project_json(client, extra_index, "alpha")["versions"] == ["3.0"]
    assert project_json(client, extra_index, "extraonly")["versions"] == ["1.0"]
    assert client.get(index.project_url("extraonly")).status_code == 404
    metadata = read_wheel_metadata(universe.path("withextras-1.0-py3-none-any.whl"))
    assert b'Requires-Dist: beta ; extra == "docs" and python_version >= "3.10"' in metadata


def test_unknown_project_and_file_are_404(client: httpx.Client, index: IndexServer) -> None:
    assert client.get(index.project_url("no-such-thing")).status_code == 404
    assert client.get(index.file_url("nope-1.0-py3-none-any.whl")).status_code == 404
    assert client.get(index.base_url + "/elsewhere").status_code == 404


@pytest.mark.parametrize("spelling", ["Alpha/", "ALPHA/", "alpha", "Alpha"])
def test_non_normalized_names_redirect(
    client: httpx.Client, index: IndexServer, spelling: str
) -> None:
    response = client.get(index.url + spelling)
    assert response.status_code == 301
    assert response.headers["location"] == "/simple/alpha/"
    followed = client.get(index.url + spelling, headers={"Accept": JSON}, follow_redirects=True)
    assert followed.status_code == 200
    assert followed.json()["name"] == "alpha"


def test_relative_urls_join_to_the_file(client: httpx.Client, index: IndexServer) -> None:
    index.relative_urls = True
    page_url = index.project_url("alpha")
    item = files_by_name(project_json(client, index, "alpha"))["alpha-1.0-py3-none-any.whl"]
    assert item["url"] == "../../files/alpha-1.0-py3-none-any.whl"
    joined = urljoin(page_url, str(item["url"]))
    assert joined == index.file_url("alpha-1.0-py3-none-any.whl")
    assert client.get(joined).status_code == 200
    _, anchors = project_html(client, index, "alpha")
    href = anchors["alpha-1.0-py3-none-any.whl"]["href"]
    assert href is not None and href.startswith("../../files/alpha-1.0-py3-none-any.whl#sha256=")


# -- the index: files and ranges ---------------------------------------------------------------


BETA = "beta-1.0-py3-none-any.whl"


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-", 1000, None),
        ("bytes=-65536", -65536, None),
        ("bytes=5-5", 5, 5),
        ("bytes=100-999999999", 100, None),  # clamped to the end
        ("bytes=-999999999", 0, None),  # suffix longer than the file: all of it
    ],
)
def test_range_requests_return_exact_bytes(
    client: httpx.Client,
    index: IndexServer,
    universe: Universe,
    header: str,
    first: int,
    last: int | None,
) -> None:
    data = universe.path(BETA).read_bytes()
    size = len(data)
    start = first if first >= 0 else size + first
    end = last if last is not None else size - 1
    response = client.get(index.file_url(BETA), headers={"Range": header})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {start}-{end}/{size}"
    assert response.headers["accept-ranges"] == "bytes"
    assert response.content == data[start : end + 1]
    assert index.log[-1].range == header


def test_range_edge_cases(client: httpx.Client, index: IndexServer, universe: Universe) -> None:
    data = universe.path(BETA).read_bytes()
    url = index.file_url(BETA)
    for unsatisfiable in (f"bytes={len(data)}-", "bytes=-0"):
        response = client.get(url, headers={"Range": unsatisfiable})
        assert response.status_code == 416
        assert response.headers["content-range"] == f"bytes */{len(data)}"
    for ignored in ("bytes=0-1,5-6", "bytes=9-3", "items=0-1"):
        response = client.get(url, headers={"Range": ignored})
        assert response.status_code == 200
        assert response.content == data
    head = client.head(url)
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(data))
    assert head.headers["accept-ranges"] == "bytes"
    assert head.content == b""
    head_range = client.head(url, headers={"Range": "bytes=-10"})
    assert head_range.status_code == 206
    assert head_range.headers["content-length"] == "10"
    assert [r.method for r in index.log[-2:]] == ["HEAD", "HEAD"]


def test_no_range_mode_sends_whole_file(
    client: httpx.Client, index: IndexServer, universe: Universe
) -> None:
    index.no_range = True
    response = client.get(index.file_url(BETA), headers={"Range": "bytes=0-9"})
    assert response.status_code == 200
    assert "accept-ranges" not in response.headers
    assert response.content == universe.path(BETA).read_bytes()


def test_metadata_of_a_padded_wheel_via_ranges(
    client: httpx.Client, index: IndexServer, universe: Universe
) -> None:
    # What a lazy-wheel reader does: tail for the central directory, then the member.
    url = index.file_url(BETA)
    size = int(client.head(url).headers["content-length"])
    tail = client.get(url, headers={"Range": "bytes=-65536"}).content
    assert len(tail) == 65536 and size > 65536
    with zipfile.ZipFile(universe.path(BETA)) as archive:
        info = archive.getinfo("beta-1.0.dist-info/METADATA")
        expected = archive.read(info)
    assert info.header_offset < size - 65536  # not inside the tail that was read
    # Local header: 30 fixed bytes, then the name and extra field, then the deflated data.
    header = client.get(
        url, headers={"Range": f"bytes={info.header_offset}-{info.header_offset + 29}"}
    ).content
    assert header[:4] == b"PK\x03\x04"
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    start = info.header_offset + 30 + name_length + extra_length
    end = start + info.compress_size - 1
    deflated = client.get(url, headers={"Range": f"bytes={start}-{end}"}).content
    assert info.compress_type == zipfile.ZIP_DEFLATED
    assert zlib.decompress(deflated, -15) == expected
    assert index.count("/files/beta") == 4


# -- the index: auth, failures, latency, log ---------------------------------------------------


def test_basic_auth(client: httpx.Client, auth_index: IndexServer, index: IndexServer) -> None:
    wheel_url = auth_index.file_url("private-1.0-py3-none-any.whl")
    for url in (auth_index.url, auth_index.project_url("private"), wheel_url):
        response = client.get(url)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Basic ")
        assert client.get(url, auth=("alice", "wrong")).status_code == 401
        assert client.get(url, auth=AUTH).status_code == 200
    assert [r.authorization for r in auth_index.log[:3]] == [False, True, True]
    data = client.get(auth_index.project_url("private"), auth=AUTH, headers={"Accept": JSON})
    assert list(files_by_name(data.json())) == ["private-1.0-py3-none-any.whl"]
    assert client.get(index.project_url("private")).status_code == 404
    assert auth_index.url_with_auth().startswith("http://alice:s3cret@127.0.0.1:")


def test_injected_failures_then_success(client: httpx.Client, index: IndexServer) -> None:
    index.fail("/simple/alpha/", 503, 429)
    index.fail_next["/files/"] = [500]
    first = client.get(index.project_url("alpha"))
    assert (first.status_code, first.headers["retry-after"]) == (503, "0")
    assert client.get(index.project_url("alpha")).status_code == 429
    assert client.get(index.project_url("alpha")).status_code == 200
    assert client.get(index.project_url("gamma")).status_code == 200
    assert client.get(index.file_url("alpha-1.0-py3-none-any.whl")).status_code == 500
    assert client.get(index.file_url("alpha-1.0-py3-none-any.whl")).status_code == 200
    assert [r.status for r in index.log] == [503, 429, 200, 200, 500, 200]
    assert index.fail_next == {}


def test_latency_is_per_request_and_requests_run_in_parallel(index: IndexServer) -> None:
    index.latency = 0.3
    statuses: list[int] = []

    def fetch(project: str) -> None:
        with httpx.Client(trust_env=False) as http:
            statuses.append(http.get(index.project_url(project)).status_code)

    threads = [threading.Thread(target=fetch, args=(p,)) for p in ("alpha", "beta", "gamma")]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert statuses == [200, 200, 200]
    assert 0.3 <= elapsed < 0.8


def test_log_and_reset(tmp_path: Path, client: httpx.Client, index: IndexServer) -> None:
    client.get(index.project_url("alpha"))
    client.get(index.project_url("gamma"))
    assert index.count("/simple/") == 2
    assert index.count("/simple/alpha/") == 1
    index.clear_log()
    assert index.log == []
    index.add(build_wheel(tmp_path, "newcomer", "1.0"))
    index.formats = {"json"}
    index.latency = 0.01
    index.no_range = True
    index.fail("/simple/", 503)
    index.reset()
    assert (index.formats, index.latency, index.no_range, index.fail_next) == (
        {"json", "html"},
        0.0,
        False,
        {},
    )
    assert client.get(index.project_url("newcomer")).status_code == 404
    assert index.log[0].path == "/simple/newcomer/"


def test_servers_share_nothing(tmp_path: Path, universe: Universe) -> None:
    with universe.serve() as one, IndexServer(Index()) as two:
        one.add(build_wheel(tmp_path, "onlyone", "1.0"))
        assert one.index.file("onlyone-1.0-py3-none-any.whl") is not None
        assert two.index.file("onlyone-1.0-py3-none-any.whl") is None
        assert universe.make_index().file("onlyone-1.0-py3-none-any.whl") is None
        assert one.port != two.port


def test_extra_index_is_separate(client: httpx.Client, extra_index: IndexServer) -> None:
    root = client.get(extra_index.url, headers={"Accept": JSON}).json()
    assert sorted(p["name"] for p in root["projects"]) == ["alpha", "extraonly"]
    assert extra_index.url.endswith("/simple/")


# -- isolation ---------------------------------------------------------------------------------


def test_isolated_env(isolated_env: IsolatedEnv, tmp_path: Path) -> None:
    assert Path.home() == isolated_env.home
    assert isolated_env.home.is_relative_to(tmp_path)
    for name in ("NBENV_HOME", "JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR"):
        assert Path(os.environ[name]).is_relative_to(tmp_path)
        assert Path(os.environ[name]).is_dir()
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        assert Path(os.environ[name]).is_relative_to(tmp_path)
    assert os.environ["PIP_CONFIG_FILE"] == os.devnull
    leftovers = [n for n in os.environ if n.startswith(("PIP_", "UV_")) or n == "NETRC"]
    assert leftovers == ["PIP_CONFIG_FILE"]
    assert os.environ["NBENV_HOME"] == str(isolated_env.nbenv_home)
