"""Postgres and Redis run as child processes of `mxvm up` (standalone mode) and of the tests.

Nothing here talks the Postgres or Redis protocol beyond a readiness probe: asyncpg belongs
to mxvm.store and redis to mxvm.leases.
"""

from mxvm.embedded.binaries import (
    PostgresBinaries,
    find_postgres_binaries,
    find_redis_server,
)
from mxvm.embedded.errors import EmbeddedServerError
from mxvm.embedded.postgres import EmbeddedPostgres
from mxvm.embedded.redis import EmbeddedRedis

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "EmbeddedServerError",
    "PostgresBinaries",
    "find_postgres_binaries",
    "find_redis_server",
]
