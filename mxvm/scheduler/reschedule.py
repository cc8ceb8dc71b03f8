"""Whether, and when, the latest allocation of a slot (an index, or a node for system jobs)
is replaced, following the job's ReschedulePolicy (Nomad's reschedule tracker).

A reschedule is a replacement of a FAILED (or, for service and system jobs, COMPLETE)
allocation; replacements of LOST allocations are not counted, since losing a node is not the
job's fault. Within `interval_s` before now at most `attempts` reschedules happen (unless
`unlimited`), and a replacement waits `delay_s` after the failed allocation last changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mxvm.models.allocation import Allocation, ClientStatus, DesiredStatus
from mxvm.models.job import Job, JobType

# Job types whose completed allocations stay completed.
RUN_TO_COMPLETION = frozenset({JobType.BATCH, JobType.SYSBATCH})


@dataclass(frozen=True, slots=True)
class Decision:
    place: bool
    previous: Allocation | None = None  # the allocation the new one replaces
    attempts: int = 0  # reschedule_attempts of the new allocation
    not_before: datetime | None = None  # set when a replacement waits for its delay


DONE = Decision(place=False)
FRESH = Decision(place=True)


def utc(when: datetime) -> datetime:
    """Naive datetimes are taken as UTC, so that naive and aware ones can be compared."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _key(alloc: Allocation) -> tuple[float, int]:
    created = utc(alloc.created_at).timestamp() if alloc.created_at else float("-inf")
    return created, alloc.reschedule_attempts


def latest(history: Sequence[Allocation]) -> Allocation | None:
    """The newest allocation of a slot: one no other replaced, the most recent of those."""
    replaced = {a.previous_allocation for a in history}
    heads = [a for a in history if a.id not in replaced] or list(history)
    return max(heads, key=_key, default=None)


def _reschedules_since(history: Sequence[Allocation], since: datetime) -> int:
    by_id = {a.id: a for a in history}
    count = 0
    for alloc in history:
        prev = by_id.get(alloc.previous_allocation or "")
        if prev is None or prev.client_status == ClientStatus.LOST:
            continue
        when = alloc.created_at or prev.modified_at
        # Without a timestamp, count it: better one reschedule too few than a crash loop.
        if when is None or utc(when) >= since:
            count += 1
    return count


def _policy(job: Job, last: Allocation, history: Sequence[Allocation], now: datetime) -> Decision:
    policy = job.reschedule
    if not policy.unlimited:
        since = utc(now) - timedelta(seconds=policy.interval_s)
        if _reschedules_since(history, since) >= policy.attempts:
            return DONE
    changed = last.modified_at or last.created_at
    if changed is not None:
        due = utc(changed) + timedelta(seconds=policy.delay_s)
        if due > utc(now):
            return Decision(place=False, not_before=due)
    return Decision(place=True, previous=last, attempts=last.reschedule_attempts + 1)


def decide(job: Job, history: Sequence[Allocation], now: datetime) -> Decision:
    """What to do for a slot that has no live allocation; `history` is all of its allocations."""
    last = latest(history)
    if last is None or last.desired_status == DesiredStatus.STOP:
        return FRESH  # never placed, or stopped on purpose (e.g. scaled down, then up again)
    status = last.client_status
    if status == ClientStatus.LOST:
        return Decision(place=True, previous=last, attempts=last.reschedule_attempts)
    if status == ClientStatus.COMPLETE and job.type in RUN_TO_COMPLETION:
        return DONE
    if status in (ClientStatus.FAILED, ClientStatus.COMPLETE):
        return _policy(job, last, history, now)
    return FRESH  # desired RUN yet not terminal is live; callers do not ask about those
