"""Settings come from env, systemd credentials and the TOML file, in that order."""

from __future__ import annotations

from pathlib import Path

import pytest

from mxvm.config import AgentSettings, CoordinatorSettings


def test_env_beats_credentials_beats_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "mxvm.toml"
    toml.write_text('listen = "0.0.0.0:9000"\nheartbeat_ttl_s = 30\nadmin_token = "from-toml"\n')
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mxvm_admin_token").write_text("from-credential\n")
    (creds / "mxvm_agent_tokens").write_text("one\ntwo\n")
    monkeypatch.setenv("MXVM_CONFIG", str(toml))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    s = CoordinatorSettings()
    assert s.listen == "0.0.0.0:9000" and s.heartbeat_ttl_s == 30
    assert s.admin_token is not None and s.admin_token.get_secret_value() == "from-credential"
    assert [t.get_secret_value() for t in s.agent_tokens] == ["one", "two"]
    monkeypatch.setenv("MXVM_LISTEN", "127.0.0.1:1")
    monkeypatch.setenv("MXVM_AGENT_TOKENS", "a,b")
    s = CoordinatorSettings()
    assert s.listen == "127.0.0.1:1"
    assert [t.get_secret_value() for t in s.agent_tokens] == ["a", "b"]


def test_bad_values_are_refused_with_the_field_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MXVM_HEARTBEAT_TTL_S", "-1")
    with pytest.raises(ValueError, match="heartbeat_ttl_s"):
        CoordinatorSettings()
    monkeypatch.setenv("MXVM_BRIDGE", "a-bridge-name-that-is-too-long")
    with pytest.raises(ValueError, match="bridge"):
        AgentSettings()
