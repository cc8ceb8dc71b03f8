"""Property tests: random clusters and jobs, invariants that must hold for every plan."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxvm.models import Allocation, ClusterSnapshot, Job, JobType

from .cases import (
    PORT_RANGE,
    Ids,
    assert_not_overcommitted,
    clusters,
    constraint_holds,
    copy_usage,
    device_suits,
    feed_back,
    jobs,
    node_suits,
    run,
)

COUNTED = (JobType.SERVICE, JobType.BATCH)
PER_NODE = (JobType.SYSTEM, JobType.SYSBATCH)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_placement(snapshot: ClusterSnapshot, job: Job, alloc: Allocation) -> None:
    node = next(n for n in snapshot.nodes if n.id == alloc.node_id)
    assert node_suits(job, node), (node, job)
    for c in job.constraints:
        assert constraint_holds(c, node)
    assert alloc.job_id == job.id and alloc.name == f"{job.name}[{alloc.index}]"
    assert alloc.resources == job.task.resources
    devs = {d.id: d for d in node.devices}
    assert len(alloc.device_ids) == sum(r.count for r in job.devices)
    start = 0
    for req in job.devices:  # ids are assigned request by request, in order
        for dev_id in alloc.device_ids[start : start + req.count]:
            assert device_suits(req, devs[dev_id])
        start += req.count
    assert set(alloc.ports) == {p.label for p in job.ports}
    for preq in job.ports:
        port = alloc.ports[preq.label]
        if preq.static is not None:
            assert port == preq.static
        else:
            assert PORT_RANGE[0] <= port < PORT_RANGE[1]


@SETTINGS
@given(clusters(), st.data())
def test_successive_plans_never_overcommit(snapshot: ClusterSnapshot, data: st.DataObject) -> None:
    usage0 = copy_usage(snapshot)
    placed: list[Allocation] = []
    first: tuple[Job, list[Allocation]] | None = None
    for k in range(3):
        job = data.draw(jobs(COUNTED + PER_NODE, job_id=f"job-{k}"))
        plan = run(snapshot, job, eval_id=f"eval-{k}", ids=Ids(f"j{k}"))
        for alloc in plan.placements:
            _check_placement(snapshot, job, alloc)
        feed_back(snapshot, plan)
        placed += plan.placements
        first = first or (job, plan.placements)
    # Re-evaluate the first job, scaled up, with its allocations live in the snapshot.
    assert first is not None
    job, allocs = first
    bigger = job.model_copy(update={"count": job.count + data.draw(st.integers(0, 5))})
    plan = run(snapshot, bigger, allocs, eval_id="eval-again", ids=Ids("again"))
    assert not {a.index for a in plan.placements} & {a.index for a in allocs}
    for alloc in plan.placements:
        _check_placement(snapshot, bigger, alloc)
    placed += plan.placements
    assert_not_overcommitted(usage0, snapshot.nodes, placed)


@SETTINGS
@given(clusters(), st.data())
def test_explanations_add_up(snapshot: ClusterSnapshot, data: st.DataObject) -> None:
    job = data.draw(jobs(COUNTED))
    plan = run(snapshot, job)
    assert len(plan.placements) + plan.unplaced == job.count
    assert sorted(a.index for a in plan.placements) == list(range(len(plan.placements)))
    if plan.unplaced:
        assert sum(plan.failures.values()) == len(snapshot.nodes)
        # Nothing is left that the oracle would accept either.
        assert all(v > 0 for v in plan.failures.values())
    else:
        assert plan.failures == {}


@SETTINGS
@given(clusters(), st.data())
def test_failed_placement_rejects_every_node_with_a_candidate_limit(
    snapshot: ClusterSnapshot, data: st.DataObject
) -> None:
    from mxvm.scheduler import SchedulerConfig

    job = data.draw(jobs(COUNTED))
    limit = data.draw(st.integers(1, 3))
    plan = run(snapshot, job, config=SchedulerConfig(candidate_limit=limit, port_range=PORT_RANGE))
    assert len(plan.placements) + plan.unplaced == job.count
    if plan.unplaced:
        assert sum(plan.failures.values()) == len(snapshot.nodes)


@SETTINGS
@given(clusters(), st.data())
def test_system_job_one_per_suitable_node(snapshot: ClusterSnapshot, data: st.DataObject) -> None:
    job = data.draw(jobs(PER_NODE))
    plan = run(snapshot, job)
    placed = [a.node_id for a in plan.placements]
    assert len(placed) == len(set(placed))
    targets = [n for n in snapshot.nodes if node_suits(job, n)]
    assert set(placed) <= {n.id for n in targets}
    assert plan.unplaced == len(targets) - len(placed)
    order = sorted(n.id for n in snapshot.nodes)
    for alloc in plan.placements:
        assert alloc.index == order.index(alloc.node_id)
    if not job.devices and not job.ports:  # then "fits" is plain arithmetic
        need = job.task.resources
        fits = {
            n.id
            for n in targets
            if n.allocatable.shortfall(snapshot.usage_of(n.id).used + need) is None
        }
        assert set(placed) == fits
    # Scheduling again with the placements live places nothing new.
    feed_back(snapshot, plan)
    again = run(snapshot, job, plan.placements, eval_id="eval-2", ids=Ids("again"))
    assert again.placements == [] or plan.unplaced > 0
    assert again.stops == []


@SETTINGS
@given(clusters(), st.data())
def test_same_input_same_plan(snapshot: ClusterSnapshot, data: st.DataObject) -> None:
    job = data.draw(jobs(COUNTED + PER_NODE))
    first = run(snapshot, job, eval_id="same", ids=Ids())
    second = run(snapshot, job, eval_id="same", ids=Ids())
    assert first.model_dump() == second.model_dump()


@settings(max_examples=60, deadline=None)
@given(
    n_nodes=st.integers(1, 12),
    per_node=st.integers(1, 6),
    n_allocs=st.integers(1, 40),
    many=st.booleans(),
)
def test_binpack_fills_before_spreading(
    n_nodes: int, per_node: int, n_allocs: int, many: bool
) -> None:
    from mxvm.models import Resources, Task

    from .cases import make_job, make_node

    # `many`: a cluster beyond the exhaustive size, so the candidate limit is in play.
    total = n_nodes + (200 if many else 0)
    nodes = [
        make_node(i, resources=Resources(cpu_millicores=per_node * 1000, memory_mb=65536))
        for i in range(total)
    ]
    capacity = per_node * total
    job = make_job(count=n_allocs, task=Task(argv=["x"], vcpus=1, memory_mb=256))
    packed = run(ClusterSnapshot(nodes=nodes), job)
    spread = run(ClusterSnapshot(nodes=nodes), job.model_copy(update={"scheduling": "spread"}))
    placed = min(n_allocs, capacity)
    assert len(packed.placements) == len(spread.placements) == placed
    assert len({a.node_id for a in packed.placements}) == math.ceil(placed / per_node)
    assert len({a.node_id for a in spread.placements}) == min(placed, total)


@settings(max_examples=100, deadline=None)
@given(
    gpus=st.lists(st.lists(st.sampled_from([None, 0, 1]), max_size=6), min_size=1, max_size=6),
    used=st.sets(st.integers(0, 5), max_size=3),
    per_alloc=st.integers(1, 3),
    count=st.integers(1, 12),
    rounds=st.integers(1, 3),
)
def test_device_never_assigned_twice(
    gpus: list[list[int | None]], used: set[int], per_alloc: int, count: int, rounds: int
) -> None:
    from mxvm.models import Device, DeviceRequest, NodeUsage, Resources

    from .cases import make_job, make_node

    nodes = [
        make_node(
            i,
            resources=Resources(cpu_millicores=64000, memory_mb=65536),
            devices=[
                Device(id=f"n{i}-gpu{k}", vendor="nvidia", numa_node=numa)
                for k, numa in enumerate(numas)
            ],
        )
        for i, numas in enumerate(gpus)
    ]
    snapshot = ClusterSnapshot(
        nodes=nodes, usage={"node-000": NodeUsage(device_ids={f"n0-gpu{k}" for k in used})}
    )
    usage0 = copy_usage(snapshot)
    placed: list[Allocation] = []
    for r in range(rounds):
        job = make_job(id=f"job-{r}", count=count, devices=[DeviceRequest(count=per_alloc)])
        plan = run(snapshot, job, eval_id=f"eval-{r}", ids=Ids(f"r{r}"))
        free = sum(
            len([d for d in n.devices if d.id not in snapshot.usage_of(n.id).device_ids])
            // per_alloc
            for n in nodes
        )
        assert len(plan.placements) == min(count, free)  # cpu is never the limit
        if plan.unplaced:
            assert plan.failures.get("gpu", 0) > 0
        feed_back(snapshot, plan)
        placed += plan.placements
    assert_not_overcommitted(usage0, nodes, placed)
