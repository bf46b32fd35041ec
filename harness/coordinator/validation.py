"""Parsing and validation of request bodies; every error names the field."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from harness.coordinator.errors import BadRequest

MAX_SLOTS = 10_000
MAX_ID_LENGTH = 256
MAX_FILE_NAME_LENGTH = 1024
# Room for MAX_SLOTS slot ids of MAX_ID_LENGTH characters, JSON-quoted.
MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class BatchRegistration:
    """The body of ``POST /batches``."""

    batch_id: str
    slot_ids: list[str]


@dataclass(frozen=True)
class ContentDelivery:
    """The body of ``POST /batches/{id}/content``."""

    text_storage_id: str
    file_name: str


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be one JSON object."""
    try:
        # Decoded here, because json.loads would guess UTF-16 or UTF-32 from bytes.
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadRequest(f"request body is not UTF-8: {err}") from err
    try:
        body = json.loads(text)
    except json.JSONDecodeError as err:
        raise BadRequest(f"request body is not valid JSON: {err}") from err
    if not isinstance(body, dict):
        raise BadRequest(
            f"request body is a JSON {_json_type(body)}; expected a JSON object"
        )
    return body


def require_text(
    body: dict[str, Any], field: str, max_length: int = MAX_ID_LENGTH
) -> str:
    """Return ``body[field]``, which must be a non-empty string of bounded length."""
    if field not in body:
        raise BadRequest(f"field {field!r} is missing")
    value = body[field]
    return _check_text(value, f"field {field!r}", max_length)


def _check_text(value: Any, name: str, max_length: int) -> str:
    if not isinstance(value, str):
        raise BadRequest(
            f"{name} is a JSON {_json_type(value)} ({value!r:.80}); expected a string"
        )
    if not value:
        raise BadRequest(f"{name} is empty; expected a non-empty string")
    if len(value) > max_length:
        raise BadRequest(
            f"{name} has {len(value)} characters; expected at most {max_length}"
        )
    return value


def check_batch_id(batch_id: str, name: str = "field 'batch_id'") -> str:
    """Validate a batch id, which must also fit in one URL path segment."""
    _check_text(batch_id, name, MAX_ID_LENGTH)
    if "/" in batch_id:
        raise BadRequest(
            f"{name} {batch_id!r} contains '/'; it must fit in one URL path segment"
        )
    return batch_id


def parse_registration(body: dict[str, Any]) -> BatchRegistration:
    batch_id = check_batch_id(require_text(body, "batch_id"))
    if "slot_ids" not in body:
        raise BadRequest("field 'slot_ids' is missing")
    slot_ids = body["slot_ids"]
    if not isinstance(slot_ids, list):
        raise BadRequest(
            f"field 'slot_ids' is a JSON {_json_type(slot_ids)}; "
            "expected a list of strings"
        )
    if not slot_ids:
        raise BadRequest("field 'slot_ids' is empty; expected at least one slot id")
    if len(slot_ids) > MAX_SLOTS:
        raise BadRequest(
            f"field 'slot_ids' has {len(slot_ids)} slot ids; expected at most "
            f"{MAX_SLOTS}"
        )
    for position, slot_id in enumerate(slot_ids):
        _check_text(slot_id, f"slot_ids[{position}]", MAX_ID_LENGTH)
    if len(set(slot_ids)) != len(slot_ids):
        duplicates = sorted(s for s, n in Counter(slot_ids).items() if n > 1)
        raise BadRequest(
            f"field 'slot_ids' repeats {duplicates[:5]!r}; each slot id must be unique"
        )
    return BatchRegistration(batch_id, slot_ids)


def parse_content(body: dict[str, Any]) -> ContentDelivery:
    return ContentDelivery(
        text_storage_id=require_text(body, "text_storage_id"),
        file_name=require_text(body, "file_name", MAX_FILE_NAME_LENGTH),
    )


def parse_failure(body: dict[str, Any]) -> str:
    """Return the failure id of a ``POST /batches/{id}/failures`` body."""
    return require_text(body, "failure_id")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
