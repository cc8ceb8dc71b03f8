"""What the coordinator tells a host agent, and what the agent tells the coordinator."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mxvm.models.allocation import Allocation
from mxvm.models.job import JobType, OnDisconnect, PortRequest, RestartPolicy, Task, VolumeRequest
from mxvm.models.node import Node


class AssignedAllocation(BaseModel):
    """One allocation a node must run (or stop), with everything needed to run it.

    Agents ignore fields they do not know (a newer coordinator's), and a field added later
    is left out while it has its default, so an agent older than the field keeps working
    for every job that does not use it."""

    model_config = ConfigDict(extra="ignore")

    allocation: Allocation
    job_name: str
    job_type: JobType
    task: Task
    restart: RestartPolicy
    on_disconnect: OnDisconnect = Field(default="keep", exclude_if=lambda v: v == "keep")
    ports: list[PortRequest] = Field(default_factory=list)
    volumes: list[VolumeRequest] = Field(default_factory=list)


class NodeAllocations(BaseModel):
    """The answer to an agent's long-poll: its desired allocations at `index` (without their
    event history, which only people read: GET /api/v1/allocations/{id} has it)."""

    model_config = ConfigDict(extra="ignore")  # see AssignedAllocation

    index: int
    allocations: list[AssignedAllocation]


class NodeChanges(BaseModel):
    """The answer to an agent's long-poll for changes (GET .../allocations/changes): the
    allocations that changed after the index it asked from (all of them from 0), in full,
    and the ids of every live allocation of the node. A running allocation whose id is not
    among them is no longer the agent's to run. Each answer costs what changed, not what the
    node runs."""

    model_config = ConfigDict(extra="ignore")  # see AssignedAllocation

    index: int
    changed: list[AssignedAllocation]
    live: list[str]


class Registered(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: Node
    heartbeat_ttl_s: float


class ExecRequest(BaseModel):
    """A further command to run in an allocation's running guest."""

    model_config = ConfigDict(extra="forbid")

    argv: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    timeout_s: float | None = Field(default=60.0, gt=0, le=3600)


class ExecResult(BaseModel):
    stdout: str
    stderr: str
    exit_code: int
    error: str | None = Field(default=None, description="why it could not start (126/127)")
