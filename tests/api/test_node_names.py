"""A node's name belongs to the agent holding its key while the node is live: a second host
that comes up under the same name (cloned images keep their hostname) is refused instead of
sharing the node and running its allocations twice."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio

from mxvm.leases import keys
from tests.api.test_drain import heartbeats
from tests.api.test_scheduling_flow import job, submit
from tests.harness import AGENT, Api

KEY_A = "a" * 32
KEY_B = "b" * 32


async def register(api: Api, name: str, key: str | None, url: str) -> tuple[int, Any]:
    body: dict[str, Any] = {
        "name": name,
        "resources": {"cpu_millicores": 8000, "memory_mb": 4096, "disk_mb": 100000},
        "drivers": ["fake"],
        "agent_url": url,
    }
    if key is not None:
        body["node_key"] = key
    status, out, _ = await api.call("POST", "/api/v1/agent/register", json=body, token=AGENT)
    return status, out


async def test_a_live_nodes_name_is_refused_to_another_agent(api: Api) -> None:
    status, first = await register(api, "worker", KEY_A, "http://10.0.0.1:8471")
    assert status == 200, first
    node = first["node"]
    assert "node_key" not in node  # never served back out
    async with heartbeats(api, node["id"]):
        status, refused = await register(api, "worker", KEY_B, "http://10.0.0.2:8471")
        assert status == 409, refused
        assert "worker" in refused["detail"] and node["id"] in refused["detail"]
        assert "MXVM_NODE_NAME" in refused["detail"]
        # An agent without a key (older than keys) is refused too once the name is claimed.
        status, _ = await register(api, "worker", None, "http://10.0.0.3:8471")
        assert status == 409
        # The node is untouched: still the first agent's.
        got = await api.ok("GET", f"/api/v1/nodes/{node['id']}")
        assert got["agent_url"] == "http://10.0.0.1:8471"
        # Its own agent, restarting with its key, gets it back at once.
        status, again = await register(api, "worker", KEY_A, "http://10.0.0.1:9999")
        assert status == 200 and again["node"]["id"] == node["id"]
        assert again["node"]["subnet"] == node["subnet"]
    nodes = await api.ok("GET", "/api/v1/nodes")
    assert [n["name"] for n in nodes] == ["worker"]


async def test_a_name_whose_node_is_no_longer_live_goes_to_a_new_node(
    api: Api, redis_url: str
) -> None:
    status, first = await register(api, "reimaged", KEY_A, "http://10.0.0.1:8471")
    assert status == 200
    old_node = first["node"]
    svc, _ = await submit(api, job("svc", type_="service"))
    [old] = await api.ok("GET", f"/api/v1/jobs/{svc['id']}/allocations")
    assert old["node_id"] == old_node["id"]
    # The old agent is gone: its lease runs out (deleted here, so that the new leader's
    # reaper, which judges nothing in its first TTL, cannot be the one acting).
    r = redis.asyncio.Redis.from_url(redis_url)
    try:
        assert await r.delete(keys.node_heartbeat(old_node["id"])) == 1
    finally:
        await r.aclose()
    status, taken = await register(api, "reimaged", KEY_B, "http://10.0.0.9:8471")
    assert status == 200, taken
    new_node = taken["node"]
    assert new_node["id"] != old_node["id"] and new_node["subnet"] != old_node["subnet"]
    assert new_node["name"] == "reimaged" and new_node["status"] == "ready"
    # The old node is out of the way under a name of its own, down, its allocation lost...
    retired = await api.ok("GET", f"/api/v1/nodes/{old_node['id']}")
    assert retired["name"] == f"reimaged.old-{old_node['id'][:8]}"
    assert retired["status"] == "down" and retired["agent_url"] == "http://10.0.0.1:8471"
    lost = await api.ok("GET", f"/api/v1/allocations/{old['id']}")
    assert lost["client_status"] == "lost"
    # ...and replaced on the new node, not handed to it.
    async with asyncio.timeout(10):
        while True:
            allocs = await api.ok("GET", f"/api/v1/jobs/{svc['id']}/allocations")
            live = [a for a in allocs if a["id"] != old["id"] and a["desired_status"] == "run"]
            if live:
                break
            await asyncio.sleep(0.1)
    assert [a["node_id"] for a in live] == [new_node["id"]]
    # Should the old agent come back after all, it is that other node, never the new one:
    # what the new node runs is not its to run.
    async with heartbeats(api, old_node["id"]):
        async with asyncio.timeout(10):
            while (await api.ok("GET", f"/api/v1/nodes/{old_node['id']}"))["status"] != "ready":
                await asyncio.sleep(0.1)
        changes = await api.ok(
            "GET", f"/api/v1/agent/nodes/{old_node['id']}/allocations/changes?index=0", token=AGENT
        )
        assert changes["live"] == []
        # Its key no longer names "reimaged": that is the new agent's now.
        async with heartbeats(api, new_node["id"]):
            status, _ = await register(api, "reimaged", KEY_A, "http://10.0.0.1:8471")
        assert status == 409


async def test_a_name_registered_before_keys_is_claimed_by_the_first_key(api: Api) -> None:
    old = await api.register("legacy")  # no key: as agents older than keys register
    status, again = await register(api, "legacy", None, "")
    assert status == 200 and again["node"]["id"] == old["id"]
    status, claimed = await register(api, "legacy", KEY_A, "http://10.0.0.1:8471")
    assert status == 200 and claimed["node"]["id"] == old["id"]
    status, _ = await register(api, "legacy", KEY_B, "http://10.0.0.2:8471")
    assert status == 409


async def test_two_agents_racing_for_a_new_name_get_one_node(api: Api) -> None:
    results = await asyncio.gather(
        *(
            register(api, "race", key, f"http://10.0.0.{i}:8471")
            for i, key in enumerate([KEY_A, KEY_B, "c" * 32, "d" * 32], start=1)
        )
    )
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 409, 409, 409], results
    [winner] = [out["node"] for status, out in results if status == 200]
    got = await api.ok("GET", f"/api/v1/nodes/{winner['id']}")
    assert got["agent_url"] == winner["agent_url"]


async def test_a_malformed_node_key_is_422(api: Api) -> None:
    status, out = await register(api, "bad-key", "not-hex", "")
    assert status == 422
    assert "node_key" in str(out)
