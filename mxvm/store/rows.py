"""Postgres rows to models. Column names follow the models except where noted."""

from __future__ import annotations

from typing import Any

import asyncpg

from mxvm.models import (
    Allocation,
    AllocEvent,
    Device,
    DrainStrategy,
    Evaluation,
    Job,
    JobSpec,
    Node,
    Resources,
)


def node(r: asyncpg.Record) -> Node:
    return Node(
        id=r["id"],
        name=r["name"],
        address=r["address"],
        status=r["status"],
        eligibility=r["eligibility"],
        drain=r["drain"],
        drain_strategy=DrainStrategy(
            deadline=r["drain_deadline"], ignore_system_jobs=r["drain_ignore_system"]
        )
        if r["drain"]
        else None,
        resources=Resources(
            cpu_millicores=r["cpu_millicores"], memory_mb=r["memory_mb"], disk_mb=r["disk_mb"]
        ),
        reserved=Resources(
            cpu_millicores=r["reserved_cpu_millicores"],
            memory_mb=r["reserved_memory_mb"],
            disk_mb=r["reserved_disk_mb"],
        ),
        devices=[Device.model_validate(d) for d in r["devices"]],
        attributes=r["attributes"],
        drivers=list(r["drivers"]),
        host_volumes=r["host_volumes"],
        agent_url=r["agent_url"],
        subnet=str(r["subnet"]) if r["subnet"] is not None else None,
        last_heartbeat=r["last_heartbeat"],
        created_at=r["created_at"],
        modified_at=r["modified_at"],
    )


def job(r: asyncpg.Record) -> Job:
    # One validation of spec and columns together: validating the spec, dumping it and
    # validating it again as a Job took 2.5x as long (the evaluator reads a batch's jobs).
    return Job.model_validate({**r["spec"], **_job_columns(r)})


def job_of(spec: JobSpec, r: asyncpg.Record) -> Job:
    """A job from its (validated) spec and its row's other columns."""
    return Job(**spec.model_dump(), **_job_columns(r))


def _job_columns(r: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": r["id"],
        "status": r["status"],
        "status_description": r["status_description"],
        "stop": r["stop"],
        "version": r["version"],
        "created_at": r["created_at"],
        "modified_at": r["modified_at"],
    }


def allocation(r: asyncpg.Record) -> Allocation:
    return Allocation(
        id=r["id"],
        eval_id=r["eval_id"],
        job_id=r["job_id"],
        job_version=r["job_version"],
        node_id=r["node_id"],
        name=r["name"],
        index=r["idx"],
        desired_status=r["desired_status"],
        desired_description=r["desired_description"],
        client_status=r["client_status"],
        client_description=r["client_description"],
        resources=Resources(
            cpu_millicores=r["cpu_millicores"], memory_mb=r["memory_mb"], disk_mb=r["disk_mb"]
        ),
        device_ids=list(r["device_ids"]),
        ports=r["ports"],
        ip=str(r["ip"]) if r["ip"] is not None else None,
        exit_code=r["exit_code"],
        previous_allocation=r["previous_allocation"],
        reschedule_attempts=r["reschedule_attempts"],
        events=[AllocEvent.model_validate(e) for e in r["events"]],
        created_at=r["created_at"],
        modified_at=r["modified_at"],
    )


def evaluation(r: asyncpg.Record) -> Evaluation:
    return Evaluation(
        id=r["id"],
        job_id=r["job_id"],
        trigger=r["trigger"],
        status=r["status"],
        status_description=r["status_description"],
        node_id=r["node_id"],
        failures=r["failures"],
        queued=r["queued"],
        created_at=r["created_at"],
        modified_at=r["modified_at"],
    )


def events_json(events: list[AllocEvent]) -> list[dict[str, Any]]:
    return [e.model_dump(mode="json") for e in events]
