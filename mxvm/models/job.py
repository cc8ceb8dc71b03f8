"""Job: what a user asks to run. A JobSpec is submitted; a Job is what the store keeps."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mxvm.models.node import NAME_RE
from mxvm.models.resources import Resources

LABEL_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MIN_GUEST_MEMORY_MB = 72  # the Debian cloud kernel does not reach userspace below this


class JobType(StrEnum):
    SERVICE = "service"  # keep `count` running; replace failures
    BATCH = "batch"  # run `count` to completion
    SYSTEM = "system"  # one per eligible node, kept running
    SYSBATCH = "sysbatch"  # one per eligible node, run to completion


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETE = "complete"
    DEAD = "dead"


class Operator(StrEnum):
    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    REGEXP = "regexp"
    SET_CONTAINS = "set_contains"
    IS_SET = "is_set"
    IS_NOT_SET = "is_not_set"


class Constraint(BaseModel):
    """A hard requirement on a node attribute (`node.name`, `attr.cpu.arch`, `driver.qemu`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attribute: str
    operator: Operator = Operator.EQ
    value: str = ""

    @field_validator("attribute")
    @classmethod
    def _attribute(cls, v: str) -> str:
        if not v.startswith(("node.", "attr.", "driver.")) or len(v) < 6:
            raise ValueError("must start with 'node.', 'attr.' or 'driver.'")
        return v

    @model_validator(mode="after")
    def _value(self) -> Constraint:
        if self.operator == Operator.REGEXP:
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"value is not a valid regular expression: {exc}") from exc
        elif self.operator not in (Operator.IS_SET, Operator.IS_NOT_SET) and self.value == "":
            raise ValueError(f"operator {self.operator.value!r} needs a value")
        return self


class DeviceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(default="gpu", description="'gpu' or a PCI class such as '0x0302'")
    vendor: str | None = None
    model: str | None = Field(default=None, description="regular expression on the model name")
    min_memory_mb: int = Field(default=0, ge=0)
    count: int = Field(default=1, ge=1, le=16)
    ids: list[str] = Field(default_factory=list, description="only these device ids")

    @field_validator("model")
    @classmethod
    def _model(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return v


class PortRequest(BaseModel):
    """A host port for the allocation: `static` is fixed, otherwise one is picked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    static: int | None = Field(default=None, ge=1, le=65535)
    to: int | None = Field(default=None, ge=1, le=65535, description="port inside the guest")

    @field_validator("label")
    @classmethod
    def _label(cls, v: str) -> str:
        if not LABEL_RE.match(v):
            raise ValueError("must be lower-case letters, digits and '_', starting with a letter")
        return v


class VolumeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="a host volume the node declares")
    destination: str = Field(pattern=r"^/", description="absolute mount path in the guest")
    read_only: bool = False


OnDisconnect = Literal["keep", "stop"]


class RestartPolicy(BaseModel):
    """Restarts of the VM on the same node, done by the agent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(default=2, ge=0)
    interval_s: int = Field(default=1800, ge=1)
    delay_s: float = Field(default=15.0, ge=0)
    mode: Literal["fail", "delay"] = "fail"


class ReschedulePolicy(BaseModel):
    """Replacement of a failed allocation, possibly on another node, done by the scheduler."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(default=1, ge=0)
    interval_s: int = Field(default=86400, ge=1)
    delay_s: float = Field(default=5.0, ge=0)
    unlimited: bool = False


class MigratePolicy(BaseModel):
    """How a drain moves a service job's allocations off a node: a few at a time, each
    batch only once enough of the job runs elsewhere (Nomad's migrate stanza)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_parallel: int = Field(
        default=1,
        ge=1,
        description=(
            "how many of the job's allocations may be down for a drain at once: the drain "
            "stops one only while at least count - max_parallel of them are running"
        ),
    )


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    driver: str = Field(default="qemu", description="qemu | cloud-hypervisor | libvirt | fake")
    image: str = Field(default="default", min_length=1)
    vcpus: int = Field(default=1, ge=1, le=64)
    memory_mb: int = Field(default=256, ge=MIN_GUEST_MEMORY_MB)
    disk_mb: int = Field(default=0, ge=0)
    argv: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    max_runtime_s: float | None = Field(
        default=None,
        gt=0,
        exclude_if=lambda v: v is None,
        description=(
            "stop the VM and fail the allocation this long after the agent began starting it "
            "(agent restarts do not reset it): a runaway agent does not run, or hold its "
            "GPU, forever. The restart policy does not apply; the reschedule policy does"
        ),
    )

    @property
    def resources(self) -> Resources:
        return Resources.model_construct(
            cpu_millicores=self.vcpus * 1000, memory_mb=self.memory_mb, disk_mb=self.disk_mb
        )


class JobSpec(BaseModel):
    """What a client submits (`POST /api/v1/jobs`)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: JobType = JobType.BATCH
    priority: int = Field(default=50, ge=1, le=100)
    count: int = Field(default=1, ge=1, le=10000, description="ignored by system jobs")
    scheduling: Literal["binpack", "spread"] = "binpack"
    task: Task
    constraints: list[Constraint] = Field(default_factory=list)
    devices: list[DeviceRequest] = Field(default_factory=list)
    ports: list[PortRequest] = Field(default_factory=list)
    volumes: list[VolumeRequest] = Field(default_factory=list)
    restart: RestartPolicy = RestartPolicy()
    reschedule: ReschedulePolicy = ReschedulePolicy()
    migrate: MigratePolicy = MigratePolicy()
    on_disconnect: OnDisconnect = Field(
        default="keep",
        description=(
            "when a node's agent loses contact with the coordinator: 'keep' its VMs running "
            "(once the node is declared lost they are replaced elsewhere, so two may run until "
            "contact returns), or 'stop' them before the coordinator can declare the node lost "
            "(never two at once; the work stops during a partition)"
        ),
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("must be 1-63 characters of letters, digits, '.', '_' or '-'")
        return v

    @model_validator(mode="after")
    def _unique_labels(self) -> JobSpec:
        labels = [p.label for p in self.ports]
        if len(labels) != len(set(labels)):
            raise ValueError("port labels must be unique")
        statics = [p.static for p in self.ports if p.static is not None]
        if len(statics) != len(set(statics)):
            raise ValueError("static ports must be unique")
        return self


class Job(JobSpec):
    id: str
    status: JobStatus = JobStatus.PENDING
    status_description: str = ""
    stop: bool = False
    version: int = 0
    created_at: datetime | None = None
    modified_at: datetime | None = None
