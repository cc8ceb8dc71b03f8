"""Filters, constraints, devices, ports, explanations and the candidate limit, by example."""

from __future__ import annotations

import pytest

from mxvm.models import (
    ClusterSnapshot,
    Constraint,
    Device,
    DeviceRequest,
    Eligibility,
    Job,
    JobType,
    NodeStatus,
    NodeUsage,
    Operator,
    PortRequest,
    Resources,
    Task,
    VolumeRequest,
)
from mxvm.scheduler import SchedulerConfig, candidate_limit
from mxvm.scheduler.constraints import satisfied

from .cases import make_job, make_node, run

EQ, NE, LT, LE, GT, GE = (Operator(o) for o in ("=", "!=", "<", "<=", ">", ">="))


@pytest.mark.parametrize(
    ("op", "value", "actual", "expected"),
    [
        (EQ, "x86_64", "x86_64", True),
        (EQ, "1", "1.0", True),  # numbers compare as numbers
        (EQ, "x86_64", None, False),
        (NE, "x86_64", "aarch64", True),
        (NE, "x86_64", "x86_64", False),
        (NE, "x86_64", None, True),  # as in Nomad
        (LT, "10", "9", True),  # numeric: 9 < 10
        (LT, "10", "9x", False),  # lexical: "9x" > "10"
        (LE, "2.5", "2.5", True),
        (GT, "10", "9", False),
        (GT, "b", "c", True),
        (GE, "3", "3.0", True),
        (GE, "3", None, False),
        (Operator.REGEXP, "^x86", "x86_64", True),
        (Operator.REGEXP, "86", "x86_64", True),  # re.search, not re.match
        (Operator.REGEXP, "^arm", "x86_64", False),
        (Operator.REGEXP, ".*", None, False),
        (Operator.SET_CONTAINS, "avx, sse", "sse,avx,avx512", True),
        (Operator.SET_CONTAINS, "avx512", "sse,avx", False),
        (Operator.SET_CONTAINS, "avx", None, False),
        (Operator.IS_SET, "", "", True),
        (Operator.IS_SET, "", None, False),
        (Operator.IS_NOT_SET, "", None, True),
        (Operator.IS_NOT_SET, "", "x", False),
    ],
)
def test_constraint_operators(op: Operator, value: str, actual: str | None, expected: bool) -> None:
    constraint = Constraint(attribute="attr.x", operator=op, value=value)
    assert satisfied(constraint, actual) is expected
    # And end to end: the job lands on the node only when the constraint holds.
    attrs = {} if actual is None else {"x": actual}
    snapshot = ClusterSnapshot(nodes=[make_node(0, attributes=attrs)])
    plan = run(snapshot, make_job(constraints=[constraint]))
    assert (len(plan.placements) == 1) is expected
    assert plan.failures == ({} if expected else {"constraint": 1})


def test_node_fields_and_drivers_resolve_as_attributes() -> None:
    nodes = [make_node(0), make_node(1, drivers=["qemu", "libvirt"])]
    job = make_job(
        constraints=[
            Constraint(attribute="driver.libvirt", operator=Operator.IS_SET),
            Constraint(attribute="node.name", operator=Operator.REGEXP, value="-001$"),
        ]
    )
    assert [a.node_id for a in run(ClusterSnapshot(nodes=nodes), job).placements] == ["node-001"]


def test_failures_count_each_node_once_under_its_first_reason() -> None:
    small = Resources(cpu_millicores=8000, memory_mb=256)
    nodes = [make_node(i, resources=small) for i in range(7)]
    nodes += [make_node(7 + i, eligibility=Eligibility.INELIGIBLE) for i in range(2)]
    plan = run(ClusterSnapshot(nodes=nodes), make_job(count=3))
    assert plan.failures == {"memory": 7, "ineligible": 2}
    assert plan.unplaced == 3 and plan.placements == []


