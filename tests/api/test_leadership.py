"""Leader election between coordinators, and node-loss reconciliation by the leader."""

from __future__ import annotations

import asyncio
import contextlib

from tests.harness import AGENT, Api, running, settings_for


async def test_exactly_one_leader_and_failover_raises_the_epoch(
    pg_dsn: str, redis_url: str
) -> None:
    a_settings = settings_for(pg_dsn, redis_url, coordinator_id="coord-a")
    async with running(a_settings) as a:
        b_settings = settings_for(pg_dsn, redis_url, coordinator_id="coord-b")
        async with contextlib.AsyncExitStack() as stack:
            b_task = asyncio.create_task(stack.enter_async_context(running(b_settings)))
            await asyncio.sleep(2.0)  # b keeps trying while a leads
            assert a.coord.leader_epoch is not None
            first_epoch = a.coord.leader_epoch
            assert not b_task.done()  # running() waits until b leads: it cannot yet
        b_task.cancel()
    # a stepped down; a fresh coordinator takes over with a higher epoch.
    async with running(settings_for(pg_dsn, redis_url, coordinator_id="coord-c")) as c:
        assert c.coord.leader_epoch is not None and c.coord.leader_epoch > first_epoch
        st = await c.ok("GET", "/api/v1/cluster/status")
        assert st["leader"] == "coord-c" and st["epoch"] >= first_epoch


async def _heartbeat_forever(api: Api, node_id: str) -> None:
    while True:
        await api.ok("POST", f"/api/v1/agent/nodes/{node_id}/heartbeat", token=AGENT)
        await asyncio.sleep(0.3)


async def test_a_lost_node_is_marked_down_and_its_allocations_replaced(
    pg_dsn: str, redis_url: str
) -> None:
    await asyncio.sleep(2.1)  # the reaper waits for Redis to be older than one heartbeat TTL
    async with running(settings_for(pg_dsn, redis_url)) as api:
        doomed = await api.register("doomed")
        out = await api.ok(
            "POST",
            "/api/v1/jobs",
            json={"name": "svc", "type": "service", "task": {"driver": "fake", "argv": ["sleep"]}},
        )
        await api.wait_eval(out["evaluation"]["id"])
        [first] = await api.ok("GET", f"/api/v1/jobs/{out['job']['id']}/allocations")
        assert first["node_id"] == doomed["id"]
        survivor = await api.register("survivor")
        beat = asyncio.create_task(_heartbeat_forever(api, survivor["id"]))
        try:
            async with asyncio.timeout(20):
                while (await api.ok("GET", f"/api/v1/nodes/{doomed['id']}"))["status"] != "down":
                    await asyncio.sleep(0.2)
                lost = await api.ok("GET", f"/api/v1/allocations/{first['id']}")
                assert lost["client_status"] == "lost"
                while True:
                    allocs = await api.ok("GET", f"/api/v1/jobs/{out['job']['id']}/allocations")
                    live = [a for a in allocs if a["client_status"] == "pending"]
                    if live:
                        break
                    await asyncio.sleep(0.2)
            assert live[0]["node_id"] == survivor["id"]
            assert (await api.ok("GET", f"/api/v1/nodes/{survivor['id']}"))["status"] == "ready"
        finally:
            beat.cancel()


async def test_a_new_leader_gives_nodes_a_ttl_to_heartbeat_before_judging_them(
    pg_dsn: str, redis_url: str
) -> None:
    """While no coordinator led (or the leader could not reach Redis), heartbeats failed and
    leases ran out though the nodes were fine. A new leader must not declare them all lost
    in its first reaper round: their heartbeats get one TTL (2 s here) to come back."""
    async with running(settings_for(pg_dsn, redis_url, coordinator_id="coord-a")) as a:
        n = await a.register("n")
    await asyncio.sleep(2.5)  # no leader, no heartbeats: n's lease runs out
    async with running(settings_for(pg_dsn, redis_url, coordinator_id="coord-b")) as b:
        await asyncio.sleep(1.0)  # the agent's next heartbeat gets through a second later
        beat = asyncio.create_task(_heartbeat_forever(b, n["id"]))
        try:
            for _ in range(15):  # 3 s: past the grace, with heartbeats coming in
                assert (await b.ok("GET", f"/api/v1/nodes/{n['id']}"))["status"] == "ready"
                await asyncio.sleep(0.2)
        finally:
            beat.cancel()


async def test_an_api_only_coordinator_serves_but_never_leads(pg_dsn: str, redis_url: str) -> None:
    api_only = settings_for(pg_dsn, redis_url, coordinator_id="coord-api", leader=False)
    # The leader polls for evaluations only every 60 s: only the API-only coordinator's
    # wake-up (a NOTIFY after the submit commits) gets the job placed within seconds.
    leader = settings_for(pg_dsn, redis_url, coordinator_id="coord-lead", eval_poll_interval_s=60)
    async with running(api_only) as b:
        async with running(leader):
            await asyncio.sleep(0.5)  # past the leader's first evaluator round
            # Everything goes through the API-only one; the other places the job.
            await b.register("n1")
            spec = {"name": "w", "type": "service", "task": {"driver": "fake", "argv": ["x"]}}
            out = await b.ok("POST", "/api/v1/jobs", json=spec)
            ev = await b.wait_eval(out["evaluation"]["id"], timeout_s=10)
            assert ev["status"] == "complete"
            st = await b.ok("GET", "/api/v1/cluster/status")
            assert (st["leader"], st["is_leader"]) == ("coord-lead", False)
        # The leader is gone; the API-only coordinator does not take over.
        await asyncio.sleep(api_only.leader_ttl_s * 1.5)
        assert b.coord.leader_epoch is None
        assert (await b.ok("GET", "/api/v1/cluster/status"))["leader"] is None
