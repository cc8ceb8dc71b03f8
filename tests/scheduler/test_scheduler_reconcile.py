"""Reconcile and reschedule policy, by example."""

from __future__ import annotations

from datetime import timedelta

from mxvm.models import (
    ClientStatus,
    ClusterSnapshot,
    Constraint,
    DesiredStatus,
    Eligibility,
    JobType,
    ReschedulePolicy,
)

from .cases import NOW, make_alloc, make_job, make_node, run

FAILED, COMPLETE, LOST = ClientStatus.FAILED, ClientStatus.COMPLETE, ClientStatus.LOST


def _cluster(n: int = 3) -> ClusterSnapshot:
    return ClusterSnapshot(nodes=[make_node(i) for i in range(n)])


def test_failed_allocation_is_replaced_and_linked() -> None:
    job = make_job(count=1)
    plan = run(_cluster(), job, [make_alloc("a1", status=FAILED, attempts=0)])
    (alloc,) = plan.placements
    assert (alloc.index, alloc.previous_allocation, alloc.reschedule_attempts) == (0, "a1", 1)
    assert alloc.desired_status == DesiredStatus.RUN
    assert alloc.client_status == ClientStatus.PENDING
    assert plan.next_eval_at is None


def test_reschedule_attempts_are_limited_within_the_interval() -> None:
    job = make_job(count=1, reschedule=ReschedulePolicy(attempts=1, interval_s=86400))
    history = [
        make_alloc("a1", status=FAILED, age_s=7200),
        make_alloc("a2", status=FAILED, age_s=1800, previous="a1", attempts=1),
    ]
    plan = run(_cluster(), job, history)
    assert plan.placements == []
    assert plan.unplaced == 0  # given up on, not waiting for capacity
    assert plan.next_eval_at is None


def test_reschedules_older_than_the_interval_do_not_count() -> None:
    job = make_job(count=1, reschedule=ReschedulePolicy(attempts=1, interval_s=3600))
    history = [
        make_alloc("a1", status=FAILED, age_s=3 * 86400),
        make_alloc("a2", status=FAILED, age_s=2 * 86400, previous="a1", attempts=1),
    ]
    (alloc,) = run(_cluster(), job, history).placements
    assert (alloc.previous_allocation, alloc.reschedule_attempts) == ("a2", 2)


def test_unlimited_reschedules() -> None:
    job = make_job(count=1, reschedule=ReschedulePolicy(attempts=0, unlimited=True, delay_s=0))
    history = [make_alloc("a0", status=FAILED, age_s=600)]
    for k in range(1, 6):
        history.append(
            make_alloc(f"a{k}", status=FAILED, age_s=600 - k, previous=f"a{k - 1}", attempts=k)
        )
    (alloc,) = run(_cluster(), job, history).placements
    assert (alloc.previous_allocation, alloc.reschedule_attempts) == ("a5", 6)


def test_zero_attempts_never_reschedules() -> None:
    job = make_job(count=1, reschedule=ReschedulePolicy(attempts=0))
    assert run(_cluster(), job, [make_alloc("a1", status=FAILED)]).placements == []


def test_delay_defers_the_replacement_to_next_eval_at() -> None:
    job = make_job(count=2, reschedule=ReschedulePolicy(attempts=5, delay_s=30))
    history = [
        make_alloc("a0", 0, status=FAILED, age_s=10),  # changed at NOW: due at NOW + 30 s
        make_alloc("a1", 1, status=FAILED, age_s=70),  # changed at NOW - 10 s: due at NOW + 20 s
    ]
    plan = run(_cluster(), job, history)
    assert plan.placements == []
    assert plan.unplaced == 0
    assert plan.next_eval_at == NOW + timedelta(seconds=20)
    later = run(_cluster(), job, history, now=NOW + timedelta(seconds=20))
    assert [a.previous_allocation for a in later.placements] == ["a1"]
    assert later.next_eval_at == NOW + timedelta(seconds=30)


def test_lost_allocations_are_always_replaced() -> None:
    job = make_job(count=1, reschedule=ReschedulePolicy(attempts=0, delay_s=600))
    (alloc,) = run(_cluster(), job, [make_alloc("a1", status=LOST, age_s=5, attempts=2)]).placements
    # Losing a node is not the job's fault: no delay, no attempt counted.
    assert (alloc.previous_allocation, alloc.reschedule_attempts) == ("a1", 2)


def test_lost_replacements_do_not_use_up_attempts() -> None:
    job = make_job(count=1, reschedule=ReschedulePolicy(attempts=1, delay_s=0))
    history = [
        make_alloc("a1", status=LOST, age_s=600),
        make_alloc("a2", status=FAILED, age_s=300, previous="a1"),
    ]
    (alloc,) = run(_cluster(), job, history).placements
    assert (alloc.previous_allocation, alloc.reschedule_attempts) == ("a2", 1)


