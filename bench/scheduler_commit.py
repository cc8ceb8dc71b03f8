"""Scheduler + apply_plan committed to Postgres, and coordinator memory with many nodes.

    .venv/bin/python -m bench.scheduler_commit --nodes 10000 --jobs 1000 --count 100

Starts its own Postgres (fsync on, like production) and Redis in a temp dir, registers the
nodes, submits the jobs, then for each job: schedule (pure, against the in-memory snapshot the
evaluator keeps) + store.apply_plan (one transaction, capacity re-checked under row locks).
Then starts a real `mxvm coordinator` process on that database and reports its RSS after it
has served the node list and evaluated a job against all the nodes.
Last line: `placements_per_s: N` (scheduler + commit).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import psutil

from bench.scheduler import build_cluster, build_jobs
from mxvm.embedded import EmbeddedPostgres, EmbeddedRedis
from mxvm.models import ClusterSnapshot, JobSpec, NodeRegistration, Plan, PlanResult
from mxvm.scheduler import schedule
from mxvm.store import Store

POOL = "10.0.0.0/8"


def record_committed(snapshot: ClusterSnapshot, plan: Plan, result: PlanResult) -> None:
    """Fold what the store committed into the in-memory snapshot."""
    committed = set(result.committed)
    for a in plan.placements:
        if a.id in committed:
            snapshot.account(a)


async def _setup(store: Store, n_nodes: int, n_jobs: int, count: int) -> list[tuple[str, JobSpec]]:
    regs = [
        NodeRegistration(
            name=n.name,
            resources=n.resources,
            reserved=n.reserved,
            drivers=n.drivers,
            attributes=n.attributes,
        )
        for n in build_cluster(n_nodes).nodes
    ]
    for i in range(0, len(regs), 2000):
        await store.register_nodes(regs[i : i + 2000], subnet_pool=POOL, subnet_prefix=24)
    jobs = []
    for j in build_jobs(n_jobs, count):
        spec = JobSpec.model_validate(j.model_dump(include=set(JobSpec.model_fields)))
        job, _ = await store.create_job(spec)
        jobs.append((job.id, spec))
    return jobs


async def _schedule_and_commit(store: Store, jobs: list[tuple[str, JobSpec]]) -> dict[str, float]:
    t0 = time.perf_counter()
    snapshot = await store.snapshot()
    load_s = time.perf_counter() - t0
    ids = itertools.count()
    now = datetime.now(UTC)
    sched_s = commit_s = 0.0
    committed = unplaced = 0
    for job_id, spec in jobs:
        job = (await store.get_job(job_id)).model_copy(update={"count": spec.count})
        t1 = time.perf_counter()
        plan = schedule(
            snapshot, job, [], eval_id=f"e-{job_id}", now=now, new_id=lambda: f"a-{next(ids)}"
        )
        t2 = time.perf_counter()
        result = await store.apply_plan(plan, epoch=1)
        t3 = time.perf_counter()
        record_committed(snapshot, plan, result)
        sched_s += t2 - t1
        commit_s += t3 - t2
        committed += len(result.committed)
        unplaced += plan.unplaced + len(plan.placements) - len(result.committed)
    return {
        "snapshot_load_s": load_s,
        "schedule_s": sched_s,
        "commit_s": commit_s,
        "committed": committed,
        "unplaced": unplaced,
    }


async def _coordinator_rss(dsn: str, redis_url: str) -> float:
    port = 18470
    env = {
        **os.environ,
        "MXVM_DATABASE_URL": dsn,
        "MXVM_REDIS_URL": redis_url,
        "MXVM_ADMIN_TOKEN": "bench",
        "MXVM_LISTEN": f"127.0.0.1:{port}",
        "MXVM_LOG_LEVEL": "WARNING",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mxvm", "coordinator", env=env
    )
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": "Bearer bench"}
    try:
        async with aiohttp.ClientSession(headers=headers) as s:
            for _ in range(200):
                try:
                    async with s.get(url + "/ready") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            async with s.get(url + "/api/v1/nodes") as r:
                assert r.status == 200 and len(await r.json()) > 0
            spec = {"name": "rss-probe", "task": {"driver": "fake", "argv": ["true"]}}
            async with s.post(url + "/api/v1/jobs", json=spec) as r:
                eval_id = (await r.json())["evaluation"]["id"]
            for _ in range(600):
                async with s.get(f"{url}/api/v1/evaluations/{eval_id}") as r:
                    if (await r.json())["status"] != "pending":
                        break
                await asyncio.sleep(0.1)
        return psutil.Process(proc.pid).memory_info().rss / 2**20
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


def _tmpdir() -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="mxvm-bench-"))
    tmp.chmod(0o755)  # the embedded Postgres runs as another user
    return tmp


async def main_async(args: argparse.Namespace) -> None:
    tmp = _tmpdir()
    pg = EmbeddedPostgres(tmp / "pg", fsync=not args.no_fsync)
    rd = EmbeddedRedis(tmp / "redis")
    try:
        dsn = await pg.start()
        redis_url = await rd.start()
        store = await Store.connect(dsn)
        await store.migrate()
        t0 = time.perf_counter()
        jobs = await _setup(store, args.nodes, args.jobs, args.count)
        print(f"setup_s: {time.perf_counter() - t0:.1f} (nodes and jobs written to Postgres)")
        r = await _schedule_and_commit(store, jobs)
        await store.close()
        total = r["schedule_s"] + r["commit_s"]
        print(
            f"nodes: {args.nodes} jobs: {args.jobs} count: {args.count} fsync: {not args.no_fsync}"
        )
        print(f"snapshot_load_s: {r['snapshot_load_s']:.2f}")
        print(f"committed: {r['committed']:.0f} unplaced: {r['unplaced']:.0f}")
        print(f"schedule_s: {r['schedule_s']:.2f} commit_s: {r['commit_s']:.2f}")
        print(f"pure_placements_per_s: {r['committed'] / r['schedule_s']:.0f}")
        print(f"commit_placements_per_s: {r['committed'] / r['commit_s']:.0f}")
        if not args.skip_rss:
            print(f"coordinator_rss_mib: {await _coordinator_rss(dsn, redis_url):.0f}")
        print(f"placements_per_s: {r['committed'] / total:.0f}")
    finally:
        await rd.stop()
        await pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--nodes", type=int, default=10_000)
    p.add_argument("--jobs", type=int, default=1_000)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--no-fsync", action="store_true", help="Postgres without fsync (not prod)")
    p.add_argument("--skip-rss", action="store_true")
    asyncio.run(main_async(p.parse_args(argv)))


if __name__ == "__main__":
    main()
