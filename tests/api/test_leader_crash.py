"""A leader killed with SIGKILL, in the middle of a burst of submits and between its
committed plans and their recorded outcomes: every job a client was told about is placed
once the standby takes over, and no job gets more allocations than it asked for (no work
lost, none duplicated).

The coordinators are processes of their own here (`mxvm coordinator`), so the kill is a real
SIGKILL: no shutdown code runs, the connections to Postgres and Redis drop mid-statement, and
the leader lease is left to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg

from tests.harness import ADMIN, AGENT, free_port

COUNT = 2  # allocations per job
JOBS_PER_COORDINATOR = 40


@contextlib.asynccontextmanager
async def coordinator(
    pg_dsn: str, redis_url: str, name: str
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    port = free_port()
    env = {
        **os.environ,
        "MXVM_DATABASE_URL": pg_dsn,
        "MXVM_REDIS_URL": redis_url,
        "MXVM_LISTEN": f"127.0.0.1:{port}",
        "MXVM_ADMIN_TOKEN": ADMIN,
        "MXVM_AGENT_TOKENS": AGENT,
        "MXVM_COORDINATOR_ID": name,
        "MXVM_LEADER_TTL_S": "2",
        "MXVM_HEARTBEAT_TTL_S": "30",  # the test heartbeats the node; it must not go down
        "MXVM_EVAL_POLL_INTERVAL_S": "0.5",
        "MXVM_LOG_LEVEL": "WARNING",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mxvm", "coordinator", env=env
    )
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


async def call(
    session: aiohttp.ClientSession, method: str, url: str, token: str = ADMIN, **kw: Any
) -> Any:
    async with session.request(
        method, url, headers={"Authorization": f"Bearer {token}"}, **kw
    ) as resp:
        body = await resp.json(content_type=None)
        assert resp.status < 300, (resp.status, body)
        return body


async def leader_of(session: aiohttp.ClientSession, url: str) -> str | None:
    with contextlib.suppress(aiohttp.ClientError, AssertionError):
        status = await call(session, "GET", f"{url}/api/v1/cluster/status")
        return status["leader"]  # type: ignore[no-any-return]
    return None


async def wait_for_leader(session: aiohttp.ClientSession, url: str, name: str) -> None:
    async with asyncio.timeout(30):
        while await leader_of(session, url) != name:
            await asyncio.sleep(0.1)


def per_job(allocs: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in allocs:
        out[a["job_id"]] = out.get(a["job_id"], 0) + 1
    return out


def job_spec(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "service",
        "count": COUNT,
        "task": {"driver": "fake", "argv": ["sleep"], "memory_mb": 128},
    }


async def test_a_leader_killed_mid_burst_loses_and_duplicates_no_work(
    pg_dsn: str, redis_url: str
) -> None:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        coordinator(pg_dsn, redis_url, "coord-a") as (a_url, a_proc),
    ):
        await wait_for_leader(session, a_url, "coord-a")
        async with coordinator(pg_dsn, redis_url, "coord-b") as (b_url, _):
            async with asyncio.timeout(30):
                while await leader_of(session, b_url) is None:  # b serves
                    await asyncio.sleep(0.1)
            reg = {
                "name": "n1",
                "resources": {"cpu_millicores": 400_000, "memory_mb": 64_000, "disk_mb": 10**6},
                "drivers": ["fake"],
            }
            node = (await call(session, "POST", f"{b_url}/api/v1/agent/register", AGENT, json=reg))[
                "node"
            ]

            acknowledged: list[str] = []
            a_answered = asyncio.Event()

            async def submit(url: str, name: str) -> None:
                with contextlib.suppress(aiohttp.ClientError):  # a is killed under some
                    out = await call(session, "POST", f"{url}/api/v1/jobs", json=job_spec(name))
                    acknowledged.append(out["job"]["id"])
                    if url == a_url:
                        a_answered.set()

            async def kill_a_once_it_answers() -> None:
                await a_answered.wait()  # a is now planning what it stored
                a_proc.send_signal(signal.SIGKILL)
                await a_proc.wait()

            await asyncio.gather(
                kill_a_once_it_answers(),
                *(
                    submit(url, f"{who}-{i}")
                    for i in range(JOBS_PER_COORDINATOR)
                    for url, who in ((a_url, "a"), (b_url, "b"))
                ),
            )
            assert a_proc.returncode == -signal.SIGKILL
            await wait_for_leader(session, b_url, "coord-b")

            # Everything stored is placed in the end, acknowledged or not: a submit that a
            # stored before the kill but could not answer is still a job.
            jobs = await call(session, "GET", f"{b_url}/api/v1/jobs")
            assert set(acknowledged) <= {j["id"] for j in jobs}
            assert len(acknowledged) >= JOBS_PER_COORDINATOR  # b answered all of its own
            wanted = {j["id"]: COUNT for j in jobs}
            async with asyncio.timeout(60):
                while (
                    per_job(allocs := await call(session, "GET", f"{b_url}/api/v1/allocations"))
                    != wanted
                ):
                    await asyncio.sleep(0.2)
            await asyncio.sleep(1.5)  # an evaluation still going would place a duplicate now
            allocs = await call(session, "GET", f"{b_url}/api/v1/allocations")
    assert per_job(allocs) == wanted
    assert all(a["node_id"] == node["id"] and a["desired_status"] == "run" for a in allocs)
    indexes: dict[str, list[int]] = {}
    for a in allocs:
        indexes.setdefault(a["job_id"], []).append(a["index"])
    assert all(sorted(i) == list(range(COUNT)) for i in indexes.values())
    ips = [a["ip"] for a in allocs]
    assert None not in ips and len(set(ips)) == len(ips)


# Holds every change of an evaluation's status while the test holds advisory lock 4242: the
# leader's plans commit, its bookkeeping (the evaluations' outcomes) waits.
HOLD_OUTCOMES = """
CREATE FUNCTION test_hold_outcomes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(4242);
    RETURN NEW;
