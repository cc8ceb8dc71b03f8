"""The MxvmError tree.

Errors are raised by the module that owns the failing dependency (store, leases, drivers)
and mapped to HTTP problem+json in exactly one place: mxvm.api.errors.
"""

from __future__ import annotations

from typing import Any


class MxvmError(Exception):
    """Base of every error mxvm raises on purpose."""

    status = 500
    title = "internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(MxvmError):
    status = 404
    title = "not found"


class Conflict(MxvmError):
    status = 409
    title = "conflict"


class InvalidState(MxvmError):
    """The request is well-formed but the object is in the wrong state for it."""

    status = 409
    title = "invalid state"


class InvalidSpec(MxvmError):
    """A spec failed validation; `errors` names each bad field."""

    status = 422
    title = "invalid spec"


class Unauthorized(MxvmError):
    status = 401
    title = "unauthorized"


class Forbidden(MxvmError):
    status = 403
    title = "forbidden"


class BackendUnavailable(MxvmError):
    """Postgres or Redis cannot be reached; the caller should retry later."""

    status = 503
    title = "backend unavailable"

    def __init__(self, detail: str, *, backend: str, retry_after_s: int = 2) -> None:
        super().__init__(detail, backend=backend)
        self.backend = backend
        self.retry_after_s = retry_after_s


class StaleEpoch(MxvmError):
    """A plan carried a leader epoch older than the one Postgres has recorded."""

    status = 409
    title = "stale leader epoch"

    def __init__(self, plan_epoch: int, current_epoch: int) -> None:
        super().__init__(
            f"plan epoch {plan_epoch} is older than the current epoch {current_epoch}",
            plan_epoch=plan_epoch,
            current_epoch=current_epoch,
        )
        self.plan_epoch = plan_epoch
        self.current_epoch = current_epoch
