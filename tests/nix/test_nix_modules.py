"""The NixOS modules, evaluated with nixpkgs' lib.evalModules against stub NixOS options:
the units they generate, the settings file they render (checked against mxvm.config), the
credentials they load, and the assertions that refuse bad combinations.

Runs when $MXVM_NIXPKGS_LIB points at a checkout of nixpkgs' lib; skips saying so otherwise.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from mxvm.config import AgentSettings, CoordinatorSettings, split_listen
from tests.nix.conftest import REPO, Evaluated, evaluate_package
from tests.nix.scenarios import AGENT, BAD, COORD, FAKE_IMAGE

# -- coordinator ---------------------------------------------------------------------------

HARDENING = {
    "CapabilityBoundingSet": [""],
    "DevicePolicy": "closed",
    "LockPersonality": True,
    "MemoryDenyWriteExecute": True,
    "NoNewPrivileges": True,
    "PrivateDevices": True,
    "PrivateTmp": True,
    "ProtectClock": True,
    "ProtectControlGroups": True,
    "ProtectHome": True,
    "ProtectHostname": True,
    "ProtectKernelLogs": True,
    "ProtectKernelModules": True,
    "ProtectKernelTunables": True,
    "ProtectSystem": "strict",
    "RestrictAddressFamilies": ["AF_INET", "AF_INET6", "AF_UNIX"],
    "RestrictNamespaces": True,
    "RestrictRealtime": True,
    "RestrictSUIDSGID": True,
    "SystemCallArchitectures": "native",
    "UMask": "0077",
}


def test_nothing_enabled_adds_nothing(ev: dict[str, Evaluated]) -> None:
    e = ev["nothing"]
    assert e.services == {}
    assert (e.failed_assertions, e.warnings, e.raw["firewall"]) == ([], [], [])
    assert e.raw["postgresql"]["enable"] is False


def test_coordinator_unit(ev: dict[str, Evaluated]) -> None:
    e = ev["coord"]
    assert (e.failed_assertions, e.warnings) == ([], [])
    sc = e.service_config(COORD)
    assert sc["ExecStart"].endswith("-mxvm/bin/mxvm coordinator")
    assert (sc["User"], sc["Group"]) == ("mxvm", "mxvm")
    assert "mxvm" in e.raw["users"]
    assert {k: sc[k] for k in HARDENING} == HARDENING
    assert sc["SystemCallFilter"][0] == "@system-service"
    assert "~@privileged" in sc["SystemCallFilter"]
    assert sc["StateDirectory"] == "mxvm-coordinator"
    assert sc["LoadCredential"] == [
        "mxvm_admin_token:/run/secrets/admin",
        "mxvm_agent_tokens:/run/secrets/agents",
    ]
    assert e.unit(COORD)["wantedBy"] == ["multi-user.target"]


def test_coordinator_settings_file_is_valid_coordinator_settings(
    ev: dict[str, Evaluated],
) -> None:
    path, values = ev["coord"].settings(COORD)
    assert path.startswith("/nix/store/") and path.endswith("-mxvm-coordinator.toml")
    assert set(values) <= set(CoordinatorSettings.model_fields), "unknown settings keys"
    settings = CoordinatorSettings(**values)
    assert settings.listen == "0.0.0.0:8471"
    assert settings.database_url == "postgresql:///mxvm?host=/run/postgresql"
    assert settings.redis_url == "unix:///run/redis-mxvm/redis.sock"
    assert settings.state_dir == Path("/var/lib/mxvm-coordinator")
    assert settings.admin_token is None, "secrets never go in the settings file"


def test_ipv6_listen_address_is_bracketed(ev: dict[str, Evaluated]) -> None:
    _, values = ev["coord_ipv6"].settings(COORD)
    assert values["listen"] == "[::]:8470"
    assert split_listen(values["listen"]) == ("::", 8470)


def test_create_locally_brings_up_postgres_and_redis(ev: dict[str, Evaluated]) -> None:
    e = ev["coord"]
    pg = e.raw["postgresql"]
    assert pg["enable"] is True
    assert pg["ensureDatabases"] == ["mxvm"]
    assert pg["ensureUsers"] == [{"name": "mxvm", "ensureDBOwnership": True}]
    redis = e.raw["redis"]["mxvm"]
    assert (redis["enable"], redis["port"]) == (True, 0)
    assert f"unix://{redis['unixSocket']}" == e.settings(COORD)[1]["redis_url"]
    unit = e.unit(COORD)
    assert {"postgresql.service", "redis-mxvm.service"} <= set(unit["after"])
    assert unit["requires"] == ["postgresql.service", "redis-mxvm.service"]
    assert e.service_config(COORD)["SupplementaryGroups"] == ["redis-mxvm"]


def test_open_firewall_opens_the_api_port(ev: dict[str, Evaluated]) -> None:
    assert ev["coord"].raw["firewall"] == [8471]
    assert ev["coord_ipv6"].raw["firewall"] == []


def test_external_backends_come_from_credentials(ev: dict[str, Evaluated]) -> None:
    e = ev["coord_external"]
    assert e.failed_assertions == []
    assert e.raw["postgresql"]["enable"] is False
    assert e.raw["redis"] == {}
    _, values = e.settings(COORD)
    assert "database_url" not in values and "redis_url" not in values
    sc = e.service_config(COORD)
    assert sc["LoadCredential"] == [
        "mxvm_admin_token:/run/secrets/admin",
        "mxvm_agent_tokens:/run/secrets/agents",
        "mxvm_database_url:/run/secrets/db",
        "mxvm_redis_url:/run/secrets/redis",
    ]
    assert "SupplementaryGroups" not in sc or sc["SupplementaryGroups"] == []
    assert not {"postgresql.service", "redis-mxvm.service"} & set(e.unit(COORD)["after"])


def test_loaded_credentials_are_the_files_mxvm_config_reads(
    ev: dict[str, Evaluated], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd puts each LoadCredential=ID:file at $CREDENTIALS_DIRECTORY/ID."""
    contents = {
        "mxvm_admin_token": "admin-secret\n",
        "mxvm_agent_tokens": "tok-a\ntok-b\n",
        "mxvm_database_url": "postgresql://mxvm:pw@db/mxvm",
        "mxvm_redis_url": "redis://:pw@cache:6379/0",
    }
    ids = [
        entry.split(":", 1)[0]
        for name in ("coord", "coord_external")
        for entry in ev[name].service_config(COORD)["LoadCredential"]
    ]
    assert set(ids) == set(contents)
    for cred_id in ids:
        (tmp_path / cred_id).write_text(contents[cred_id])
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.delenv("MXVM_CONFIG", raising=False)
    settings = CoordinatorSettings()
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "admin-secret"
    assert [t.get_secret_value() for t in settings.agent_tokens] == ["tok-a", "tok-b"]
    assert settings.database_url == contents["mxvm_database_url"]
    assert settings.redis_url == contents["mxvm_redis_url"]