def test_batch_complete_is_never_rerun_but_service_complete_is() -> None:
    batch = make_job(type=JobType.BATCH, count=2)
    history = [make_alloc("a0", 0, status=COMPLETE, job=batch)]
    plan = run(_cluster(), batch, history)
    assert [a.index for a in plan.placements] == [1]
    service = make_job(type=JobType.SERVICE, count=2)
    history = [make_alloc("a0", 0, status=COMPLETE, job=service)]
    plan = run(_cluster(), service, history)
    assert sorted((a.index, a.previous_allocation) for a in plan.placements) == [
        (0, "a0"),
        (1, None),
    ]


def test_scale_down_stops_the_excess() -> None:
    job = make_job(count=3)
    live = [make_alloc(f"a{i}", i) for i in range(5)]
    plan = run(_cluster(), job, live)
    assert plan.placements == []
    assert sorted((s.alloc_id, s.description) for s in plan.stops) == [
        ("a3", "scaled down"),
        ("a4", "scaled down"),
    ]


def test_scale_up_after_scale_down_places_fresh() -> None:
    job = make_job(count=2)
    history = [
        make_alloc("a0", 0),
        make_alloc("a1", 1, status=COMPLETE, desired=DesiredStatus.STOP),
    ]
    (alloc,) = run(_cluster(), job, history).placements
    assert (alloc.index, alloc.previous_allocation, alloc.reschedule_attempts) == (1, None, 0)


def test_live_allocations_satisfy_the_job() -> None:
    job = make_job(count=2)
    plan = run(_cluster(), job, [make_alloc("a0", 0), make_alloc("a1", 1)])
    assert plan.empty and plan.unplaced == 0 and plan.failures == {}


def test_duplicate_live_allocations_are_reduced_to_one() -> None:
    job = make_job(count=1)
    plan = run(_cluster(), job, [make_alloc("old", 0, age_s=600), make_alloc("new", 0, age_s=60)])
    assert [(s.alloc_id, s.description) for s in plan.stops] == [
        ("old", "duplicate allocation for its slot")
    ]
    assert plan.placements == []


def test_job_stop_stops_every_live_allocation() -> None:
    job = make_job(count=3, stop=True)
    history = [
        make_alloc("running", 0),
        make_alloc("pending", 1, status=ClientStatus.PENDING),
        make_alloc("failed", 2, status=FAILED),
        make_alloc("stopping", 2, desired=DesiredStatus.STOP),
    ]
    plan = run(_cluster(), job, history)
    assert sorted(s.alloc_id for s in plan.stops) == ["pending", "running"]
    assert {s.description for s in plan.stops} == {"job stopped"}
    assert plan.placements == [] and plan.unplaced == 0


def test_system_job_stops_where_the_node_no_longer_matches() -> None:
    nodes = [
        make_node(0, attributes={"pool": "a"}),
        make_node(1, attributes={"pool": "b"}),
        make_node(2, attributes={"pool": "a"}, eligibility=Eligibility.INELIGIBLE),
        make_node(3, attributes={"pool": "a"}),
    ]
    job = make_job(type=JobType.SYSTEM, constraints=[Constraint(attribute="attr.pool", value="a")])
    history = [
        make_alloc("on0", 0, node_id="node-000", job=job),
        make_alloc("on1", 1, node_id="node-001", job=job),
        make_alloc("on2", 2, node_id="node-002", job=job),
    ]
    plan = run(ClusterSnapshot(nodes=nodes), job, history)
    assert [s.alloc_id for s in plan.stops] == ["on1"]  # on2: drain handles ineligible nodes
    assert [(a.node_id, a.index) for a in plan.placements] == [("node-003", 3)]
    assert plan.failures == {"constraint": 1, "ineligible": 1}


def test_sysbatch_complete_is_not_rerun_and_system_failed_is_replaced() -> None:
    nodes = [make_node(0), make_node(1)]
    sysbatch = make_job(type=JobType.SYSBATCH)
    history = [make_alloc("done", 0, node_id="node-000", status=COMPLETE, job=sysbatch)]
    plan = run(ClusterSnapshot(nodes=nodes), sysbatch, history)
    assert [a.node_id for a in plan.placements] == ["node-001"]
    system = make_job(type=JobType.SYSTEM)
    history = [make_alloc("bad", 0, node_id="node-000", status=FAILED, job=system)]
    plan = run(ClusterSnapshot(nodes=nodes), system, history)
    assert sorted((a.node_id, a.previous_allocation) for a in plan.placements) == [
        ("node-000", "bad"),
        ("node-001", None),
    ]


def test_naive_timestamps_are_taken_as_utc() -> None:
    job = make_job(count=1, reschedule=ReschedulePolicy(attempts=3, delay_s=30))
    failed = make_alloc("a1", status=FAILED, age_s=10)
    naive = failed.model_copy(
        update={
            "created_at": failed.created_at.replace(tzinfo=None) if failed.created_at else None,
            "modified_at": failed.modified_at.replace(tzinfo=None) if failed.modified_at else None,
        }
    )
    plan = run(_cluster(), job, [naive])
    assert plan.next_eval_at == NOW + timedelta(seconds=30)
    assert run(_cluster(), job, [naive], now=NOW.replace(tzinfo=None)).next_eval_at == (
        NOW + timedelta(seconds=30)
    )
