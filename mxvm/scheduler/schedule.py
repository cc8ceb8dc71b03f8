"""schedule(): the pure pipeline from a cluster snapshot and a job to a Plan.

reconcile (what to place / stop) → for each placement: candidate walk + filters + scorer →
Allocation. service / batch jobs choose among up to `limit` feasible nodes (candidates.py);
system / sysbatch jobs go to every ready, eligible, matching node. No I/O, no clock, and the
only randomness is a PRNG seeded from the evaluation id, so equal inputs give equal plans.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime

from mxvm.models.allocation import Allocation
from mxvm.models.job import Job, JobType
from mxvm.models.plan import Plan
from mxvm.models.snapshot import ClusterSnapshot
from mxvm.scheduler.candidates import CandidatePool
from mxvm.scheduler.config import SchedulerConfig, candidate_limit
from mxvm.scheduler.filters import first_rejection
from mxvm.scheduler.placement import Context, algorithm
from mxvm.scheduler.reconcile import Changes, reconcile_count, reconcile_nodes, stop_all

PER_NODE_TYPES = frozenset({JobType.SYSTEM, JobType.SYSBATCH})


def _plan(
    job: Job,
    eval_id: str,
    changes: Changes,
    placements: list[Allocation] | None = None,
    failures: dict[str, int] | None = None,
    unplaced: int = 0,
) -> Plan:
    # Every part is already a validated model or built from one: skip re-validation.
    return Plan.model_construct(
        eval_id=eval_id,
        job_id=job.id,
        placements=placements or [],
        stops=changes.stops,
        failures=failures or {},
        unplaced=unplaced,
        next_eval_at=changes.next_eval_at,
    )


def _place_count(ctx: Context, allocations: Sequence[Allocation], now: datetime) -> Plan:
    """service / batch: fill indices 0..count-1, best of `limit` candidates each."""
    changes = reconcile_count(ctx.job, allocations, now)
    if not changes.place:
        return _plan(ctx.job, ctx.eval_id, changes)
    n = len(ctx.states)
    pool = CandidatePool(
        n,
        candidate_limit(ctx.config, n),
        ctx.rng,
        ctx.probe,
        rotate=algorithm(ctx.job, ctx.config) == "spread",
    )
    placed: list[Allocation] = []
    for i, placement in enumerate(changes.place):
        pos = pool.select()
        if pos is None:
            # Every placement of a job asks for the same thing: the rest cannot fit either.
            unplaced = len(changes.place) - i
            return _plan(ctx.job, ctx.eval_id, changes, placed, pool.failures(), unplaced)
        placed.append(ctx.place(ctx.states[pos], placement))
        pool.placed(pos)
    return _plan(ctx.job, ctx.eval_id, changes, placed)


def _place_per_node(ctx: Context, allocations: Sequence[Allocation], now: datetime) -> Plan:
    """system / sysbatch: one allocation on every ready, eligible node that suits the job.

    failures counts each node that fails the static filters (for information: those nodes are
    not targets) and each target node the allocation does not fit on (those are unplaced).
    """
    nodes = ctx.states
    failures: Counter[str] = Counter()
    targets: dict[str, int] = {}
    position: dict[str, int] = {}
    mismatched: set[str] = set()
    by_id = sorted(range(len(nodes)), key=lambda pos: nodes[pos].node.id)
    for index, pos in enumerate(by_id):
        state = nodes[pos]
        reason = first_rejection(ctx.available, state)
        if reason is None:
            reason = first_rejection(ctx.matches, state)
            if reason is not None:
                mismatched.add(state.node.id)
        if reason is None:
            targets[state.node.id] = index
            position[state.node.id] = pos
        else:
            failures[reason] += 1
    changes = reconcile_nodes(ctx.job, allocations, targets, mismatched, now)
    placed: list[Allocation] = []
    for placement in changes.place:
        state = nodes[position[placement.node_id or ""]]
        reason = first_rejection(ctx.dynamic, state)
        if reason is None:
            placed.append(ctx.place(state, placement))
        else:
            failures[reason] += 1
    unplaced = len(changes.place) - len(placed)
    return _plan(ctx.job, ctx.eval_id, changes, placed, dict(failures), unplaced)


def schedule(
    snapshot: ClusterSnapshot,
    job: Job,
    allocations: Sequence[Allocation],
    *,
    eval_id: str,
    now: datetime,
    new_id: Callable[[], str],
    config: SchedulerConfig = SchedulerConfig(),  # noqa: B008 - frozen, safe to share
) -> Plan:
    """Plan one evaluation of `job` against `snapshot`.

    `snapshot.usage` holds what the live allocations of all jobs (this one's included) take on
    each node; `allocations` is every allocation of this job, terminal ones included, which is
    what reconcile and the reschedule policy read.
    """
    if job.stop:
        return _plan(job, eval_id, Changes(stops=stop_all(allocations, "job stopped")))
    ctx = Context.build(snapshot, job, eval_id, new_id, config)
    if job.type in PER_NODE_TYPES:
        return _place_per_node(ctx, allocations, now)
    return _place_count(ctx, allocations, now)
