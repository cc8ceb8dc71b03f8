"""`mxvm node ls|show|eligibility|drain`."""

from __future__ import annotations

import argparse
from typing import Any

from mxvm.cli.context import client_from, resolve
from mxvm.cli.output import age, emit_json, kv, short, table


def _res(r: dict[str, int]) -> str:
    return f"{r['cpu_millicores'] / 1000:g} CPU, {r['memory_mb']} MiB, {r['disk_mb']} MiB disk"


async def ls(args: argparse.Namespace) -> int:
    async with client_from(args) as client:
        nodes = await client.get("/api/v1/nodes")
    if args.json:
        emit_json(nodes)
        return 0
    rows = [
        (short(n["id"]), n["name"], n["address"], n["status"],
         n["eligibility"] + (", draining" if n.get("drain") else ""),
         ",".join(n["drivers"]), len(n["devices"]), age(n["last_heartbeat"]))
        for n in nodes
    ]  # fmt: skip
    heads = ["ID", "NAME", "ADDRESS", "STATUS", "ELIGIBILITY", "DRIVERS", "DEVICES", "HEARTBEAT"]
    print(table(heads, rows))
    return 0


def _drain(node: dict[str, Any]) -> str:
    if not node["drain"]:
        return "no"
    deadline = (node.get("drain_strategy") or {}).get("deadline")
    return f"draining until {deadline}" if deadline else "draining, no deadline"


async def show(args: argparse.Namespace) -> int:
    async with client_from(args) as client:
        node_id = await resolve(client, "nodes", args.id)
        node = await client.get(f"/api/v1/nodes/{node_id}")
        allocs = await client.get("/api/v1/allocations", node_id=node_id)
    if args.json:
        emit_json({"node": node, "allocations": allocs})
        return 0
    print(
        kv(
            [
                ("ID", node["id"]),
                ("Name", node["name"]),
                ("Address", node["address"]),
                ("Status", node["status"]),
                ("Eligibility", node["eligibility"]),
                ("Drain", _drain(node)),
                ("Subnet", node["subnet"]),
                ("Resources", _res(node["resources"])),
                ("Reserved", _res(node["reserved"])),
                ("Drivers", ", ".join(node["drivers"])),
                ("Last heartbeat", age(node["last_heartbeat"])),
            ]
        )
    )
    if node["devices"]:
        print("\nDevices")
        rows = [
            (d["id"], d["kind"], d["vendor"], d["model"], d["memory_mb"],
             "healthy" if d["healthy"] else f"UNHEALTHY: {d['health_reason']}")
            for d in node["devices"]
        ]  # fmt: skip
        print(table(["ID", "KIND", "VENDOR", "MODEL", "MEMORY", "HEALTH"], rows))
    live = [a for a in allocs if a["client_status"] not in ("complete", "failed", "lost")]
    print(f"\nAllocations: {len(live)} live, {len(allocs)} total")
    return 0


async def eligibility(args: argparse.Namespace) -> int:
    async with client_from(args) as client:
        node_id = await resolve(client, "nodes", args.id)
        node = await client.post(
            f"/api/v1/nodes/{node_id}/eligibility", json={"eligibility": args.eligibility}
        )
    emit_json(node) if args.json else print(f"node {node['name']} is {node['eligibility']}")
    return 0


async def drain(args: argparse.Namespace) -> int:
    body: dict[str, object] = {"enable": not args.disable, "ignore_system_jobs": args.ignore_system}
    if not args.disable:
        body["deadline_s"] = args.deadline
    async with client_from(args) as client:
        node_id = await resolve(client, "nodes", args.id)
        out = await client.post(f"/api/v1/nodes/{node_id}/drain", json=body)
    if args.json:
        emit_json(out)
        return 0
    node = out["node"]
    if args.disable:
        print(f"node {node['name']}: drain cancelled; it stays {node['eligibility']}")
        return 0
    state = "draining" if node["drain"] else "drained"
    deadline = (node.get("drain_strategy") or {}).get("deadline")
    until = f" until {deadline}, when whatever is left is stopped" if deadline else ""
    print(f"node {node['name']} is {state}{until if node['drain'] else ''}; {node['eligibility']}")
    print(f"stopped {len(out['stopped'])} allocation(s); {len(out['evaluations'])} evaluation(s)")
    return 0
