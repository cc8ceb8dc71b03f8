"""POST /api/v1/agent/nodes/{id}/devices: a node's device health, and what a bad GPU does to
the allocations on it (no agent: the allocations stay pending, which is live)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.harness import AGENT, Api

GPU_A, GPU_B = "0000:65:00.0", "0000:b3:00.0"


def gpu(address: str, *, healthy: bool = True, reason: str = "") -> dict[str, Any]:
    return {
        "id": address,
        "kind": "gpu",
        "vendor": "nvidia",
        "model": "NVIDIA H100 80GB HBM3",
        "memory_mb": 81559,
        "pci_address": address,
        "healthy": healthy,
        "health_reason": reason,
    }


def gpu_job(name: str, **kw: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "type": "service",
        "task": {"driver": "fake", "argv": ["train"], "memory_mb": 128},
        "devices": [{"kind": "gpu", "count": 1}],
        "restart": {"attempts": 0},
        "reschedule": {"attempts": 1, "delay_s": 0, "interval_s": 600},
    }
    spec.update(kw)
    return spec


async def allocations(api: Api, job_id: str) -> list[dict[str, Any]]:
    return await api.ok("GET", f"/api/v1/jobs/{job_id}/allocations")  # type: ignore[no-any-return]


async def wait_for(api: Api, job_id: str, n: int, limit_s: float = 15) -> list[dict[str, Any]]:
    async with asyncio.timeout(limit_s):
        while len(allocs := await allocations(api, job_id)) < n:
            await asyncio.sleep(0.05)
    return allocs


async def report(api: Api, node_id: str, devices: list[dict[str, Any]]) -> dict[str, Any]:
    path = f"/api/v1/agent/nodes/{node_id}/devices"
    return await api.ok("POST", path, json=devices, token=AGENT)  # type: ignore[no-any-return]


async def test_unhealthy_gpu_fails_its_allocation_and_the_replacement_gets_the_other(
    api: Api,
) -> None:
    node = await api.register("gpu-node", devices=[gpu(GPU_A), gpu(GPU_B)])
    out = await api.ok("POST", "/api/v1/jobs", json=gpu_job("train"))
    (first,) = await wait_for(api, out["job"]["id"], 1)
    bad = first["device_ids"][0]
    good = GPU_B if bad == GPU_A else GPU_A

    updated = await report(api, node["id"], [gpu(bad, healthy=False, reason="XID 79"), gpu(good)])

    assert [d["healthy"] for d in updated["devices"] if d["id"] == bad] == [False]
    allocs = await wait_for(api, out["job"]["id"], 2)
    failed = next(a for a in allocs if a["id"] == first["id"])
    assert failed["client_status"] == "failed"
    assert failed["client_description"] == f"GPU {bad} unhealthy: XID 79"
    assert failed["events"][-1]["type"] == "failed"
    replacement = next(a for a in allocs if a["id"] != first["id"])
    assert replacement["device_ids"] == [good]
    assert replacement["previous_allocation"] == first["id"]
    assert replacement["reschedule_attempts"] == 1
    shown = await api.ok("GET", f"/api/v1/nodes/{node['id']}")
    assert {d["id"]: d["health_reason"] for d in shown["devices"]} == {bad: "XID 79", good: ""}


async def test_a_vanished_gpu_fails_its_allocation_too(api: Api) -> None:
    node = await api.register("gpu-node", devices=[gpu(GPU_A)])
    out = await api.ok("POST", "/api/v1/jobs", json=gpu_job("train", reschedule={"attempts": 0}))
    (first,) = await wait_for(api, out["job"]["id"], 1)
    await report(api, node["id"], [])
    got = await api.ok("GET", f"/api/v1/allocations/{first['id']}")
    assert got["client_status"] == "failed"
    assert got["client_description"] == f"device {GPU_A} is no longer present on the node"


async def test_a_recovered_gpu_unblocks_the_waiting_job(api: Api) -> None:
    node = await api.register("gpu-node", devices=[gpu(GPU_A, healthy=False, reason="XID 48")])
    out = await api.ok("POST", "/api/v1/jobs", json=gpu_job("waits"))
    ev = await api.wait_eval(out["evaluation"]["id"])
    assert ev["status"] == "blocked"
    assert await allocations(api, out["job"]["id"]) == []
    await report(api, node["id"], [gpu(GPU_A)])
    (placed,) = await wait_for(api, out["job"]["id"], 1)
    assert placed["device_ids"] == [GPU_A]


async def test_healthy_reports_fail_nothing_and_the_endpoint_is_for_agents(api: Api) -> None:
    node = await api.register("gpu-node", devices=[gpu(GPU_A)])
    out = await api.ok("POST", "/api/v1/jobs", json=gpu_job("train"))
    (first,) = await wait_for(api, out["job"]["id"], 1)
    await report(api, node["id"], [gpu(GPU_A)])
    got = await api.ok("GET", f"/api/v1/allocations/{first['id']}")
    assert got["client_status"] == "pending"
    path = f"/api/v1/agent/nodes/{node['id']}/devices"
    assert (await api.call("POST", path, json=[gpu(GPU_A)], token=None))[0] == 401
    status, body, _ = await api.call("POST", path, json=[{"kind": "gpu"}], token=AGENT)
    assert status == 422 and body["errors"][0]["field"] == "0.id"
    missing = "/api/v1/agent/nodes/nope/devices"
    assert (await api.call("POST", missing, json=[], token=AGENT))[0] == 404
