"""Scenario files: what a run starts, sends, breaks and expects.

A scenario is YAML validated by pydantic. Every error names the file, the
field and what is allowed, and is raised before any container starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.checkers import INVARIANTS
from harness.coordinator.strategies import STRATEGY_NAMES
from harness.errors import ScenarioError
from harness.faults import Fault, WatchConflictFault

__all__ = ["Fault", "Scenario", "load_scenario", "scenario_schema"]

# The names come from the reference coordinator and the checkers, so that a
# new strategy or invariant is accepted in scenario files without an edit here.
# Literal[tuple] means Literal[each member], which pydantic validates.
Invariant = Literal[INVARIANTS]  # type: ignore[valid-type]
StrategyName = Literal[STRATEGY_NAMES]  # type: ignore[valid-type]


class _Strict(BaseModel):
    # strict: a YAML true is not an instance count and "7" is not a seed.
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, allow_inf_nan=False
    )


class Expect(_Strict):
    """Invariants a run must find invalid (for a faulty strategy) or valid."""

    invalid: list[Invariant] = Field(default_factory=list)
    valid: list[Invariant] = Field(default_factory=list)


class Scenario(_Strict):
    name: str = Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(ge=0, le=2**63 - 1)
    instances: int = Field(ge=1, le=16)
    strategy: StrategyName
    batches: int = Field(ge=1, le=1000)
    slots_per_batch: int = Field(ge=1, le=10_000)
    contents_per_batch: int = Field(ge=0, le=100_000)
    failures_per_batch: int = Field(0, ge=0, le=10_000)
    duplicates: int = Field(
        ge=1, le=100, description="copies of each event, sent concurrently"
    )
    spread_ms: float = Field(
        50.0,
        ge=0,
        le=10_000,
        description="the copies of one event are sent within this many milliseconds "
        "of each other, each to an instance picked at random",
    )
    rate: float = Field(
        gt=0,
        le=20_000,
        description="HTTP requests per second across all copies and instances",
    )
    duration_s: float = Field(gt=0, le=3600, description="length of the storm")
    faults: list[Fault] = Field(default_factory=list)
    settle_s: float = Field(15.0, ge=0, le=3600)
    request_timeout_s: float = Field(5.0, gt=0, le=120)
    coordinator_image: str | None = Field(
        None,
        min_length=1,
        description="a Docker image in this engine to test in place of the "
        "reference coordinator; --coordinator-image overrides it",
    )
    redis_persistence: Literal["aof", "volatile"] = "aof"
    expect: Expect = Field(default_factory=Expect)

    @model_validator(mode="after")
    def _check_consistency(self) -> Scenario:
        if self.contents_per_batch + self.failures_per_batch == 0:
            raise ValueError(
                "contents_per_batch and failures_per_batch are both 0, so the storm "
                "would send nothing; set at least one above 0"
            )
        both = sorted(set(self.expect.invalid) & set(self.expect.valid))
        if both:
            raise ValueError(
                f"expect lists {', '.join(both)} as both invalid and valid; keep each "
                "invariant in one list"
            )
        self._check_faults()
        return self

    def _check_faults(self) -> None:
        proxy_conflicts = [
            f
            for f in self.faults
            if isinstance(f, WatchConflictFault) and f.mode == "proxy"
        ]
        if len(proxy_conflicts) > 1:
            raise ValueError(
                "more than one watch-conflict fault in proxy mode; the proxy has one "
                "fraction, so keep a single entry"
            )
        names = [f"coordinator-{i}" for i in range(1, self.instances + 1)]
        for number, fault in enumerate(self.faults):
            where = f"faults[{number}] ({fault.kind})"
            targets = getattr(fault, "targets", None)
            if isinstance(targets, list):
                if not targets:
                    raise ValueError(
                        f"{where} has an empty targets list; name instances, or use "
                        "'random-instance' or 'all-instances'"
                    )
                repeated = sorted({t for t in targets if targets.count(t) > 1})
                if repeated:
                    raise ValueError(
                        f"{where} names {', '.join(repeated)} more than once in "
                        "targets; list each instance once"
                    )
                for target in targets:
                    if target not in names:
                        raise ValueError(
                            f"{where} target {target!r} is not an instance of this "
                            f"scenario; use 'random-instance', 'all-instances' or "
                            f"coordinator-1 to coordinator-{self.instances}"
                        )
            if fault.start_s > self.duration_s:
                raise ValueError(
                    f"{where} starts at start_s={fault.start_s}, after the storm "
                    f"ends (duration_s={self.duration_s}); pick start_s <= duration_s"
                )

    def with_overrides(
        self,
        strategy: str | None = None,
        instances: int | None = None,
        seed: int | None = None,
        coordinator_image: str | None = None,
    ) -> Scenario:
        """Returns a copy with command-line overrides applied and validated."""
        data = self.model_dump()
        if strategy is not None:
            data["strategy"] = strategy
            if strategy != self.strategy:
                # An expectation written for one strategy does not apply to another.
                data["expect"] = {}
        if instances is not None:
            data["instances"] = instances
        if seed is not None:
            data["seed"] = seed
        if coordinator_image is not None:
            data["coordinator_image"] = coordinator_image
        return _validate(data, source="command-line options")


def _short_repr(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid scenario"]
    for error in err.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(top level)"
        given = error.get("input")
        shown = "" if isinstance(given, dict) else f" (got {_short_repr(given)})"
        lines.append(f"  field '{field}': {error['msg']}{shown}")
    lines.append(
        "  `harness scenario schema` prints every field and its allowed values"
    )
    return "\n".join(lines)


def _validate(data: object, source: str) -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as err:
        raise ScenarioError(_format_errors(err, source)) from err


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects a key given twice in one mapping.

    PyYAML keeps the last of duplicate keys, which hides a typo such as two
    ``faults:`` lists, only one of which would run.
    """

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_scenario(path: Path) -> Scenario:
    """Reads and validates a scenario file; any problem is a ScenarioError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ScenarioError(
            f"scenario file {str(path)!r} not found; the ready ones are in scenarios/"
        ) from err
    except UnicodeDecodeError as err:
        raise ScenarioError(
            f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save the "
            "scenario as UTF-8"
        ) from err
    except OSError as err:
        raise ScenarioError(
            f"scenario file {str(path)!r} cannot be read: {err}"
        ) from err
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise ScenarioError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ScenarioError(
            f"{path}: expected a mapping of fields at the top level, "
            f"got {type(data).__name__}"
        )
    return _validate(data, source=str(path))


def scenario_schema() -> str:
    return json.dumps(Scenario.model_json_schema(), indent=2)
