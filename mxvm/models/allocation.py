"""Allocation: one placed instance of a job on a node."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from mxvm.models.resources import Resources


class DesiredStatus(StrEnum):
    RUN = "run"
    STOP = "stop"


class ClientStatus(StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    LOST = "lost"


TERMINAL = frozenset({ClientStatus.COMPLETE, ClientStatus.FAILED, ClientStatus.LOST})
# The transitions an agent may report; anything else is refused with 409.
TRANSITIONS: dict[ClientStatus, frozenset[ClientStatus]] = {
    ClientStatus.PENDING: frozenset(
        {ClientStatus.STARTING, ClientStatus.RUNNING, ClientStatus.COMPLETE, ClientStatus.FAILED}
    ),
    ClientStatus.STARTING: frozenset(
        {ClientStatus.RUNNING, ClientStatus.COMPLETE, ClientStatus.FAILED}
    ),
    ClientStatus.RUNNING: frozenset({ClientStatus.COMPLETE, ClientStatus.FAILED}),
}


class AllocEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    time: datetime
    type: str
    message: str = ""


class Allocation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    eval_id: str | None = None
    job_id: str
    job_version: int = 0
    node_id: str
    name: str = Field(description="job name and index, e.g. 'train[3]'")
    index: int = Field(ge=0)
    desired_status: DesiredStatus = DesiredStatus.RUN
    desired_description: str = ""
    client_status: ClientStatus = ClientStatus.PENDING
    client_description: str = ""
    resources: Resources
    device_ids: list[str] = Field(default_factory=list)
    ports: dict[str, int] = Field(default_factory=dict)
    ip: str | None = None
    exit_code: int | None = None
    previous_allocation: str | None = None
    reschedule_attempts: int = Field(default=0, ge=0)
    events: list[AllocEvent] = Field(default_factory=list)
    created_at: datetime | None = None
    modified_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        """The VM is gone: its resources count for nothing on the node any more."""
        return self.client_status in TERMINAL


class AllocStatusUpdate(BaseModel):
    """What an agent reports about one allocation."""

    model_config = ConfigDict(extra="forbid")

    client_status: ClientStatus
    description: str = ""
    exit_code: int | None = None
    events: list[AllocEvent] = Field(default_factory=list)


class AllocStatusReport(AllocStatusUpdate):
    """One allocation's report inside an agent's batch."""

    alloc_id: str


class AllocStatusBatch(BaseModel):
    """The reports an agent has queued, oldest first; one allocation may appear several
    times (e.g. starting, then running), and they are applied in order."""

    model_config = ConfigDict(extra="forbid")

    reports: list[AllocStatusReport] = Field(min_length=1, max_length=1000)


class AllocReportResult(BaseModel):
    """What became of one report: 200 applied, or the error status and why (403 another node's
    allocation, 404 unknown, 409 a transition that is not allowed)."""

    model_config = ConfigDict(extra="forbid")

    alloc_id: str
    status: int
    detail: str = ""


class AllocReportResults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    results: list[AllocReportResult]
