"""The HTTP client itself: its connection pool prepared ahead of the first request, and
HTTPS trusting what pip is told to trust (`cert`, `client-cert`)."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from support import IsolatedEnv, run_python
from support.index_server import IndexServer
from support.universe import MAIN, Universe
from support.wheels import build_wheel, sha256_file

import nbenv.net.http as http_module
from nbenv.errors import IndexAccessError, NetworkSettingError
from nbenv.fetch import Artifact, Fetcher
from nbenv.net.http import HttpClient
from nbenv.settings import TlsFiles, read_pip_settings

BETA = "beta-1.0-py3-none-any.whl"


def _wait_for_prepare() -> None:
    for thread in threading.enumerate():
        if thread.name == "nbenv-http-prepare":
            thread.join(timeout=30)


def test_prepare_builds_the_pool_on_a_thread_and_the_first_request_uses_it(
    index: IndexServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str] = []
    original = HttpClient._new_client

    def counting(self: HttpClient) -> Any:
        built.append(threading.current_thread().name)
        return original(self)

    monkeypatch.setattr(HttpClient, "_new_client", counting)
    with HttpClient() as client:
        client.prepare()
        client.prepare()  # a second call starts nothing more
        _wait_for_prepare()
        assert built == ["nbenv-http-prepare"]
        assert client.get(index.project_url("alpha")).status == 200
        assert built == ["nbenv-http-prepare"]  # the request took the prepared pool


def test_a_client_closed_before_its_prepare_ran_builds_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held: list[Callable[[], None]] = []

    class HeldThread:  # the prepare thread, run by hand after close()
        def __init__(self, target: Callable[[], None], name: str, daemon: bool) -> None:
            self.target = target

        def start(self) -> None:
            held.append(self.target)

    client = HttpClient()
    monkeypatch.setattr(http_module, "threading", SimpleNamespace(Thread=HeldThread))
    client.prepare()
    client.close()
    held[0]()
    assert client._httpx_client is None  # nothing left open behind the closed client


# -- TLS: pip's `cert` and `client-cert`, and trust stores that cannot be loaded --------------


@dataclass
class Tls:
    ca: trustme.CA
    ca_file: Path  # the test CA's certificate: what a user puts in pip's `cert`
    client_file: Path  # key and certificate the CA issued to a client (`client-cert`)

    def server(self, *, client_cert_required: bool = False) -> ssl.SSLContext:
        """The index's side: a certificate for 127.0.0.1 from the CA."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(context)
        if client_cert_required:
            self.ca.configure_trust(context)
            context.verify_mode = ssl.CERT_REQUIRED
        return context


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    ca = trustme.CA()
    root = tmp_path_factory.mktemp("tls")
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    ca.issue_cert("client@example.org").private_key_and_cert_chain_pem.write_to_path(
        str(root / "client.pem")
    )
    return Tls(ca, root / "ca.pem", root / "client.pem")


@pytest.fixture(scope="module")
def https_index(tls: Tls, universe: Universe) -> Iterator[IndexServer]:
    with universe.serve(MAIN, tls=tls.server()) as server:
        yield server


def pip_config(isolated_env: IsolatedEnv, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    """A pip configuration file, as PIP_CONFIG_FILE names one."""
    path = isolated_env.root / "pip.conf"
    path.write_text(text)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(path))
    return path


def test_the_ca_in_pips_cert_setting_is_trusted(
    tls: Tls, https_index: IndexServer, isolated_env: IsolatedEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    pip_config(isolated_env, monkeypatch, f"[global]\ncert = {tls.ca_file}\n")
    settings = read_pip_settings()
    assert settings.tls.cert == str(tls.ca_file)
    with HttpClient(tls=settings.tls, retries=0) as client:
        assert client.get(https_index.project_url("alpha")).status == 200
    with HttpClient(retries=0) as default, pytest.raises(IndexAccessError) as refused:
        default.get(https_index.project_url("alpha"))  # the default trust does not know it
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)


