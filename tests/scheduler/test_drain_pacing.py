"""The drain's pure decision: which allocations on a draining node to stop now."""

from __future__ import annotations

from mxvm.models import JobType
from mxvm.scheduler.drain import JobAvailability, LiveAlloc, drain_stops

SVC, BATCH, SYS, SYSBATCH = JobType.SERVICE, JobType.BATCH, JobType.SYSTEM, JobType.SYSBATCH


def c(
    id_: str, job: str, type_: JobType = SVC, running: bool = True, stopping: bool = False
) -> LiveAlloc:
    return LiveAlloc(id_, job, type_, running, stopping)


def stops(
    cands: list[LiveAlloc],
    jobs: dict[str, JobAvailability] | None = None,
    *,
    past_deadline: bool = False,
    ignore_system_jobs: bool = False,
    others_live: bool = True,
) -> list[str]:
    """`others_live`: the node also has a batch allocation that is stopping (still live)."""
    stopping = [c("other", "job9", BATCH, stopping=True)] if others_live else []
    return drain_stops(
        [*cands, *stopping],
        jobs or {},
        past_deadline=past_deadline,
        ignore_system_jobs=ignore_system_jobs,
    )


def test_a_service_leaves_only_while_enough_of_it_runs() -> None:
    three = [c("a1", "web"), c("a2", "web"), c("a3", "web")]
    # All three running here, max_parallel 1: one may go.
    assert stops(three, {"web": JobAvailability(3, 1, 3)}) == ["a1"]
    # One is already down (stopped, its replacement not yet running): none may go.
    assert stops(three[1:], {"web": JobAvailability(3, 1, 2)}) == []
    # Its replacement runs elsewhere: the next may go.
    assert stops(three[1:], {"web": JobAvailability(3, 1, 3)}) == ["a2"]
    # max_parallel 2 with everything running: two at once.
    assert stops(three, {"web": JobAvailability(3, 2, 3)}) == ["a1", "a2"]
    # More running than wanted (a job scaled down meanwhile) lets more go.
    assert stops(three, {"web": JobAvailability(2, 1, 3)}) == ["a1", "a2"]


def test_a_degraded_service_keeps_its_running_copies_but_moves_the_rest() -> None:
    cands = [c("a1", "web"), c("a2", "web", running=False)]
    # Only a1 runs of count 2: taking it down would leave none. a2 never ran: free to move.
    assert stops(cands, {"web": JobAvailability(2, 1, 1)}) == ["a2"]


def test_running_batch_jobs_are_left_to_finish_until_the_deadline() -> None:
    cands = [c("b1", "job", BATCH), c("b2", "job2", SYSBATCH, running=False)]
    assert stops(cands) == []
    assert stops(cands, past_deadline=True) == ["b1", "b2"]
    # One that has not started yet loses nothing by moving.
    assert stops([*cands, c("b3", "job3", BATCH, running=False)]) == ["b3"]


def test_system_jobs_go_last_or_not_at_all() -> None:
    cands = [c("s1", "sys", SYS)]
    assert stops(cands, others_live=True) == []
    assert stops(cands, others_live=False) == ["s1"]
    assert stops(cands, others_live=False, ignore_system_jobs=True) == []
    assert stops(cands, past_deadline=True, ignore_system_jobs=True) == []


def test_the_deadline_takes_everything_at_once() -> None:
    cands = [c("a1", "web"), c("a2", "web"), c("b1", "job", BATCH), c("s1", "sys", SYS)]
    got = stops(cands, {"web": JobAvailability(2, 1, 2)}, past_deadline=True)
    assert got == ["a1", "a2", "b1", "s1"]
