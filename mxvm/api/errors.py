"""The one error middleware: every failure leaves as application/problem+json.
(No coordinator imports here: the host agent's small API uses it too.)"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from pydantic import ValidationError

from mxvm.errors import BackendUnavailable, MxvmError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]}
        for e in exc.errors()
    ]


def problem(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: object
) -> web.Response:
    slug = title.replace(" ", "-")
    payload: dict[str, object] = {
        "type": f"urn:mxvm:problem:{slug}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    payload.update({k: v for k, v in extra.items() if v is not None})
    resp = web.json_response(payload, status=status, headers=headers)
    resp.content_type = "application/problem+json"
    return resp


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BackendUnavailable as exc:
        log.warning("api.backend_unavailable %s %s", exc.backend, exc.detail)
        return problem(
            503,
            exc.title,
            exc.detail,
            headers={"Retry-After": str(exc.retry_after_s)},
            backend=exc.backend,
        )
    except MxvmError as exc:
        return problem(exc.status, exc.title, exc.detail, **exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem(exc.status, exc.reason.lower(), exc.text or exc.reason)
    except Exception:
        log.exception("api.internal_error %s %s", request.method, request.path)
        return problem(500, "internal error", "unexpected error; see the coordinator log")