def test_pips_client_cert_is_presented_to_a_server_that_asks_for_one(
    tls: Tls, universe: Universe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_CERT", str(tls.ca_file))
    with universe.serve(MAIN, tls=tls.server(client_cert_required=True)) as server:
        without = read_pip_settings().tls
        with HttpClient(tls=without, retries=0) as client, pytest.raises(IndexAccessError):
            client.get(server.project_url("alpha"))
        monkeypatch.setenv("PIP_CLIENT_CERT", str(tls.client_file))
        settings = read_pip_settings()
        assert (settings.tls.client_cert, settings.tls.client_cert_source) == (
            str(tls.client_file),
            "PIP_CLIENT_CERT",
        )
        with HttpClient(tls=settings.tls, retries=0) as client:
            assert client.get(server.project_url("alpha")).status == 200


def test_the_helper_process_downloads_with_pips_tls_settings(
    tls: Tls,
    universe: Universe,
    https_index: IndexServer,
    isolated_env: IsolatedEnv,
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pip_config(isolated_env, monkeypatch, f"[global]\ncert = {tls.ca_file}\n")
    settings = read_pip_settings()
    path = universe.path(BETA)
    wanted = Artifact(path.name, https_index.file_url(path.name), sha256_file(path),
                      path.stat().st_size)  # fmt: skip
    with (
        HttpClient(tls=settings.tls, retries=0) as client,
        Fetcher(client, cache, helper_process=True) as fetcher,
    ):
        got = fetcher.fetch([wanted])[wanted.sha256]
        assert fetcher._helper is not None  # it was the helper that downloaded
    assert sha256_file(got) == wanted.sha256


def test_https_reads_gather_the_records_that_have_arrived(
    tls: Tls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nbenv.net.tls_socket import GatheringSSLSocket

    wheel = build_wheel(tmp_path / "wheels", "big", "1.0", pad_bytes=3_000_000)
    reads: list[tuple[int, float | None, float | None]] = []  # size, timeout before, after
    recv = GatheringSSLSocket.recv

    def spied(self: GatheringSSLSocket, buflen: int = 1024, flags: int = 0) -> bytes:
        before = self.gettimeout()
        data = recv(self, buflen, flags)
        reads.append((len(data), before, self.gettimeout()))
        return data

    monkeypatch.setattr(GatheringSSLSocket, "recv", spied)
    server = IndexServer(tls=tls.server())
    server.add(wheel)
    with server, HttpClient(tls=TlsFiles(cert=str(tls.ca_file)), retries=0) as client:
        result = client.download(server.file_url(wheel.name), tmp_path / "got.whl")
    assert result.status == 200
    assert (tmp_path / "got.whl").read_bytes() == wheel.read_bytes()
    assert max(size for size, _, _ in reads) > 16 * 1024  # more than one TLS record per read
    assert all(before == after for _, before, after in reads)  # its timeout is left as it was


def test_a_cert_setting_that_cannot_be_loaded_names_the_setting(
    isolated_env: IsolatedEnv,
    index: IndexServer,
    https_index: IndexServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = pip_config(isolated_env, monkeypatch, "[global]\ncert = ~/no-such-ca.pem\n")
    client = HttpClient(tls=read_pip_settings().tls)
    client.prepare()  # the pool is built all the same: http:// needs no certificates
    _wait_for_prepare()
    assert client.get(index.project_url("alpha")).status == 200  # as pip: HTTPS only fails
    with pytest.raises(NetworkSettingError) as caught:
        client.get(https_index.project_url("alpha"))
    message = str(caught.value)
    assert message.startswith(f"{config}: cert = '{isolated_env.home}/no-such-ca.pem'")
    assert "No such file or directory" in message
    assert "PEM file of CA certificates" in message
    with pytest.raises(NetworkSettingError):  # downloads say the same
        client.download(https_index.file_url(BETA), isolated_env.root / BETA)


def test_a_client_cert_that_is_not_a_key_and_certificate_names_the_setting(
    tls: Tls, https_index: IndexServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_CERT", str(tls.ca_file))
    monkeypatch.setenv("PIP_CLIENT_CERT", str(tls.ca_file))  # a certificate, but no key
    with pytest.raises(NetworkSettingError) as caught:
        HttpClient(tls=read_pip_settings().tls).get(https_index.project_url("alpha"))
    assert str(caught.value).startswith(f"PIP_CLIENT_CERT: client-cert = '{tls.ca_file}'")
    assert "private key" in str(caught.value)


def test_a_client_cert_with_an_encrypted_key_is_refused_without_a_prompt(
    tls: Tls, https_index: IndexServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    leaf = tls.ca.issue_cert("client@example.org")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    path = tmp_path / "client.pem"
    path.write_bytes(encrypted + b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    monkeypatch.setenv("PIP_CERT", str(tls.ca_file))
    monkeypatch.setenv("PIP_CLIENT_CERT", str(path))
    with pytest.raises(NetworkSettingError) as caught:  # OpenSSL's prompt would wait
        HttpClient(tls=read_pip_settings().tls).get(https_index.project_url("alpha"))
    assert "its private key is encrypted" in str(caught.value)


def test_an_ssl_cert_file_that_cannot_be_loaded_is_named(
    https_index: IndexServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(NetworkSettingError) as caught:
        HttpClient().get(https_index.project_url("alpha"))
    message = str(caught.value)
    assert f"SSL_CERT_FILE = '{tmp_path / 'missing.pem'}' is not valid" in message
    assert "or to be unset" in message


def test_a_tls_context_is_made_once_while_its_files_stay_the_same(
    tls: Tls, https_index: IndexServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[TlsFiles] = []
    real = http_module._new_tls_context

    def counting(files: TlsFiles) -> ssl.SSLContext:
        made.append(files)
        return real(files)

    monkeypatch.setattr(http_module, "_new_tls_context", counting)
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(tls.ca_file.read_bytes())
    files = TlsFiles(cert=str(bundle), cert_source="test")
    for _ in range(3):  # every client (each `%%pypi` cell makes one) shares the first context
        with HttpClient(tls=files, retries=0) as client:
            assert client.get(https_index.project_url("alpha")).status == 200
    assert len(made) == 1
    other = trustme.CA()  # the file now trusts another CA only: a new context, refused
    bundle.write_bytes(other.cert_pem.bytes() + b"\n" * 3)
    with HttpClient(tls=files, retries=0) as client, pytest.raises(IndexAccessError):
        client.get(https_index.project_url("alpha"))
    assert len(made) == 2
    bundle.write_bytes(b"not a certificate")  # a failure is raised, and not kept
    for _ in range(2):
        with HttpClient(tls=files, retries=0) as client, pytest.raises(NetworkSettingError):
            client.get(https_index.project_url("alpha"))
    assert len(made) == 4


_FORKED_TLS_SCRIPT = """
import json, os, sys
import nbenv.net.http as http
log = sys.argv[2]
real = http._new_tls_context
def noting(files):
    with open(log, "a") as out:
        out.write(f"{os.getpid()}\\n")
    return real(files)
http._new_tls_context = noting
from nbenv.envs import BuildOptions, create_env
from nbenv.spec import parse_request
create_env(parse_request(["alpha", "beta", "--index-url", sys.argv[1]]),
           BuildOptions(register_kernel=False, compile_bytecode=False))
print(os.getpid())
"""


def test_helpers_forked_by_a_cold_create_inherit_its_tls_context(
    index: IndexServer, isolated_env: IsolatedEnv, tmp_path: Path
) -> None:
    log = tmp_path / "contexts.log"
    pid = run_python(_FORKED_TLS_SCRIPT, index.url, str(log)).strip()
    # made once, by the create's own process: the page and download helpers forked after it
    assert log.read_text().split() == [pid]
