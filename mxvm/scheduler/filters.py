"""Feasibility filters: each returns the reason it rejects a node, or None.

Static filters look only at the node (status, eligibility, driver, constraints, volumes); their
verdict holds for the whole evaluation. Dynamic filters look at what is free on the node after
the snapshot's live allocations and this plan's placements (resources, devices, ports).
Only the filters a job needs are built, so a plain job pays for four checks per node.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from mxvm.models.job import Constraint, DeviceRequest, Job, PortRequest
from mxvm.models.node import Eligibility, NodeStatus
from mxvm.models.resources import Resources
from mxvm.scheduler import devices, ports
from mxvm.scheduler.constraints import satisfied
from mxvm.scheduler.state import NodeState


class Filter(Protocol):
    def check(self, state: NodeState) -> str | None: ...


class ReadyFilter:
    def check(self, state: NodeState) -> str | None:
        return None if state.node.status == NodeStatus.READY else "not-ready"


class EligibleFilter:
    def check(self, state: NodeState) -> str | None:
        return None if state.node.eligibility == Eligibility.ELIGIBLE else "ineligible"


class DriverFilter:
    def __init__(self, driver: str) -> None:
        self.driver = driver

    def check(self, state: NodeState) -> str | None:
        return None if self.driver in state.node.drivers else "driver"


class ConstraintFilter:
    def __init__(self, constraints: Sequence[Constraint]) -> None:
        self.constraints = tuple(constraints)
        # Verdict per tuple of attribute values: 10,000 nodes have few distinct values.
        self._seen: dict[tuple[str | None, ...], bool] = {}

    def check(self, state: NodeState) -> str | None:
        node = state.node
        values = tuple(node.attribute(c.attribute) for c in self.constraints)
        ok = self._seen.get(values)
        if ok is None:
            ok = self._seen[values] = all(
                satisfied(c, v) for c, v in zip(self.constraints, values, strict=True)
            )
        return None if ok else "constraint"


class VolumeFilter:
    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)

    def check(self, state: NodeState) -> str | None:
        volumes = state.node.host_volumes
        return None if all(n in volumes for n in self.names) else "volume"


class ResourceFilter:
    def __init__(self, need: Resources) -> None:
        self.cpu, self.memory, self.disk = need.cpu_millicores, need.memory_mb, need.disk_mb

    def check(self, state: NodeState) -> str | None:
        # The same order as Resources.shortfall: cpu, then memory, then disk.
        if state.used_cpu + self.cpu > state.cap_cpu:
            return "cpu"
        if state.used_memory + self.memory > state.cap_memory:
            return "memory"
        if state.used_disk + self.disk > state.cap_disk:
            return "disk"
        return None


class DeviceFilter:
    def __init__(self, requests: Sequence[DeviceRequest]) -> None:
        self.requests = tuple(requests)

    def check(self, state: NodeState) -> str | None:
        return devices.assign(self.requests, state.node.devices, state.device_in_use)[1]


class PortFilter:
    def __init__(self, requests: Sequence[PortRequest], port_range: tuple[int, int]) -> None:
        self.requests = tuple(requests)
        self.port_range = port_range

    def check(self, state: NodeState) -> str | None:
        found = ports.assign(self.requests, state.port_in_use, self.port_range)
        return None if found is not None else "ports"


def availability_filters() -> list[Filter]:
    """Whether the node takes new work at all (status, eligibility)."""
    return [ReadyFilter(), EligibleFilter()]


def match_filters(job: Job) -> list[Filter]:
    """Whether the node suits the job (driver, constraints, volumes)."""
    chain: list[Filter] = [DriverFilter(job.task.driver)]
    if job.constraints:
        chain.append(ConstraintFilter(job.constraints))
    if job.volumes:
        chain.append(VolumeFilter([v.name for v in job.volumes]))
    return chain


def dynamic_filters(job: Job, port_range: tuple[int, int]) -> list[Filter]:
    """The filters that depend on what is free on the node."""
    chain: list[Filter] = [ResourceFilter(job.task.resources)]
    if job.devices:
        chain.append(DeviceFilter(job.devices))
    if job.ports:
        chain.append(PortFilter(job.ports, port_range))
    return chain


def first_rejection(chain: Sequence[Filter], state: NodeState) -> str | None:
    for f in chain:
        reason = f.check(state)
        if reason is not None:
            return reason
    return None
