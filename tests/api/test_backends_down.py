"""Postgres or Redis down: 503 with Retry-After, promptly (never a 500 or a hang), then recovery."""

from __future__ import annotations

import asyncio
import time

from mxvm.embedded import EmbeddedPostgres, EmbeddedRedis
from tests.harness import AGENT, running, settings_for


async def test_postgres_down_is_503_with_retry_after_then_recovers(
    own_pg: EmbeddedPostgres, redis_url: str
) -> None:
    async with running(settings_for(own_pg.dsn, redis_url)) as api:
        assert (await api.call("GET", "/api/v1/jobs"))[0] == 200
        node = await api.register("n1")
        hb = f"/api/v1/agent/nodes/{node['id']}/heartbeat"
        await own_pg.kill()
        # A heartbeat renews the node's lease, which is what node loss is judged by: it
        # counts without Postgres (an agent must not take it for lost contact).
        await asyncio.sleep(2.1)  # past the lease registering took (TTL 2 s)
        assert await api.coord.leases.live_nodes([node["id"]]) == set()
        assert (await api.call("POST", hb, token=AGENT))[0] == 200
        assert await api.coord.leases.live_nodes([node["id"]]) == {node["id"]}
        for path in ("/api/v1/jobs", "/api/v1/nodes", "/api/v1/cluster/status"):
            t0 = time.monotonic()
            status, body, headers = await api.call("GET", path)
            assert status == 503, (path, body)
            assert time.monotonic() - t0 < 15  # bounded by the backend timeout, not a hang
            assert headers["Retry-After"].isdigit()
            assert headers["Content-Type"].startswith("application/problem+json")
            assert body["backend"] == "postgres"
        status, body, _ = await api.call("GET", "/ready")
        assert status == 503 and body["checks"]["redis"] == "ok"
        assert body["checks"]["postgres"] != "ok"
        status, _, _ = await api.call(
            "POST", "/api/v1/jobs", json={"name": "x", "task": {"argv": ["true"]}}
        )
        assert status == 503

        await own_pg.start()
        async with asyncio.timeout(20):
            while (await api.call("GET", "/ready"))[0] != 200:
                await asyncio.sleep(0.2)
        assert (await api.call("GET", "/api/v1/jobs"))[0] == 200


async def test_redis_down_is_503_for_heartbeats_and_ready_then_recovers(
    pg_dsn: str, own_redis: EmbeddedRedis
) -> None:
    async with running(settings_for(pg_dsn, own_redis.url)) as api:
        node = await api.register("n1")
        hb = f"/api/v1/agent/nodes/{node['id']}/heartbeat"
        assert (await api.call("POST", hb, token=AGENT))[0] == 200
        await own_redis.kill()
        status, body, headers = await api.call("POST", hb, token=AGENT)
        assert status == 503 and body["backend"] == "redis" and "Retry-After" in headers
        status, body, _ = await api.call("GET", "/ready")
        assert status == 503 and body["checks"]["postgres"] == "ok"
        # Postgres-only reads keep working while Redis is away.
        assert (await api.call("GET", "/api/v1/jobs"))[0] == 200

        await own_redis.start()
        async with asyncio.timeout(20):
            while (await api.call("POST", hb, token=AGENT))[0] != 200:
                await asyncio.sleep(0.2)
        assert (await api.call("GET", "/ready"))[0] == 200