def test_open_firewall_on_loopback_warns(ev: dict[str, Evaluated]) -> None:
    [warning] = ev["coord_loopback_firewall"].warnings
    assert "services.mxvm.coordinator.openFirewall" in warning


def test_missing_agent_tokens_warns(ev: dict[str, Evaluated]) -> None:
    e = ev["coord_no_database"]
    assert any("services.mxvm.coordinator.agentTokensFile" in w for w in e.warnings)


# -- agent ---------------------------------------------------------------------------------


def test_agent_unit(ev: dict[str, Evaluated]) -> None:
    e = ev["agent"]
    assert (e.failed_assertions, e.warnings) == ([], [])
    unit = e.unit(AGENT)
    sc = unit["serviceConfig"]
    assert sc["ExecStart"].endswith("-mxvm/bin/mxvm agent")
    assert sc["KillMode"] == "process", "VMs must outlive an agent restart"
    assert sc["CapabilityBoundingSet"] == sc["AmbientCapabilities"] == ["CAP_NET_ADMIN"]
    assert sc["DevicePolicy"] == "closed"
    assert sc["DeviceAllow"] == ["/dev/kvm rw", "/dev/net/tun rw", "/dev/vhost-net rw"]
    assert "LimitMEMLOCK" not in sc
    assert sc["ProtectKernelTunables"] is True
    assert sc["ProtectSystem"] == "strict"
    assert sc["NoNewPrivileges"] is True
    assert "AF_NETLINK" in sc["RestrictAddressFamilies"]
    assert sc["LoadCredential"] == ["mxvm_agent_token:/run/secrets/agent"]
    assert unit["path"] == ["qemu-system-x86_64"]
    assert e.raw["boot"]["kernelParams"] == []
    assert "tun" in e.raw["boot"]["kernelModules"]


def test_agent_settings_file_is_valid_agent_settings(ev: dict[str, Evaluated]) -> None:
    path, values = ev["agent"].settings(AGENT)
    assert path.endswith("-mxvm-agent.toml")
    assert set(values) <= set(AgentSettings.model_fields), "unknown settings keys"
    settings = AgentSettings(**values)
    assert settings.url == "http://coordinator:8470"
    assert settings.node_name == "stubhost", "defaults to networking.hostName"
    assert settings.drivers == ["qemu"]
    assert settings.state_dir == Path("/var/lib/mxvm-agent")
    assert settings.images_dir == Path("/var/lib/mxvm-agent/images")
    assert "uplink" not in values
    assert settings.agent_token is None


def test_agent_api_open_to_the_coordinator(ev: dict[str, Evaluated]) -> None:
    e = ev["agent_api_open"]
    assert (e.failed_assertions, e.warnings) == ([], [])
    assert e.raw["firewall"] == [8472]
    sc = e.service_config(AGENT)
    assert (sc["ProtectHome"], sc["ReadWritePaths"]) == (False, ["/home/alice/notebooks"])
    assert ev["agent"].service_config(AGENT)["ProtectHome"] is True
    settings = AgentSettings(**e.settings(AGENT)[1])
    assert (settings.api_listen, settings.address) == ("0.0.0.0:8472", "10.0.0.12")
    assert ev["agent"].raw["firewall"] == []
    [warning] = ev["agent_api_loopback_firewall"].warnings
    assert "services.mxvm.agent.openFirewall" in warning


