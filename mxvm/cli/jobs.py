"""`mxvm job run|ls|status|stop`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from mxvm.cli.context import client_from, resolve
from mxvm.cli.output import age, emit_json, kv, short, table
from mxvm.client import ApiClient
from mxvm.errors import InvalidSpec


def load_spec(path: str) -> Any:
    """A job spec from a .json or .toml file, or JSON on stdin ('-')."""
    if path == "-":
        text, suffix = sys.stdin.read(), ".json"
    else:
        p = Path(path)
        try:
            text, suffix = p.read_text(), p.suffix.lower()
        except OSError as exc:
            raise InvalidSpec(f"cannot read job file {path}: {exc.strerror}") from exc
    try:
        return tomllib.loads(text) if suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise InvalidSpec(f"{path} is not valid {suffix.lstrip('.') or 'JSON'}: {exc}") from exc


async def _wait_for_eval(client: ApiClient, eval_id: str, timeout_s: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        ev: dict[str, Any] = await client.get(f"/api/v1/evaluations/{eval_id}")
        if ev["status"] != "pending" or loop.time() > deadline:
            return ev
        await asyncio.sleep(0.2)


async def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.file)
    async with client_from(args) as client:
        out = await client.post("/api/v1/jobs", json=spec)
        job, ev = out["job"], out["evaluation"]
        if args.detach:
            emit_json(out) if args.json else print(f"job {job['id']} submitted, eval {ev['id']}")
            return 0
        ev = await _wait_for_eval(client, ev["id"], args.timeout)
        allocs = await client.get(f"/api/v1/jobs/{job['id']}/allocations")
    if args.json:
        emit_json({"job": job, "evaluation": ev, "allocations": allocs})
    else:
        print(f"job {job['id']} ({job['name']}): evaluation {ev['status']}")
        if ev["status"] == "blocked":
            why = json.dumps(ev["failures"]) if ev["failures"] else "no ready nodes"
            print(f"  {ev['queued']} allocation(s) not placed: {why}")
        for a in allocs:
            print(f"  placed {a['name']} as {short(a['id'])} on node {short(a['node_id'])}")
    return 0 if ev["status"] == "complete" else 2


async def ls(args: argparse.Namespace) -> int:
    async with client_from(args) as client:
        jobs = await client.get("/api/v1/jobs")
    if args.json:
        emit_json(jobs)
        return 0
    rows = [
        (short(j["id"]), j["name"], j["type"], j["priority"], j["status"], age(j["created_at"]))
        for j in jobs
    ]
    print(table(["ID", "NAME", "TYPE", "PRIORITY", "STATUS", "SUBMITTED"], rows))
    return 0


async def status(args: argparse.Namespace) -> int:
    async with client_from(args) as client:
        job_id = await resolve(client, "jobs", args.id)
        job = await client.get(f"/api/v1/jobs/{job_id}")
        allocs = await client.get(f"/api/v1/jobs/{job_id}/allocations")
    if args.json:
        emit_json({"job": job, "allocations": allocs})
        return 0
    t = job["task"]
    print(
        kv(
            [
                ("ID", job["id"]),
                ("Name", job["name"]),
                ("Type", job["type"]),
                ("Status", job["status"] + (" (stopped)" if job["stop"] else "")),
                ("Count", job["count"]),
                ("Task", f"{t['driver']} {t['image']} {t['vcpus']} vCPU {t['memory_mb']} MiB"),
                ("Command", " ".join(t["argv"])),
            ]
        )
    )
    print("\nAllocations")
    rows = [
        (short(a["id"]), a["name"], short(a["node_id"]), a["desired_status"],
         a["client_status"], a["exit_code"], age(a["modified_at"]))
        for a in allocs
    ]  # fmt: skip
    print(table(["ID", "NAME", "NODE", "DESIRED", "STATUS", "EXIT", "MODIFIED"], rows))
    return 0


async def stop(args: argparse.Namespace) -> int:
    async with client_from(args) as client:
        job_id = await resolve(client, "jobs", args.id)
        out = await client.post(f"/api/v1/jobs/{job_id}/stop")
    if args.json:
        emit_json(out)
    else:
        print(f"job {job_id} stopping" if out["evaluation"] else f"job {job_id} already stopped")
    return 0
