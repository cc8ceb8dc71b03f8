"""Bearer-token auth. Scopes: `public` (no token), `any` (admin or agent), `agent` (the
agent-facing endpoints; admin may call them too), `admin` (everything else). Agent tokens
can never reach an admin endpoint."""

from __future__ import annotations

import hmac
from enum import StrEnum

from aiohttp import web

from mxvm.api.errors import Handler
from mxvm.errors import Forbidden, Unauthorized


class Scope(StrEnum):
    PUBLIC = "public"
    ANY = "any"
    AGENT = "agent"
    ADMIN = "admin"


SCOPE = web.AppKey("route_scopes", dict[str, Scope])  # route name -> scope


class Tokens:
    def __init__(self, admin: str | None, agents: list[str]) -> None:
        self._admin = admin
        self._agents = [a for a in agents if a]

    def role(self, token: str) -> Scope | None:
        if self._admin and hmac.compare_digest(token.encode(), self._admin.encode()):
            return Scope.ADMIN
        if any(hmac.compare_digest(token.encode(), a.encode()) for a in self._agents):
            return Scope.AGENT
        return None


TOKENS = web.AppKey("tokens", Tokens)


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    return token.strip()


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route
    name = route.name if route.resource is not None else None
    scope = request.app[SCOPE].get(name or "", Scope.ADMIN)
    if scope == Scope.PUBLIC:
        return await handler(request)
    role = request.app[TOKENS].role(_bearer(request))
    if role is None:
        raise Unauthorized("invalid token")
    if scope == Scope.ADMIN and role != Scope.ADMIN:
        raise Forbidden("this endpoint needs the admin token; agent tokens cannot call it")
    return await handler(request)
