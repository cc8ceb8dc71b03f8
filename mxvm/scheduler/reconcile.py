"""What an evaluation should place, stop and keep, from the job and its allocations (pure).

service / batch: slots are the indices 0..count-1. system / sysbatch: slots are the target
nodes (ready, eligible and passing the static filters), each with a fixed index. A slot with a
live allocation (desired RUN, not terminal) is satisfied; otherwise reschedule.decide() says
whether to place, to wait (next_eval_at) or that the slot is done.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from mxvm.models.allocation import Allocation, DesiredStatus
from mxvm.models.job import Job
from mxvm.models.plan import AllocStop
from mxvm.scheduler.reschedule import decide, latest


@dataclass(frozen=True, slots=True)
class Placement:
    index: int
    previous: Allocation | None = None
    attempts: int = 0
    node_id: str | None = None  # system jobs: the node the allocation must go to


@dataclass(slots=True)
class Changes:
    place: list[Placement] = field(default_factory=list)
    stops: list[AllocStop] = field(default_factory=list)
    next_eval_at: datetime | None = None

    def wait_until(self, when: datetime) -> None:
        if self.next_eval_at is None or when < self.next_eval_at:
            self.next_eval_at = when


def is_live(alloc: Allocation) -> bool:
    return alloc.desired_status == DesiredStatus.RUN and not alloc.terminal


def stop_all(allocations: Iterable[Allocation], description: str) -> list[AllocStop]:
    return [AllocStop(alloc_id=a.id, description=description) for a in allocations if is_live(a)]


def _keep_one(live: list[Allocation], changes: Changes) -> None:
    """A slot should hold one live allocation; stop any extra ones (the newest is kept)."""
    keep = latest(live)
    changes.stops.extend(
        AllocStop(alloc_id=a.id, description="duplicate allocation for its slot")
        for a in live
        if a is not keep
    )


def _slot(
    job: Job,
    history: list[Allocation],
    changes: Changes,
    now: datetime,
    index: int,
    node_id: str | None = None,
) -> None:
    if not history:  # never placed: the common case of a new job, kept cheap
        changes.place.append(Placement(index, node_id=node_id))
        return
    live = [a for a in history if is_live(a)]
    if live:
        _keep_one(live, changes)
        return
    decision = decide(job, history, now)
    if decision.not_before is not None:
        changes.wait_until(decision.not_before)
    if decision.place:
        changes.place.append(Placement(index, decision.previous, decision.attempts, node_id))


def reconcile_count(job: Job, allocations: Sequence[Allocation], now: datetime) -> Changes:
    """service / batch: keep indices 0..count-1 filled, stop live ones above (scale down)."""
    changes = Changes()
    by_index: dict[int, list[Allocation]] = defaultdict(list)
    for alloc in allocations:
        by_index[alloc.index].append(alloc)
    for index in range(job.count):
        _slot(job, by_index.get(index, []), changes, now, index)
    changes.stops.extend(
        AllocStop(alloc_id=a.id, description="scaled down")
        for a in allocations
        if a.index >= job.count and is_live(a)
    )
    return changes


def reconcile_nodes(
    job: Job,
    allocations: Sequence[Allocation],
    targets: Mapping[str, int],
    mismatched: set[str],
    now: datetime,
) -> Changes:
    """system / sysbatch: one allocation per target node (node id -> index).

    Live allocations on nodes that no longer match the job (driver, constraint, volume) are
    stopped; those on nodes that are down or ineligible are left to the node-lost and drain
    handling, which is what marks them lost or migrates them.
    """
    changes = Changes()
    by_node: dict[str, list[Allocation]] = defaultdict(list)
    for alloc in allocations:
        by_node[alloc.node_id].append(alloc)
    for node_id, index in targets.items():
        _slot(job, by_node.get(node_id, []), changes, now, index, node_id)
    for node_id in sorted(mismatched):  # sorted: the same plan in every process
        changes.stops.extend(stop_all(by_node.get(node_id, []), "node no longer matches the job"))
    return changes
