"""The coordinator: API-facing operations (service), leader election and the leader-only
loops (evaluator: the only caller of store.apply_plans; reaper: node loss)."""

from mxvm.coordinator.service import Coordinator
from mxvm.coordinator.watch import NodeWatch

__all__ = ["Coordinator", "NodeWatch"]
