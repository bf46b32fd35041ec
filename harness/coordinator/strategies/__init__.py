"""Assignment strategies, one module each, selected by name (COORDINATOR_STRATEGY)."""

from __future__ import annotations

from harness.coordinator.strategies.base import (
    BatchState,
    Registration,
    SlotResult,
    Strategy,
)
from harness.coordinator.strategies.check_then_act import CheckThenActStrategy
from harness.coordinator.strategies.double_completion import DoubleCompletionStrategy
from harness.coordinator.strategies.immediate_spop import ImmediateSpopStrategy
from harness.coordinator.strategies.in_memory import InMemoryStrategy
from harness.coordinator.strategies.lua import LuaStrategy
from harness.coordinator.strategies.lua_partial_write import LuaPartialWriteStrategy
from harness.coordinator.strategies.no_script_reload import NoScriptReloadStrategy
from harness.coordinator.strategies.pop_then_record import PopThenRecordStrategy
from harness.coordinator.strategies.postgres import PostgresStrategy
from harness.coordinator.strategies.unbounded_retry import UnboundedRetryStrategy
from harness.coordinator.strategies.unique_as_failure import UniqueAsFailureStrategy
from harness.coordinator.strategies.watch import WatchStrategy

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        LuaStrategy,
        WatchStrategy,
        PostgresStrategy,
        ImmediateSpopStrategy,
        CheckThenActStrategy,
        InMemoryStrategy,
        PopThenRecordStrategy,
        DoubleCompletionStrategy,
        UnboundedRetryStrategy,
        LuaPartialWriteStrategy,
        NoScriptReloadStrategy,
        UniqueAsFailureStrategy,
    )
}
STRATEGY_NAMES: tuple[str, ...] = tuple(STRATEGIES)
CORRECT_STRATEGIES: tuple[str, ...] = tuple(
    name for name, cls in STRATEGIES.items() if cls.correct
)
FAULTY_STRATEGIES: tuple[str, ...] = tuple(
    name for name, cls in STRATEGIES.items() if not cls.correct
)

__all__ = [
    "CORRECT_STRATEGIES",
    "FAULTY_STRATEGIES",
    "STRATEGIES",
    "STRATEGY_NAMES",
    "BatchState",
    "Registration",
    "SlotResult",
    "Strategy",
]
