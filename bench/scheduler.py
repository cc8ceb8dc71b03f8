"""Scheduler benchmark: many jobs onto a large simulated cluster, one evaluation after another.

    .venv/bin/python -m bench.scheduler --nodes 10000 --jobs 1000 --count 100

Each plan's placements are added to the snapshot's usage before the next job is scheduled, as
the applier does after committing a plan. Prints figures; the last line is
`placements_per_s: N` (the pure scheduler for now).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mxvm.models import (
    ClusterSnapshot,
    Constraint,
    Job,
    JobType,
    Node,
    NodeStatus,
    NodeUsage,
    Operator,
    Plan,
    Resources,
    Task,
)
from mxvm.scheduler import SchedulerConfig, schedule

ARCHES = ("x86_64", "x86_64", "x86_64", "aarch64")
ZONES = ("zone-a", "zone-b", "zone-c", "zone-d")


def build_cluster(n_nodes: int) -> ClusterSnapshot:
    """n_nodes ready nodes of 32 cores and 128 GiB, with a few attribute variants."""
    nodes = [
        Node(
            id=f"node-{i:05d}",
            name=f"node-{i:05d}",
            status=NodeStatus.READY,
            resources=Resources(cpu_millicores=32_000, memory_mb=131_072, disk_mb=1_000_000),
            reserved=Resources(cpu_millicores=1_000, memory_mb=2_048),
            drivers=["qemu", "fake"],
            attributes={"cpu.arch": ARCHES[i % len(ARCHES)], "zone": ZONES[i % len(ZONES)]},
        )
        for i in range(n_nodes)
    ]
    return ClusterSnapshot(nodes=nodes, usage={n.id: NodeUsage() for n in nodes})


def build_jobs(n_jobs: int, count: int) -> list[Job]:
    """Small service and batch jobs; every fourth is constrained to x86_64 nodes."""
    jobs = []
    for i in range(n_jobs):
        constraints = [Constraint(attribute="attr.cpu.arch", value="x86_64")] if i % 4 == 0 else []
        if i % 8 == 1:
            constraints.append(
                Constraint(attribute="attr.zone", operator=Operator.REGEXP, value="^zone-[ab]$")
            )
        jobs.append(
            Job(
                id=f"job-{i:05d}",
                name=f"agent-{i:05d}",
                type=JobType.SERVICE if i % 2 else JobType.BATCH,
                count=count,
                scheduling="spread" if i % 10 == 9 else "binpack",
                task=Task(argv=["agent"], vcpus=1 + i % 2, memory_mb=512 * (1 + i % 3)),
                constraints=constraints,
            )
        )
    return jobs


def apply_placements(snapshot: ClusterSnapshot, plan: Plan) -> None:
    """Account a committed plan's placements in the snapshot, as the applier would."""
    for alloc in plan.placements:
        snapshot.account(alloc)


@dataclass(slots=True)
class Result:
    placements: int
    unplaced: int
    job_seconds: list[float]  # scheduler wall time per job (excluding apply_placements)
    cpu_seconds: float = 0.0  # the same, in process CPU time: robust to a busy machine

    @property
    def seconds(self) -> float:
        return sum(self.job_seconds)


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def plan_job(
    snapshot: ClusterSnapshot, job: Job, new_id: Callable[[], str], config: SchedulerConfig
) -> Plan:
    """One evaluation of `job`, as the coordinator's evaluator would run it."""
    return schedule(
        snapshot, job, [], eval_id=f"eval-{job.id}", now=NOW, new_id=new_id, config=config
    )


def run_pure(
    snapshot: ClusterSnapshot, jobs: Sequence[Job], config: SchedulerConfig | None = None
) -> Result:
    """Schedule every job in turn, feeding each plan back into the snapshot.

    A store mode does the same with `await store.apply_plan(plan, epoch)` between plan_job()
    and apply_placements(), timing both.
    """
    config = config or SchedulerConfig()
    ids = itertools.count()

    def new_id() -> str:
        return f"alloc-{next(ids):08d}"

    result = Result(placements=0, unplaced=0, job_seconds=[])
    for job in jobs:
        t0, c0 = time.perf_counter(), time.process_time()
        plan = plan_job(snapshot, job, new_id, config)
        result.job_seconds.append(time.perf_counter() - t0)
        result.cpu_seconds += time.process_time() - c0
        result.placements += len(plan.placements)
        result.unplaced += plan.unplaced
        apply_placements(snapshot, plan)
    return result


def _nodes_used(snapshot: ClusterSnapshot) -> int:
    return sum(1 for u in snapshot.usage.values() if u.alloc_count)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=1_000)
    parser.add_argument("--count", type=int, default=100, help="allocations per job")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    snapshot = build_cluster(args.nodes)
    jobs = build_jobs(args.jobs, args.count)
    print(f"setup_s: {time.perf_counter() - t0:.2f}")
    result = run_pure(snapshot, jobs)
    per_job = sorted(result.job_seconds)
    rate = result.placements / result.seconds if result.seconds else 0.0
    print(f"nodes: {args.nodes} jobs: {args.jobs} count: {args.count}")
    print(f"total_placements: {result.placements} unplaced: {result.unplaced}")
    print(f"nodes_used: {_nodes_used(snapshot)}")
    print(f"pure_seconds: {result.seconds:.3f} (cpu: {result.cpu_seconds:.3f})")
    cpu_rate = result.placements / result.cpu_seconds if result.cpu_seconds else 0.0
    print(f"pure_cpu_placements_per_s: {cpu_rate:.0f}")
    if per_job:
        print(f"ms_per_job_mean: {statistics.fmean(per_job) * 1e3:.3f}")
        print(f"ms_per_job_p99: {per_job[int(0.99 * (len(per_job) - 1))] * 1e3:.3f}")
    print(f"pure_placements_per_s: {rate:.0f}")
    print(f"placements_per_s: {rate:.0f}")


if __name__ == "__main__":
    main()
