"""What every client command needs: the coordinator's URL and token, and id-prefix lookup."""

from __future__ import annotations

import argparse
from pathlib import Path

from mxvm.client import ApiClient
from mxvm.config import ClientSettings
from mxvm.errors import Conflict, NotFound

TOKEN_FILE = "admin-token"


def client_from(args: argparse.Namespace) -> ApiClient:
    s = ClientSettings()
    url = getattr(args, "url", None) or s.url
    token = s.token.get_secret_value() if s.token else None
    if token is None:
        # On the machine running `mxvm up`, use the token it stored.
        path = Path(s.state_dir) / TOKEN_FILE
        if path.exists():
            token = path.read_text().strip()
    return ApiClient(url, token)


async def resolve(client: ApiClient, kind: str, ident: str) -> str:
    """Accept a full id or a unique prefix of one (as `mxvm job ls` shows them)."""
    if len(ident) >= 36:
        return ident
    items = await client.get(f"/api/v1/{kind}")
    matches = [i["id"] for i in items if i["id"].startswith(ident)]
    if kind in ("nodes", "jobs"):  # names work too; for jobs, the live one with that name
        named = [i for i in items if i["name"] == ident and not i.get("stop", False)]
        matches += [i["id"] for i in named if i["id"] not in matches]
    if not matches:
        raise NotFound(f"no {kind[:-1]} matches {ident!r}")
    if len(matches) > 1:
        raise Conflict(f"{ident!r} matches {len(matches)} {kind}; give more characters")
    return str(matches[0])
