"""`mxvm alloc ls|show`."""

from __future__ import annotations

import argparse
import sys

from mxvm.cli.context import client_from, resolve
from mxvm.cli.output import age, emit_json, kv, short, table


async def ls(args: argparse.Namespace) -> int:
    async with client_from(args) as client:
        job_id = await resolve(client, "jobs", args.job) if args.job else None
        allocs = await client.get("/api/v1/allocations", job_id=job_id)
    if args.json:
        emit_json(allocs)
        return 0
    rows = [
        (short(a["id"]), a["name"], short(a["node_id"]), a["desired_status"],
         a["client_status"], a["exit_code"], age(a["created_at"]))
        for a in allocs
    ]  # fmt: skip
    print(table(["ID", "NAME", "NODE", "DESIRED", "STATUS", "EXIT", "CREATED"], rows))
    return 0


async def show(args: argparse.Namespace) -> int:
    async with client_from(args) as client:
        alloc_id = await resolve(client, "allocations", args.id)
        a = await client.get(f"/api/v1/allocations/{alloc_id}")
    if args.json:
        emit_json(a)
        return 0
    r = a["resources"]
    print(
        kv(
            [
                ("ID", a["id"]),
                ("Name", a["name"]),
                ("Job", a["job_id"]),
                ("Node", a["node_id"]),
                ("Desired", f"{a['desired_status']} {a['desired_description']}".strip()),
                ("Status", f"{a['client_status']} {a['client_description']}".strip()),
                ("Exit code", a["exit_code"]),
                ("IP", a["ip"]),
                ("Resources", f"{r['cpu_millicores'] / 1000:g} CPU, {r['memory_mb']} MiB"),
                ("Devices", ", ".join(a["device_ids"]) or "-"),
                ("Ports", ", ".join(f"{k}={v}" for k, v in a["ports"].items()) or "-"),
            ]
        )
    )
    print("\nEvents")
    print(
        table(
            ["TIME", "TYPE", "MESSAGE"], [(e["time"], e["type"], e["message"]) for e in a["events"]]
        )
    )
    return 0


async def logs(args: argparse.Namespace) -> int:
    async with client_from(args) as client:
        alloc_id = await resolve(client, "allocations", args.id)
        out = sys.stdout.buffer
        async for chunk in client.stream(
            f"/api/v1/allocations/{alloc_id}/logs", follow=str(args.follow).lower()
        ):
            out.write(chunk)
            out.flush()
    return 0


async def exec_(args: argparse.Namespace) -> int:
    argv = [a for a in args.argv if a != "--"] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        print("mxvm alloc exec: give the command after --", file=sys.stderr)
        return 2
    async with client_from(args) as client:
        alloc_id = await resolve(client, "allocations", args.id)
        res = await client.post(
            f"/api/v1/allocations/{alloc_id}/exec", json={"argv": argv, "timeout_s": args.timeout}
        )
    if args.json:
        emit_json(res)
        return 0
    sys.stdout.write(res["stdout"])
    sys.stderr.write(res["stderr"])
    if res.get("error"):
        print(f"mxvm: {res['error']}", file=sys.stderr)
    return int(res["exit_code"])
