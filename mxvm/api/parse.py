"""Request parsing: a JSON body into a model, query numbers; bad input is a named 4xx.
(No coordinator imports: the host agent's small API uses it too.)"""

from __future__ import annotations

import json
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from mxvm.api.errors import field_errors
from mxvm.errors import InvalidSpec, MxvmError

M = TypeVar("M", bound=BaseModel)


class BadRequest(MxvmError):
    status = 400
    title = "bad request"


async def body(request: web.Request, model: type[M]) -> M:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = field_errors(exc)
        fields = ", ".join(e["field"] for e in errors)
        raise InvalidSpec(f"invalid {model.__name__}: {fields}", errors=errors) from exc


def query_number(request: web.Request, name: str, default: float, lo: float, hi: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw.removesuffix("s"))
    except ValueError as exc:
        raise BadRequest(f"query parameter {name!r} must be a number, got {raw!r}") from exc
    if not lo <= value <= hi:
        raise BadRequest(f"query parameter {name!r} must be between {lo:g} and {hi:g}")
    return value