def test_agent_token_credential_is_what_agent_settings_read(
    ev: dict[str, Evaluated], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [entry] = ev["agent"].service_config(AGENT)["LoadCredential"]
    (tmp_path / entry.split(":", 1)[0]).write_text("agent-secret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.delenv("MXVM_CONFIG", raising=False)
    token = AgentSettings().agent_token
    assert token is not None and token.get_secret_value() == "agent-secret"


def test_gpu_passthrough_and_nat(ev: dict[str, Evaluated]) -> None:
    e = ev["agent_gpu_nat"]
    assert e.failed_assertions == []
    boot = e.raw["boot"]
    assert boot["kernelParams"] == ["amd_iommu=on", "iommu=pt", "vfio-pci.ids=10de:2330,10de:22a3"]
    assert {"vfio_pci", "vfio", "vfio_iommu_type1"} <= set(boot["kernelModules"])
    assert boot["initrdKernelModules"] == ["vfio_pci", "vfio", "vfio_iommu_type1"]
    assert boot["sysctl"] == {"net.ipv4.ip_forward": 1}
    unit = e.unit(AGENT)
    sc = unit["serviceConfig"]
    assert {"/dev/vfio/vfio rw", "char-vfio rw", "/dev/kvm rw"} <= set(sc["DeviceAllow"])
    assert sc["LimitMEMLOCK"] == "infinity"
    assert sc["ProtectKernelTunables"] is False, "VFIO binding and ip_forward write sysfs/procfs"
    assert sc["CapabilityBoundingSet"] == ["CAP_NET_ADMIN"], "no CAP_SYS_ADMIN for VFIO"
    assert sc["ReadWritePaths"] == ["/srv/data"]
    assert unit["path"] == ["qemu-system-x86_64", "cloud-hypervisor", "nft"]
    settings = AgentSettings(**e.settings(AGENT)[1])
    assert (settings.nat, settings.uplink) == (True, "eth0")
    assert settings.host_volumes == {"data": "/srv/data"}
    assert (
        f"L+ /var/lib/mxvm-agent/images/agent-guest - - - - {FAKE_IMAGE['outPath']}"
        in (e.raw["tmpfiles"])
    )


def test_gpu_passthrough_accepts_an_iommu_switch_set_elsewhere(
    ev: dict[str, Evaluated],
) -> None:
    e = ev["agent_gpu_own_iommu_param"]
    assert e.failed_assertions == []
    assert e.raw["boot"]["kernelParams"] == ["intel_iommu=on"]
    assert e.raw["boot"]["initrdKernelModules"] == [], "vfio in the initrd only for vfioIds"


def test_coordinator_and_agent_on_one_host(ev: dict[str, Evaluated]) -> None:
    e = ev["both"]
    assert e.failed_assertions == []
    assert set(e.services) == {COORD, AGENT}
    dirs = {e.service_config(u)["StateDirectory"] for u in (COORD, AGENT)}
    assert dirs == {"mxvm-coordinator", "mxvm-agent"}


def test_flake_modules_default_the_package_and_deduplicate(ev: dict[str, Evaluated]) -> None:
    """nixosModules.default and .coordinator together: one option declaration, and the
    package defaults to the flake's build (callPackage ./nix/package.nix)."""
    e = ev["flake_modules"]
    assert e.failed_assertions == []
    exec_start = e.service_config(COORD)["ExecStart"]
    assert exec_start.startswith("/nix/store/") and "-mxvm-from-package.nix/bin/" in exec_start


# -- assertions ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_combination_fails_an_assertion_naming_the_option(
    ev: dict[str, Evaluated], name: str
) -> None:
    option = BAD[name][1]
    [message] = ev[name].failed_assertions
    assert option in message


# -- package -------------------------------------------------------------------------------


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower()


def test_package_declares_exactly_pyprojects_dependencies() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # nixpkgs names the libvirt bindings `libvirt`, PyPI `libvirt-python`.
    nix_names = {"libvirt-python": "libvirt"}

    def names(requirements: list[str]) -> list[str]:
        return [nix_names.get(n, n) for n in map(_requirement_name, requirements)]

    required = names(project["dependencies"])
    libvirt = names(project["optional-dependencies"]["libvirt"])
    pkg = evaluate_package(sorted({*required, *libvirt, "setuptools"}))
    assert pkg["pname"] == project["name"]
    assert pkg["version"] == project["version"]
    assert sorted(pkg["dependencies"]) == sorted(required)
    assert pkg["buildSystem"] == ["setuptools"]
    assert pkg["optionalDependencies"] == {"libvirt": libvirt}
    assert pkg["mainProgram"] in project["scripts"]
    # The build fails when the SQL package data is missing from the wheel.
    assert "mxvm/store" in pkg["postInstall"]
    assert "migrations/*.sql" in pkg["postInstall"] and "queries/*.sql" in pkg["postInstall"]
