"""`mxvm coordinator`, `mxvm migrate` and `mxvm up` (standalone: own Postgres and Redis)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import sys
from pathlib import Path

from pydantic import SecretStr

from mxvm.agent.process import image_dir_of, run_agent
from mxvm.cli.context import TOKEN_FILE
from mxvm.config import AgentSettings, CoordinatorSettings, split_listen
from mxvm.coordinator.process import open_coordinator, serve
from mxvm.embedded import EmbeddedPostgres, EmbeddedRedis
from mxvm.image import build_dev_image
from mxvm.store import Store

AGENT_TOKEN_FILE = "agent-token"


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def stored_secret(path: Path) -> str:
    """Read a token file, creating it (0600) with a fresh random token the first time."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


async def coordinator(args: argparse.Namespace) -> int:
    overrides = {"listen": args.listen} if args.listen else {}
    settings = CoordinatorSettings(**overrides)
    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with open_coordinator(settings) as coord:
        await serve(coord, stop)
    return 0


async def migrate(_args: argparse.Namespace) -> int:
    settings = CoordinatorSettings()
    if not settings.database_url:
        print("mxvm migrate: set MXVM_DATABASE_URL", file=sys.stderr)
        return 2
    store = await Store.connect(settings.database_url)
    try:
        applied = await store.migrate()
    finally:
        await store.close()
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


def _banner(settings: CoordinatorSettings, state: Path) -> str:
    url = f"http://{settings.listen}"
    return (
        f"mxvm is up\n"
        f"  API:         {url}  (OpenAPI: {url}/api/v1/openapi.json)\n"
        f"  admin token: {state / TOKEN_FILE}\n"
        f"  state dir:   {state}\n"
        f"  try:         export MXVM_URL={url} MXVM_TOKEN=$(cat {state / TOKEN_FILE})\n"
        f"               mxvm run -- uname -a      # a command in a fresh microVM\n"
        f"               mxvm node ls; mxvm job ls; mxvm alloc logs -f ID\n"
        f"  stop:        Ctrl-C"
    )


def _prepare_state(base: CoordinatorSettings) -> tuple[Path, str, str]:
    """The state dir with its admin and agent tokens (MXVM_ADMIN_TOKEN wins when set)."""
    state = Path(base.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    admin = base.admin_token.get_secret_value() if base.admin_token else None
    if admin is None:
        admin = stored_secret(state / TOKEN_FILE)
    else:
        (state / TOKEN_FILE).write_text(admin + "\n")
        (state / TOKEN_FILE).chmod(0o600)
    return state, admin, stored_secret(state / AGENT_TOKEN_FILE)


async def _backends(
    base: CoordinatorSettings, state: Path, stack: contextlib.AsyncExitStack
) -> tuple[str, str]:
    """The Postgres and Redis URLs: the configured ones, or our own started here."""
    db_url, redis_url = base.database_url, base.redis_url
    if not db_url:
        pg = EmbeddedPostgres(state / "postgres")
        stack.push_async_callback(pg.stop)
        print("starting Postgres ...", file=sys.stderr)
        db_url = await pg.start()
    if not redis_url:
        rd = EmbeddedRedis(state / "redis")
        stack.push_async_callback(rd.stop)
        print("starting Redis ...", file=sys.stderr)
        redis_url = await rd.start()
    return db_url, redis_url


async def _local_agent(
    settings: CoordinatorSettings, state: Path, token: str, stop: asyncio.Event
) -> asyncio.Task[None]:
    """A host agent for this machine, with the dev guest image built if it is missing."""
    host, port = split_listen(settings.listen)
    agent_settings = AgentSettings(
        url=f"http://{host}:{port}",
        agent_token=SecretStr(token),
        state_dir=state / "agent",
        api_listen=f"127.0.0.1:{port + 1}",
    )
    dest = image_dir_of(agent_settings) / "default"
    print(f"guest image: {dest} (building if needed) ...", file=sys.stderr)
    await asyncio.to_thread(
        build_dev_image, dest, progress=lambda m: print(f"  {m}", file=sys.stderr)
    )
    ready = asyncio.Event()
    task = asyncio.create_task(run_agent(agent_settings, stop, ready=ready), name="agent")
    await asyncio.wait({task, asyncio.create_task(ready.wait())}, return_when="FIRST_COMPLETED")
    if task.done():
        task.result()  # raises why the agent could not start
    return task


async def up(args: argparse.Namespace) -> int:
    base = CoordinatorSettings()
    state, admin, agent_token = _prepare_state(base)
    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with contextlib.AsyncExitStack() as stack:
        db_url, redis_url = await _backends(base, state, stack)
        settings = base.model_copy(
            update={
                "database_url": db_url,
                "redis_url": redis_url,
                "listen": args.listen or base.listen,
                "admin_token": SecretStr(admin),
                "agent_tokens": [*base.agent_tokens, SecretStr(agent_token)],
            }
        )
        coord = await stack.enter_async_context(open_coordinator(settings))
        ready = asyncio.Event()
        server = asyncio.create_task(serve(coord, stop, ready=ready), name="coordinator")
        await asyncio.wait(
            {server, asyncio.create_task(ready.wait())}, return_when="FIRST_COMPLETED"
        )
        tasks = [server]
        if ready.is_set() and not args.no_agent:
            tasks.append(await _local_agent(settings, state, agent_token, stop))
        if ready.is_set():
            print(_banner(settings, state), flush=True)
        await asyncio.gather(*tasks)
    return 0
