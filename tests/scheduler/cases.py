"""Builders, hypothesis strategies and independent oracles for the scheduler tests."""

from __future__ import annotations

import operator
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from mxvm.models import (
    Allocation,
    ClientStatus,
    ClusterSnapshot,
    Constraint,
    DesiredStatus,
    Device,
    DeviceRequest,
    Eligibility,
    Job,
    JobType,
    Node,
    NodeStatus,
    NodeUsage,
    Operator,
    Plan,
    PortRequest,
    Resources,
    Task,
    VolumeRequest,
)
from mxvm.scheduler import SchedulerConfig, schedule

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PORT_RANGE = (20000, 20006)  # small, so that dynamic ports run out in generated cases


class Ids:
    """A deterministic allocation id factory."""

    def __init__(self, prefix: str = "alloc") -> None:
        self.prefix, self.n = prefix, 0

    def __call__(self) -> str:
        self.n += 1
        return f"{self.prefix}-{self.n:04d}"


def make_node(i: int, **kw: Any) -> Node:
    fields: dict[str, Any] = {
        "id": f"node-{i:03d}",
        "name": f"node-{i:03d}",
        "status": NodeStatus.READY,
        "resources": Resources(cpu_millicores=4000, memory_mb=4096, disk_mb=10000),
        "drivers": ["qemu"],
    }
    fields.update(kw)
    return Node(**fields)


def make_job(**kw: Any) -> Job:
    fields: dict[str, Any] = {
        "id": "job-1",
        "name": "web",
        "type": JobType.SERVICE,
        "task": Task(argv=["run"], vcpus=1, memory_mb=512),
    }
    fields.update(kw)
    return Job(**fields)


def run(
    snapshot: ClusterSnapshot,
    job: Job,
    allocations: Sequence[Allocation] = (),
    *,
    eval_id: str = "eval-1",
    now: datetime = NOW,
    ids: Callable[[], str] | None = None,
    config: SchedulerConfig | None = None,
) -> Plan:
    return schedule(
        snapshot,
        job,
        allocations,
        eval_id=eval_id,
        now=now,
        new_id=ids or Ids(),
        config=config or SchedulerConfig(port_range=PORT_RANGE),
    )


def feed_back(snapshot: ClusterSnapshot, plan: Plan) -> None:
    """Account the plan's placements in the snapshot, as the applier does after a commit."""
    for alloc in plan.placements:
        snapshot.account(alloc)


# --- oracles, written independently of the scheduler's own code --------------------------

_CMP: dict[Operator, Callable[[Any, Any], bool]] = {
    Operator.EQ: operator.eq,
    Operator.NE: operator.ne,
    Operator.LT: operator.lt,
    Operator.LE: operator.le,
    Operator.GT: operator.gt,
    Operator.GE: operator.ge,
}


