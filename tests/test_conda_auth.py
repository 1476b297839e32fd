"""Channel credentials reach rattler through a private auth file, never in a URL."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from nbenv.errors import UsageError
from nbenv.resolve import conda_runtime
from nbenv.resolve.conda_runtime import channel_client


def _auth_file(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, dict[str, object], int]]:
    """Record the override file rattler is given (path, content, mode) while it exists."""
    seen: list[tuple[Path, dict[str, object], int]] = []
    import rattler

    real = rattler.Config.from_toml

    def spy(text: str, shared: bool = False) -> rattler.Config:
        config = real(text, shared)
        path = config.authentication_override_file
        assert path is not None
        seen.append((path, json.loads(path.read_text()), stat.S_IMODE(path.stat().st_mode)))
        return config

    monkeypatch.setattr(rattler.Config, "from_toml", staticmethod(spy))
    return seen


def test_credentials_go_to_a_private_file_that_is_removed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    user_file = tmp_path / "credentials.json"
    user_file.write_text(json.dumps({"other.example": {"BearerToken": "mine"}}))
    monkeypatch.setenv("RATTLER_AUTH_FILE", str(user_file))
    seen = _auth_file(monkeypatch)
    channels = ["https://conda.example/t/tk-1/private/", "https://bob:pw%40x@files.example/c/"]
    with channel_client([*channels, "conda-forge", "https://plain.example/c/"]):
        (path, content, mode), *_ = seen
        assert path.exists() and mode == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert content == {
        "other.example": {"BearerToken": "mine"},  # the user's own file still applies
        "conda.example": {"CondaToken": "tk-1"},
        "files.example": {"BasicHTTP": {"username": "bob", "password": "pw@x"}},
    }
    assert not path.exists() and not path.parent.exists()


def test_no_credentials_means_the_shared_client(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _auth_file(monkeypatch)
    with channel_client(["conda-forge", "https://plain.example/c/"]) as client:
        assert client is conda_runtime.conda_client()
    assert seen == []


def test_two_credentials_for_one_host_are_refused() -> None:
    clashing = ["https://h.example/t/a/x/", "https://h.example/t/b/y/"]
    with pytest.raises(UsageError) as info, channel_client(clashing):
        pass
    assert "h.example" in str(info.value)
    assert "/t/a/" not in str(info.value) and "/t/b/" not in str(info.value)
    # the same credential twice is one
    with channel_client(["https://h.example/t/a/x/", "https://h.example/t/a/y/"]):
        pass


def test_the_file_is_removed_when_the_call_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _auth_file(monkeypatch)
    with pytest.raises(RuntimeError), channel_client(["https://h.example/t/a/x/"]):
        raise RuntimeError("rattler failed")
    assert not seen[0][0].exists()