END $$;
CREATE TRIGGER test_hold_outcomes BEFORE UPDATE ON evaluations
    FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION test_hold_outcomes();
"""


async def test_a_leader_killed_between_its_plans_and_their_outcomes_places_nothing_twice(
    pg_dsn: str, redis_url: str
) -> None:
    # The window a crash can hit between the two writes of an evaluation round: the
    # allocations are committed, the evaluations still read pending. The next leader
    # evaluates them again and must find the placements made, not make them again.
    db = await asyncpg.connect(pg_dsn)
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        coordinator(pg_dsn, redis_url, "coord-a") as (a_url, a_proc),
    ):
        try:
            await wait_for_leader(session, a_url, "coord-a")  # a has migrated the schema
            await db.execute(HOLD_OUTCOMES)
            await db.execute("SELECT pg_advisory_lock(4242)")
            reg = {
                "name": "n1",
                "resources": {"cpu_millicores": 400_000, "memory_mb": 64_000, "disk_mb": 10**6},
                "drivers": ["fake"],
            }
            await call(session, "POST", f"{a_url}/api/v1/agent/register", AGENT, json=reg)
            jobs = await asyncio.gather(
                *(
                    call(session, "POST", f"{a_url}/api/v1/jobs", json=job_spec(f"j{i}"))
                    for i in range(20)
                )
            )
            wanted = {out["job"]["id"]: COUNT for out in jobs}
            async with asyncio.timeout(30):
                while per_job(await call(session, "GET", f"{a_url}/api/v1/allocations")) != wanted:
                    await asyncio.sleep(0.1)
            pending = await db.fetchval("SELECT count(*) FROM evaluations WHERE status = 'pending'")
            assert pending >= len(jobs)  # placed, and not yet recorded as evaluated
            a_proc.send_signal(signal.SIGKILL)
            await a_proc.wait()
        finally:
            await db.execute("SELECT pg_advisory_unlock(4242)")
        async with coordinator(pg_dsn, redis_url, "coord-b") as (b_url, _):
            await wait_for_leader(session, b_url, "coord-b")
            async with asyncio.timeout(30):  # b evaluates them again
                while await db.fetchval(
                    "SELECT count(*) FROM evaluations WHERE status = 'pending'"
                ):
                    await asyncio.sleep(0.1)
            allocs = await call(session, "GET", f"{b_url}/api/v1/allocations")
    await db.close()
    assert per_job(allocs) == wanted
