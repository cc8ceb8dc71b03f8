"""One node as an evaluation sees it: allocatable capacity, snapshot usage and in-plan additions.

The scheduler never mutates the snapshot. What this plan has already placed on a node is kept
here, so later placements of the same evaluation see it (and so it is never overcommitted).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mxvm.models.node import Node
from mxvm.models.snapshot import NodeUsage


@dataclass(slots=True)
class NodeState:
    node: Node
    usage: NodeUsage
    cap_cpu: int
    cap_memory: int
    cap_disk: int
    used_cpu: int  # snapshot usage plus this plan's placements
    used_memory: int
    used_disk: int
    plan_devices: set[str] = field(default_factory=set)
    plan_ports: set[int] = field(default_factory=set)

    @classmethod
    def of(cls, node: Node, usage: NodeUsage | None) -> NodeState:
        usage = usage if usage is not None else NodeUsage()
        res, rsv, used = node.resources, node.reserved, usage.used
        return cls(
            node=node,
            usage=usage,
            cap_cpu=res.cpu_millicores - rsv.cpu_millicores,
            cap_memory=res.memory_mb - rsv.memory_mb,
            cap_disk=res.disk_mb - rsv.disk_mb,
            used_cpu=used.cpu_millicores,
            used_memory=used.memory_mb,
            used_disk=used.disk_mb,
        )

    def device_in_use(self, device_id: str) -> bool:
        return device_id in self.plan_devices or device_id in self.usage.device_ids

    def port_in_use(self, port: int) -> bool:
        return port in self.plan_ports or port in self.usage.ports

    def add(self, cpu: int, memory: int, disk: int, devices: list[str], ports: list[int]) -> None:
        """Record a placement of this plan on the node."""
        self.used_cpu += cpu
        self.used_memory += memory
        self.used_disk += disk
        self.plan_devices.update(devices)
        self.plan_ports.update(ports)


class States:
    """NodeState per node position, created on first use (a scan touches few of 10,000 nodes)."""

    __slots__ = ("_nodes", "_states", "_usage")

    def __init__(self, nodes: list[Node], usage: dict[str, NodeUsage]) -> None:
        self._nodes = nodes
        self._usage = usage
        self._states: dict[int, NodeState] = {}

    def __len__(self) -> int:
        return len(self._nodes)

    def __getitem__(self, pos: int) -> NodeState:
        st = self._states.get(pos)
        if st is None:
            node = self._nodes[pos]
            st = self._states[pos] = NodeState.of(node, self._usage.get(node.id))
        return st
