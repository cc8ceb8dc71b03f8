"""The one error type of mxvm.embedded."""

from __future__ import annotations

from mxvm.errors import MxvmError


class EmbeddedServerError(MxvmError):
    """An embedded Postgres or Redis could not be found, initialised, started or stopped."""

    title = "embedded server error"