def test_reason_order_and_every_reason() -> None:
    nodes = [
        make_node(0, status=NodeStatus.DOWN, eligibility=Eligibility.INELIGIBLE),
        make_node(1, eligibility=Eligibility.INELIGIBLE, drivers=[]),
        make_node(2, drivers=["fake"]),
        make_node(3, attributes={"arch": "aarch64"}),
        make_node(4, attributes={"arch": "x86_64"}),
        make_node(5, attributes={"arch": "x86_64"}, host_volumes={"data": "/d"}),
        make_node(
            6,
            attributes={"arch": "x86_64"},
            host_volumes={"data": "/d"},
            resources=Resources(cpu_millicores=4000, memory_mb=4096, disk_mb=10),
        ),
        make_node(
            7,
            attributes={"arch": "x86_64"},
            host_volumes={"data": "/d"},
            devices=[Device(id="g0", vendor="amd")],
        ),
        make_node(
            8,
            attributes={"arch": "x86_64"},
            host_volumes={"data": "/d"},
            devices=[Device(id="g1", vendor="nvidia")],
        ),
    ]
    usage = {"node-008": NodeUsage(ports={8080})}
    job = make_job(
        task=Task(argv=["x"], disk_mb=100),
        constraints=[Constraint(attribute="attr.arch", value="x86_64")],
        volumes=[VolumeRequest(name="data", destination="/data")],
        devices=[DeviceRequest(vendor="NVIDIA")],
        ports=[PortRequest(label="http", static=8080)],
    )
    plan = run(ClusterSnapshot(nodes=nodes, usage=usage), job)
    assert plan.failures == {
        "not-ready": 1,
        "ineligible": 1,
        "driver": 1,
        "constraint": 1,
        "volume": 1,
        "disk": 1,
        "gpu": 2,
        "ports": 1,
    }
    assert sum(plan.failures.values()) == len(nodes)


def test_cpu_is_checked_before_memory_and_against_allocatable() -> None:
    node = make_node(
        0,
        resources=Resources(cpu_millicores=2000, memory_mb=1024),
        reserved=Resources(cpu_millicores=1500),
    )
    plan = run(ClusterSnapshot(nodes=[node]), make_job(task=Task(argv=["x"], memory_mb=2048)))
    assert plan.failures == {"cpu": 1}


def test_devices_prefer_one_numa_node() -> None:
    gpus = [
        Device(id="a", numa_node=0),
        Device(id="b", numa_node=1),
        Device(id="c", numa_node=1),
        Device(id="d", numa_node=0, healthy=False),
    ]
    snapshot = ClusterSnapshot(nodes=[make_node(0, devices=gpus)])
    pair = run(snapshot, make_job(devices=[DeviceRequest(count=2)])).placements
    assert pair[0].device_ids == ["b", "c"]
    # One GPU: the smallest NUMA group that fits, keeping the pair on node 1 whole.
    single = run(snapshot, make_job(devices=[DeviceRequest(count=1)])).placements
    assert single[0].device_ids == ["a"]
    spanning = run(snapshot, make_job(devices=[DeviceRequest(count=3)])).placements
    assert sorted(spanning[0].device_ids) == ["a", "b", "c"]


def test_device_request_matching() -> None:
    gpus = [
        Device(id="g0", vendor="NVIDIA", model="A100-SXM4-80GB", memory_mb=81920),
        Device(id="g1", vendor="nvidia", model="A100-PCIE-40GB", memory_mb=40960),
        Device(id="g2", vendor="amd", model="MI300X", memory_mb=196608),
        Device(id="v0", kind="0x0302", vendor="nvidia", model="A100"),
    ]
    snapshot = ClusterSnapshot(nodes=[make_node(0, devices=gpus)])

    def ids(req: DeviceRequest) -> list[str]:
        placed = run(snapshot, make_job(devices=[req])).placements
        return placed[0].device_ids if placed else []

    assert ids(DeviceRequest(vendor="Nvidia", count=2)) == ["g0", "g1"]
    assert ids(DeviceRequest(model="80GB$")) == ["g0"]
    assert ids(DeviceRequest(min_memory_mb=100000)) == ["g2"]
    assert ids(DeviceRequest(ids=["g1"])) == ["g1"]
    assert ids(DeviceRequest(kind="0x0302")) == ["v0"]
    assert ids(DeviceRequest(vendor="intel")) == []


