"""Errors a request can end with, each mapped to one HTTP reply of the contract."""

from __future__ import annotations

from typing import Any


class CoordinatorError(Exception):
    """A request outcome other than success; ``status`` and ``code`` form the reply.

    Only ``bad_request``, ``unavailable`` and ``internal`` replies carry a
    ``detail``, because the contract fixes the other bodies to ``{"error"}``.
    """

    status = 500
    code = "internal"
    has_detail = True

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.code)
        self.detail = detail

    def body(self) -> dict[str, Any]:
        if self.has_detail:
            return {"error": self.code, "detail": self.detail}
        return {"error": self.code}


class BadRequest(CoordinatorError):
    """Invalid request input; the detail names the field and what was expected."""

    status = 400
    code = "bad_request"


class BatchNotFound(CoordinatorError):
    """The batch was never registered, or its keys expired."""

    status = 404
    code = "not_found"
    has_detail = False


class RegistrationConflict(CoordinatorError):
    """The batch is already registered with another set of slots."""

    status = 409
    code = "conflict"
    has_detail = False


class NoSlot(CoordinatorError):
    """The batch has no available slot left for a new content or failure."""

    status = 409
    code = "no_slot"
    has_detail = False


class Contention(CoordinatorError):
    """The strategy gave up after its bounded retries under contention."""

    status = 503
    code = "contention"
    has_detail = False


class StoreUnavailable(CoordinatorError):
    """Redis or Postgres stayed unreachable for the whole retry period."""

    status = 503
    code = "unavailable"
