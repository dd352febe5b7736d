"""`engaged serve --role`: role sets a node cannot serve are refused before anything starts, with the reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engaged.config import load_config, role_problems
from engaged.errors import ConfigError


def serve(tmp_path: Path, extra: str, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "engaged.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n{extra}')
    return subprocess.run([sys.executable, "-m", "engaged", "serve", "--config", str(config), *args],
                          capture_output=True, text=True, check=False, timeout=60)


def test_a_tracker_node_without_a_shared_store_is_refused(tmp_path: Path) -> None:
    result = serve(tmp_path, "[bus]\nnode_id = 1\n", "--role", "tracker")
    assert result.returncode == 2
    assert "--role: a node with roles tracker shares its work with other nodes: it needs a shared store" in \
        result.stderr


def test_a_partial_node_without_a_node_id_is_refused(tmp_path: Path) -> None:
    result = serve(tmp_path, '[events]\nstore = "postgresql://db.example/engaged"\n', "--role", "smtp,tracker")
    assert result.returncode == 2
    assert "bus.node_id: a node with roles smtp,tracker needs its own node_id" in result.stderr


def test_an_unknown_role_is_refused(tmp_path: Path) -> None:
    result = serve(tmp_path, "", "--role", "smtp,dns")
    assert result.returncode == 2
    assert "--role: expected some of smtp, tracker, events, api, got smtp,dns" in result.stderr.replace(", dns", ",dns")


def test_every_role_is_the_single_node_setup_and_needs_nothing_more(tmp_path: Path) -> None:
    config = tmp_path / "engaged.toml"
    config.write_text("")
    assert role_problems(load_config(str(config))) == []


def test_bus_keys_are_checked(tmp_path: Path) -> None:
    config = tmp_path / "engaged.toml"
    config.write_text('[bus]\nservers = ["http://x"]\nreplicas = 7\nnode_id = 40\ntls_cert = "/nope.pem"\n')
    with pytest.raises(ConfigError) as raised:
        load_config(str(config))
    text = "\n".join(raised.value.problems)
    for expected in ("bus.servers[0]: expected a nats:// or tls:// URL", "bus.replicas: must be from 1 to 5",
                     "bus.node_id: must be from 0 to 31", "bus.tls_cert: tls_cert and tls_key must be set together"):
        assert expected in text


def test_roles_come_from_the_environment_too(tmp_path: Path) -> None:
    config = tmp_path / "engaged.toml"
    config.write_text('[events]\nstore = "postgresql://db.example/engaged"\n[bus]\nnode_id = 2\n')
    loaded = load_config(str(config), environ={"ENGAGED_SERVER_ROLES": "events,api"})
    assert loaded.server.roles == ["events", "api"] and role_problems(loaded) == []