def test_ports_static_and_lowest_free_dynamic() -> None:
    usage = {"node-000": NodeUsage(ports={20000, 20002})}
    snapshot = ClusterSnapshot(nodes=[make_node(0)], usage=usage)
    job = make_job(
        count=2,
        ports=[PortRequest(label="ssh", static=2222), PortRequest(label="http")],
    )
    plan = run(snapshot, job, config=SchedulerConfig(port_range=(20000, 20010)))
    # The static port is per node: the second allocation cannot have it too.
    assert [a.ports for a in plan.placements] == [{"ssh": 2222, "http": 20001}]
    assert plan.unplaced == 1 and plan.failures == {"ports": 1}
    dynamic = make_job(count=3, ports=[PortRequest(label="a"), PortRequest(label="b")])
    plan = run(snapshot, dynamic, config=SchedulerConfig(port_range=(20000, 20007)))
    assert [a.ports for a in plan.placements] == [
        {"a": 20001, "b": 20003},
        {"a": 20004, "b": 20005},
    ]
    assert plan.unplaced == 1 and plan.failures == {"ports": 1}


def test_system_job_index_is_position_by_node_id() -> None:
    nodes = [make_node(i) for i in (3, 1, 2)]
    plan = run(ClusterSnapshot(nodes=nodes), make_job(type=JobType.SYSTEM))
    assert sorted((a.node_id, a.index, a.name) for a in plan.placements) == [
        ("node-001", 0, "web[0]"),
        ("node-002", 1, "web[1]"),
        ("node-003", 2, "web[2]"),
    ]


def test_system_job_unplaced_when_a_target_is_full() -> None:
    full = NodeUsage(used=Resources(cpu_millicores=4000))
    snapshot = ClusterSnapshot(
        nodes=[make_node(0), make_node(1), make_node(2, drivers=["fake"])],
        usage={"node-001": full},
    )
    plan = run(snapshot, make_job(type=JobType.SYSTEM))
    assert [a.node_id for a in plan.placements] == ["node-000"]
    assert plan.unplaced == 1  # node-002 does not suit the job: not a target, not unplaced
    assert plan.failures == {"cpu": 1, "driver": 1}


@pytest.mark.parametrize(
    ("n", "expected"), [(0, 1), (1, 1), (64, 64), (65, 16), (1000, 20), (10_000, 28)]
)
def test_automatic_candidate_limit(n: int, expected: int) -> None:
    assert candidate_limit(SchedulerConfig(), n) == expected
    assert candidate_limit(SchedulerConfig(candidate_limit=5), n) == 5


def test_a_later_identical_placement_fails_without_rescanning() -> None:
    nodes = [
        make_node(i, resources=Resources(cpu_millicores=2000, memory_mb=4096)) for i in range(100)
    ]
    plan = run(ClusterSnapshot(nodes=nodes), make_job(count=250))
    assert len(plan.placements) == 200
    assert plan.unplaced == 50
    assert plan.failures == {"cpu": 100}


def test_algorithm_default_applies_when_the_job_does_not_choose() -> None:
    snapshot = ClusterSnapshot(nodes=[make_node(i) for i in range(4)])
    spread = SchedulerConfig(algorithm_default="spread")

    def nodes_used(job: Job) -> int:
        return len({a.node_id for a in run(snapshot, job, config=spread).placements})

    assert nodes_used(make_job(count=4)) == 4  # no `scheduling` given: the default
    assert nodes_used(make_job(count=4, scheduling="binpack")) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"port_range": (100, 100)},
        {"port_range": (0, 10)},
        {"algorithm_default": "random"},
        {"candidate_limit": 0},
    ],
)
def test_config_is_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SchedulerConfig(**kwargs)  # type: ignore[arg-type]
