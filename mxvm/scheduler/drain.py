"""Which allocations a node's drain stops now (pure: the drainer reads, this decides).

A drain must not take a service down to move it: a service job's allocations leave the node
a few at a time, each batch only while at least `count - migrate.max_parallel` of the job's
allocations are running (anywhere, these included), so the next batch waits for the last
one's replacements to come up. Running batch jobs are left to finish: stopping one loses its
work. Allocations that are not running yet (service or batch) cost nothing to move and go at
once. System jobs go last, once nothing else of the node is live, since the others may depend
on them (Nomad drains in the same order). At the deadline, whatever is left is stopped at once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mxvm.models import JobType

_SYSTEM = (JobType.SYSTEM, JobType.SYSBATCH)


@dataclass(frozen=True, slots=True)
class LiveAlloc:
    """A live allocation on the draining node."""

    id: str
    job_id: str
    job_type: JobType
    running: bool
    stopping: bool = False  # told to stop already (by the drain or otherwise)


@dataclass(frozen=True, slots=True)
class JobAvailability:
    """A service job's wanted allocations, how many may be down for a drain at once, and how
    many of its allocations meant to run are running now (on any node)."""

    count: int
    max_parallel: int
    running: int


def drain_stops(
    allocs: Iterable[LiveAlloc],
    jobs: Mapping[str, JobAvailability],
    *,
    past_deadline: bool,
    ignore_system_jobs: bool,
) -> list[str]:
    """The allocations to stop now, of the node's live ones."""
    allocs = list(allocs)
    # Still live there (meant to run or stopping): holds the system jobs back.
    others_live = any(a.job_type not in _SYSTEM for a in allocs)
    stops: list[str] = []
    running_by_job: dict[str, list[LiveAlloc]] = defaultdict(list)
    for c in allocs:
        if c.stopping or (c.job_type in _SYSTEM and ignore_system_jobs):
            continue
        if past_deadline:
            stops.append(c.id)
        elif c.job_type in _SYSTEM:
            if c.job_type == JobType.SYSTEM and not others_live:
                stops.append(c.id)
            # sysbatch: left to finish until the deadline, as batch jobs are
        elif not c.running:
            stops.append(c.id)  # nothing started yet: nothing lost by moving it
        elif c.job_type == JobType.SERVICE:
            running_by_job[c.job_id].append(c)
        # a running batch job: left to finish until the deadline
    for job_id, running in running_by_job.items():
        job = jobs[job_id]
        budget = job.running - (job.count - job.max_parallel)
        stops.extend(c.id for c in sorted(running, key=lambda c: c.id)[: max(0, budget)])
    return sorted(stops)
