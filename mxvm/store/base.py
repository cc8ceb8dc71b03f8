"""What every part of the Store shares: the Database handle."""

from __future__ import annotations

from mxvm.store.database import Database


class StoreBase:
    def __init__(self, db: Database) -> None:
        self.db = db
