"""Node: a host that runs microVMs, as its agent registered it and the coordinator tracks it."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mxvm.models.evaluation import Evaluation
from mxvm.models.resources import Resources

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$")


class NodeStatus(StrEnum):
    INITIALIZING = "initializing"
    READY = "ready"
    DOWN = "down"


class Eligibility(StrEnum):
    ELIGIBLE = "eligible"
    INELIGIBLE = "ineligible"


class Device(BaseModel):
    """A schedulable device on a node (a GPU or another PCI function)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, description="stable id: PCI address or GPU UUID")
    kind: str = Field(default="gpu", description="'gpu' or a PCI class such as '0x0302'")
    vendor: str = ""
    model: str = ""
    memory_mb: int = Field(default=0, ge=0)
    numa_node: int | None = None
    pci_address: str | None = None
    iommu_group: int | None = None
    healthy: bool = True
    health_reason: str = ""


class NodeRegistration(BaseModel):
    """What a host agent reports about its host when it registers."""

    model_config = ConfigDict(extra="forbid")

    name: str
    address: str = Field(default="", description="address the coordinator can reach it on")
    resources: Resources
    reserved: Resources = Resources()
    devices: list[Device] = Field(default_factory=list)
    attributes: dict[str, str] = Field(default_factory=dict)
    drivers: list[str] = Field(default_factory=list, description="usable hypervisor drivers")
    host_volumes: dict[str, str] = Field(default_factory=dict, description="name -> host path")
    agent_url: str = Field(default="", description="the agent's own API (logs, exec)")
    # Presented by the coordinator when it calls the agent; never serialised back out.
    agent_secret: str = Field(default="", exclude=True, repr=False)
    # The agent's key, kept in its state dir: the node's name stays with the agent holding it
    # while the node is live. None from agents older than the key (they register as before).
    node_key: str | None = Field(default=None, exclude=True, repr=False, pattern=r"^[0-9a-f]{32}$")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("must be 1-63 characters of letters, digits, '.', '_' or '-'")
        return v


class DrainStrategy(BaseModel):
    """How a node's drain proceeds: service jobs move a few at a time (their migrate
    policy), batch jobs are left to finish, system jobs go last; whatever still runs at the
    deadline is stopped then."""

    model_config = ConfigDict(extra="forbid")

    deadline: datetime | None = Field(description="when everything left is stopped; null: never")
    ignore_system_jobs: bool = False


class Node(NodeRegistration):
    id: str
    status: NodeStatus = NodeStatus.INITIALIZING
    eligibility: Eligibility = Eligibility.ELIGIBLE
    drain: bool = Field(
        default=False, description="draining: its allocations are being moved elsewhere"
    )
    # Left out while not draining, so that agents older than it can still parse their node.
    drain_strategy: DrainStrategy | None = Field(default=None, exclude_if=lambda v: v is None)
    subnet: str | None = None
    last_heartbeat: datetime | None = None
    created_at: datetime | None = None
    modified_at: datetime | None = None

    @property
    def allocatable(self) -> Resources:
        return self.resources - self.reserved

    def attribute(self, key: str) -> str | None:
        """Resolve a constraint target: `node.<field>` or `attr.<attribute>`."""
        if key.startswith("attr."):
            return self.attributes.get(key[5:])
        if key.startswith("driver."):
            return "true" if key[7:] in self.drivers else None
        return {
            "node.id": self.id,
            "node.name": self.name,
            "node.address": self.address,
            "node.status": self.status.value,
        }.get(key)


class EligibilityUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    eligibility: Eligibility


class DrainUpdate(BaseModel):
    """Start or cancel draining a node. Strict: `"true"` or `1` is not a boolean here."""

    model_config = ConfigDict(extra="forbid", strict=True)

    enable: bool = Field(description="true: drain the node; false: cancel draining")
    ignore_system_jobs: bool = Field(
        default=False, description="leave system and sysbatch jobs' allocations running"
    )
    deadline_s: float | None = Field(
        default=3600.0,
        ge=0,
        description=(
            "seconds until whatever still runs on the node is stopped at once; 0 stops "
            "everything now (force), null never does (batch jobs may run to their end)"
        ),
    )


class DrainResult(BaseModel):
    """The node after the drain request, the allocations it stopped and the evaluations
    (one per affected job) that place their replacements elsewhere."""

    model_config = ConfigDict(extra="forbid")

    node: Node
    stopped: list[str] = Field(default_factory=list, description="allocation ids stopped")
    evaluations: list[Evaluation] = Field(default_factory=list)