def _num(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return None if value != value or value in (float("inf"), float("-inf")) else value


def constraint_holds(c: Constraint, node: Node) -> bool:
    value = node.attribute(c.attribute)
    if c.operator == Operator.IS_SET:
        return value is not None
    if c.operator == Operator.IS_NOT_SET:
        return value is None
    if value is None:
        return c.operator == Operator.NE
    if c.operator == Operator.REGEXP:
        return re.search(c.value, value) is not None
    if c.operator == Operator.SET_CONTAINS:
        have = {x.strip() for x in value.split(",")}
        return all(x.strip() in have for x in c.value.split(",") if x.strip())
    left, right = _num(value), _num(c.value)
    if left is not None and right is not None:
        return _CMP[c.operator](left, right)
    return _CMP[c.operator](value, c.value)


def node_suits(job: Job, node: Node) -> bool:
    """Ready, eligible, driver, constraints and volumes: the static filters."""
    return (
        node.status == NodeStatus.READY
        and node.eligibility == Eligibility.ELIGIBLE
        and job.task.driver in node.drivers
        and all(constraint_holds(c, node) for c in job.constraints)
        and all(v.name in node.host_volumes for v in job.volumes)
    )


def device_suits(req: DeviceRequest, dev: Device) -> bool:
    return (
        dev.healthy
        and dev.kind == req.kind
        and (req.vendor is None or req.vendor.lower() == dev.vendor.lower())
        and (req.model is None or re.search(req.model, dev.model) is not None)
        and dev.memory_mb >= req.min_memory_mb
        and (not req.ids or dev.id in req.ids)
    )


def assert_not_overcommitted(
    snapshot0: dict[str, NodeUsage], nodes: Sequence[Node], placements: Sequence[Allocation]
) -> None:
    """Initial usage plus every placement fits each node; no device or port taken twice."""
    by_node: dict[str, list[Allocation]] = defaultdict(list)
    for a in placements:
        by_node[a.node_id].append(a)
    for node in nodes:
        base = snapshot0.get(node.id, NodeUsage())
        allocs = by_node.get(node.id, [])
        total = base.used
        for a in allocs:
            total = total + a.resources
        assert node.allocatable.shortfall(total) is None, (node.id, total)
        devs = [d for a in allocs for d in a.device_ids]
        assert len(devs) == len(set(devs)), devs
        assert not set(devs) & base.device_ids
        known = {d.id for d in node.devices}
        assert set(devs) <= known
        ports = [p for a in allocs for p in a.ports.values()]
        assert len(ports) == len(set(ports)), ports
        assert not set(ports) & base.ports


def copy_usage(snapshot: ClusterSnapshot) -> dict[str, NodeUsage]:
    return {
        k: NodeUsage(used=u.used, device_ids=set(u.device_ids), ports=set(u.ports))
        for k, u in snapshot.usage.items()
    }


# --- strategies ------------------------------------------------------------------------

ATTRS = {
    "arch": ["x86_64", "aarch64"],
    "rack": ["3", "10", "2.5", "abc"],
    "features": ["avx,sse", "avx, avx512, sse", "sse"],
}


@st.composite
def devices(draw: st.DrawFn, node: int) -> list[Device]:
    n = draw(st.integers(0, 4))
    return [
        Device(
            id=f"n{node}-dev{k}",
            kind=draw(st.sampled_from(["gpu", "gpu", "0x0302"])),
            vendor=draw(st.sampled_from(["nvidia", "NVIDIA", "amd"])),
            model=draw(st.sampled_from(["A100-80GB", "H100", "MI300"])),
            memory_mb=draw(st.sampled_from([0, 40000, 80000])),
            numa_node=draw(st.sampled_from([None, 0, 1])),
            healthy=draw(st.sampled_from([True, True, True, False])),
        )
        for k in range(n)
    ]


@st.composite
def nodes(draw: st.DrawFn, i: int) -> Node:
    attrs = {k: draw(st.sampled_from(v)) for k, v in ATTRS.items() if draw(st.booleans())}
    cpu, mem = draw(st.integers(0, 6)) * 1000, draw(st.integers(0, 6)) * 1024
    return make_node(
        i,
        status=draw(st.sampled_from([NodeStatus.READY] * 4 + list(NodeStatus))),
        eligibility=draw(st.sampled_from([Eligibility.ELIGIBLE] * 4 + list(Eligibility))),
        resources=Resources(cpu_millicores=cpu, memory_mb=mem, disk_mb=2000),
        reserved=Resources(cpu_millicores=draw(st.sampled_from([0, min(cpu, 500)]))),
        drivers=draw(st.lists(st.sampled_from(["qemu", "fake"]), unique=True)),
        attributes=attrs,
        host_volumes={"data": "/srv/data"} if draw(st.booleans()) else {},
        devices=draw(devices(i)),
    )


@st.composite
def usages(draw: st.DrawFn, node: Node) -> NodeUsage:
    """Some pre-existing usage that fits the node."""
    cap = node.allocatable
    used = Resources(
        cpu_millicores=draw(st.integers(0, max(0, cap.cpu_millicores))),
        memory_mb=draw(st.integers(0, max(0, cap.memory_mb))),
        disk_mb=draw(st.integers(0, max(0, cap.disk_mb))),
    )
    devs = {d.id for d in node.devices if draw(st.integers(0, 3)) == 0}
    ports = set(draw(st.lists(st.sampled_from([8080, 20000, 20001, 20003]), unique=True)))
    return NodeUsage(used=used, device_ids=devs, ports=ports)


@st.composite
def clusters(draw: st.DrawFn, max_nodes: int = 10) -> ClusterSnapshot:
    n = draw(st.integers(0, max_nodes))
    ns = [draw(nodes(i)) for i in range(n)]
    usage = {node.id: draw(usages(node)) for node in ns if draw(st.booleans())}
    return ClusterSnapshot(nodes=ns, usage=usage)


@st.composite
def constraints(draw: st.DrawFn) -> Constraint:
    attribute = draw(
        st.sampled_from(
            ["attr.arch", "attr.rack", "attr.features", "attr.missing", "node.name", "driver.qemu"]
        )
    )
    op = draw(st.sampled_from(list(Operator)))
    values = {
        Operator.REGEXP: ["^x86", "arch", "[0-9]$", "node-00[0-4]"],
        Operator.SET_CONTAINS: ["avx", "avx,sse", "avx512", "sse, avx"],
        Operator.IS_SET: [""],
        Operator.IS_NOT_SET: [""],
    }.get(op, ["x86_64", "3", "10", "2.5", "abc", "node-003", "true"])
    return Constraint(attribute=attribute, operator=op, value=draw(st.sampled_from(values)))


@st.composite
def device_requests(draw: st.DrawFn) -> DeviceRequest:
    return DeviceRequest(
        kind=draw(st.sampled_from(["gpu", "gpu", "0x0302"])),
        vendor=draw(st.sampled_from([None, "nvidia", "Nvidia", "amd"])),
        model=draw(st.sampled_from([None, "A100", "^H", "MI"])),
        min_memory_mb=draw(st.sampled_from([0, 0, 50000])),
        count=draw(st.integers(1, 2)),
    )


@st.composite
def ports(draw: st.DrawFn) -> list[PortRequest]:
    statics = draw(st.lists(st.sampled_from([8080, 8081]), unique=True, max_size=1))
    n_dynamic = draw(st.integers(0, 2))
    reqs = [PortRequest(label=f"s{p}", static=p) for p in statics]
    return reqs + [PortRequest(label=f"d{k}") for k in range(n_dynamic)]


@st.composite
def jobs(draw: st.DrawFn, types: Sequence[JobType], job_id: str = "job-1") -> Job:
    def some() -> bool:  # each feature on its own: together they rarely fit anywhere
        return draw(st.integers(0, 2)) == 0

    return make_job(
        id=job_id,
        name=job_id,
        type=draw(st.sampled_from(list(types))),
        count=draw(st.integers(1, 12)),
        scheduling=draw(st.sampled_from(["binpack", "spread"])),
        task=Task(
            argv=["run"],
            driver=draw(st.sampled_from(["qemu", "qemu", "fake"])),
            vcpus=draw(st.integers(1, 2)),
            memory_mb=draw(st.sampled_from([128, 512, 1024])),
            disk_mb=draw(st.sampled_from([0, 0, 500])),
        ),
        constraints=draw(st.lists(constraints(), min_size=1, max_size=2)) if some() else [],
        devices=draw(st.lists(device_requests(), min_size=1, max_size=2)) if some() else [],
        ports=draw(ports()) if some() else [],
        volumes=[VolumeRequest(name="data", destination="/data")] if some() else [],
    )


def make_alloc(
    alloc_id: str,
    index: int = 0,
    *,
    status: ClientStatus = ClientStatus.RUNNING,
    desired: DesiredStatus = DesiredStatus.RUN,
    node_id: str = "node-000",
    job: Job | None = None,
    age_s: float = 3600.0,
    previous: str | None = None,
    attempts: int = 0,
) -> Allocation:
    """An allocation of `job`, created `age_s` before NOW and last changed a minute later."""
    job = job or make_job()
    created = NOW - timedelta(seconds=age_s)
    return Allocation(
        id=alloc_id,
        job_id=job.id,
        node_id=node_id,
        name=f"{job.name}[{index}]",
        index=index,
        desired_status=desired,
        client_status=status,
        resources=job.task.resources,
        previous_allocation=previous,
        reschedule_attempts=attempts,
        created_at=created,
        modified_at=min(NOW, created + timedelta(seconds=60)),
    )
