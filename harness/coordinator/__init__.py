"""The reference coordinator: an aiohttp service that assigns contents to slots.

Run it with ``python -m harness.coordinator`` (settings from the environment),
or in-process with ``create_app(Settings(...))``.
"""

from harness.coordinator.app import create_app
from harness.coordinator.settings import Settings, SettingsError
from harness.coordinator.strategies import (
    CORRECT_STRATEGIES,
    FAULTY_STRATEGIES,
    STRATEGY_NAMES,
)

__all__ = [
    "CORRECT_STRATEGIES",
    "FAULTY_STRATEGIES",
    "STRATEGY_NAMES",
    "Settings",
    "SettingsError",
    "create_app",
]
