"""The NixOS configurations tests/nix evaluates: good ones, and bad combinations with the
option their assertion message must name."""

from __future__ import annotations

from typing import Any

COORD = "mxvm-coordinator"
GUEST = "mxvm-guest"
AGENT = "mxvm-agent"
FAKE_IMAGE = {
    "type": "derivation",
    "name": "mxvm-agent-guest-image",
    "outPath": "/nix/store/11111111111111111111111111111111-mxvm-agent-guest-image",
}


def coordinator(**cfg: Any) -> dict[str, Any]:
    return {"services": {"mxvm": {"coordinator": {"enable": True, **cfg}}}}


def agent(**cfg: Any) -> dict[str, Any]:
    base = {"enable": True, "agentTokenFile": "/run/secrets/agent"}
    return {"services": {"mxvm": {"agent": {**base, **cfg}}}}


SCENARIOS: dict[str, dict[str, Any]] = {
    "nothing": {},
    "coord": coordinator(
        listenAddress="0.0.0.0",
        port=8471,
        openFirewall=True,
        adminTokenFile="/run/secrets/admin",
        agentTokensFile="/run/secrets/agents",
    ),
    "coord_ipv6": coordinator(listenAddress="::", agentTokensFile="/run/secrets/agents"),
    "coord_external": coordinator(
        adminTokenFile="/run/secrets/admin",
        agentTokensFile="/run/secrets/agents",
        database={"createLocally": False, "urlFile": "/run/secrets/db"},
        redis={"createLocally": False, "urlFile": "/run/secrets/redis"},
    ),
    "coord_loopback_firewall": coordinator(openFirewall=True, agentTokensFile="/r/a"),
    "agent": agent(settings={"url": "http://coordinator:8470"}),
    "agent_api_open": agent(
        openFirewall=True,
        settings={
            "api_listen": "0.0.0.0:8472",
            "address": "10.0.0.12",
            "host_volumes": {"notebooks": "/home/alice/notebooks"},
        },
    ),
    "agent_api_loopback_firewall": agent(openFirewall=True),
    "agent_gpu_nat": agent(
        gpuPassthrough={"enable": True, "iommu": "amd", "vfioIds": ["10de:2330", "10de:22a3"]},
        images={"agent-guest": FAKE_IMAGE},
        settings={
            "nat": True,
            "uplink": "eth0",
            "drivers": ["qemu", "cloud-hypervisor"],
            "host_volumes": {"data": "/srv/data"},
        },
    ),
    "agent_gpu_own_iommu_param": {
        **agent(gpuPassthrough={"enable": True}),
        "boot": {"kernelParams": ["intel_iommu=on"]},
    },
    "both": {
        "services": {
            "mxvm": {
                "coordinator": coordinator(agentTokensFile="/r/a")["services"]["mxvm"][
                    "coordinator"
                ],
                "agent": agent()["services"]["mxvm"]["agent"],
            }
        }
    },
    "flake_modules": {"_flake": True, **coordinator(agentTokensFile="/r/a")},
    "guest": {"_guest": True},
    "vmtest_coordinator": {"_vmtestNode": "coordinator"},
    "vmtest_host": {"_vmtestNode": "host"},
}

# Each bad combination, and the option its assertion message must name.
BAD: dict[str, tuple[dict[str, Any], str]] = {
    "coord_no_database": (
        coordinator(database={"createLocally": False}),
        "services.mxvm.coordinator.database.urlFile",
    ),
    "coord_database_twice": (
        coordinator(database={"urlFile": "/run/secrets/db"}),
        "services.mxvm.coordinator.database.createLocally",
    ),
    "coord_no_redis": (
        coordinator(redis={"createLocally": False}),
        "services.mxvm.coordinator.redis.urlFile",
    ),
    "coord_redis_twice": (
        coordinator(redis={"urlFile": "/run/secrets/redis"}),
        "services.mxvm.coordinator.redis.createLocally",
    ),
    "agent_no_token": (agent(agentTokenFile=None), "services.mxvm.agent.agentTokenFile"),
    "agent_long_bridge": (
        agent(settings={"bridge": "mxvm-bridge-0123"}),
        "services.mxvm.agent.settings.bridge",
    ),
    "agent_nat_no_uplink": (agent(settings={"nat": True}), "services.mxvm.agent.settings.uplink"),
    "agent_gpu_no_iommu": (
        agent(gpuPassthrough={"enable": True}),
        "services.mxvm.agent.gpuPassthrough.iommu",
    ),
    "agent_libvirt_without_libvirtd": (
        agent(settings={"drivers": ["libvirt"]}),
        "virtualisation.libvirtd.enable",
    ),
}
