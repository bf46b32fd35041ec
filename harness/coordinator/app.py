"""The coordinator's aiohttp application: routes, error replies and startup."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from harness.coordinator.errors import BadRequest, BatchNotFound, CoordinatorError
from harness.coordinator.metrics import (
    ASSIGNMENT_ERROR,
    ASSIGNMENT_OUTCOMES,
    CoordinatorMetrics,
)
from harness.coordinator.settings import Settings
from harness.coordinator.stores import StoreRetry, Stores, check_health, open_stores
from harness.coordinator.strategies import STRATEGIES, Registration, Strategy
from harness.coordinator.strategies.base import SlotResult
from harness.coordinator.validation import (
    MAX_BODY_BYTES,
    check_batch_id,
    parse_content,
    parse_failure,
    parse_json_object,
    parse_registration,
)

logger = logging.getLogger(__name__)


@dataclass
class AppState:
    """State the handlers share; the stores and strategy are set during startup."""

    settings: Settings
    metrics: CoordinatorMetrics
    stores: Stores | None = None
    strategy: Strategy | None = None
    retry: StoreRetry | None = None


STATE = web.AppKey("state", AppState)
# Request key under which a handler stores its outcome label for the metrics.
# aiohttp 3.14 warns about plain string keys; older releases lack RequestKey.
OUTCOME = (
    web.RequestKey("outcome", str)
    if hasattr(web, "RequestKey")
    else "coordinator.outcome"
)


def create_app(settings: Settings) -> web.Application:
    """Build the app; it connects to the stores when it starts, not here."""
    app = web.Application(
        client_max_size=MAX_BODY_BYTES, middlewares=[_reply_middleware]
    )
    app[STATE] = AppState(
        settings, CoordinatorMetrics(settings.strategy, settings.instance_id)
    )
    app.cleanup_ctx.append(_run_stores)
    app.router.add_post("/batches", register_batch, name="register")
    app.router.add_post("/batches/{batch_id}/content", assign_content, name="content")
    app.router.add_post("/batches/{batch_id}/failures", record_failure, name="failure")
    app.router.add_get("/batches/{batch_id}", read_batch, name="read")
    app.router.add_get("/health", health, name="health")
    app.router.add_get("/metrics", metrics, name="metrics")
    return app


async def _run_stores(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    settings = state.settings
    stores = await open_stores(settings, state.metrics)
    try:
        strategy = STRATEGIES[settings.strategy](stores, settings, state.metrics)
        await strategy.start()
    except BaseException:
        await stores.close()
        raise
    state.stores = stores
    state.strategy = strategy
    state.retry = StoreRetry(settings.store_retry_s, state.metrics)
    logger.info(
        "coordinator %s started with strategy %s on port %d",
        settings.instance_id,
        settings.strategy,
        settings.port,
    )
    try:
        yield
    finally:
        try:
            await strategy.stop()
        finally:
            await stores.close()
        logger.info("coordinator %s stopped", settings.instance_id)


@web.middleware
async def _reply_middleware(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """Turn every error into a JSON reply and count each request by outcome."""
    try:
        response = await handler(request)
        outcome = request.get(OUTCOME, str(response.status))
    except CoordinatorError as err:
        response = web.json_response(err.body(), status=err.status)
        outcome = err.code
    except web.HTTPException as err:
        response = _framework_error_reply(request, err)
        outcome = str(response.status)
    except asyncio.CancelledError:
        raise
    except Exception as err:
        logger.exception("unexpected error in %s %s", request.method, request.path)
        response = web.json_response(
            {
                "error": "internal",
                "detail": f"unexpected {type(err).__name__}: {err}; "
                "the coordinator log has the traceback",
            },
            status=500,
        )
        outcome = "internal"
    route = request.match_info.route.name or "unknown"
    request.app[STATE].metrics.requests.labels(route, outcome).inc()
    return response


def _framework_error_reply(
    request: web.Request, err: web.HTTPException
) -> web.Response:
    """Reply to aiohttp's own errors (no route, wrong method, body too large)."""
    if isinstance(err, web.HTTPRequestEntityTooLarge):
        return web.json_response(
            BadRequest(f"request body is larger than {MAX_BODY_BYTES} bytes").body(),
            status=400,
        )
    if isinstance(err, web.HTTPNotFound):
        body = {
            "error": "not_found",
            "detail": f"no route for {request.method} {request.path}",
        }
    elif isinstance(err, web.HTTPMethodNotAllowed):
        body = {
            "error": "method_not_allowed",
            "detail": f"{request.method} is not allowed on {request.path}; "
            f"allowed: {', '.join(sorted(err.allowed_methods))}",
        }
    else:
        body = {"error": err.reason.lower().replace(" ", "_"), "detail": err.text}
    return web.json_response(body, status=err.status)


async def _read_json(request: web.Request) -> dict:
    return parse_json_object(await request.read())


def _path_batch_id(request: web.Request) -> str:
    return check_batch_id(request.match_info["batch_id"], "batch id in the path")


def _started(request: web.Request) -> tuple[AppState, Strategy, StoreRetry]:
    state = request.app[STATE]
    assert state.strategy is not None and state.retry is not None, "app not started"
    return state, state.strategy, state.retry


async def register_batch(request: web.Request) -> web.Response:
    state, strategy, retry = _started(request)
    registration = parse_registration(await _read_json(request))
    result = await retry.run(
        lambda: strategy.register_batch(registration.batch_id, registration.slot_ids),
        f"registration of batch {registration.batch_id!r}",
    )
    request[OUTCOME] = result.value
    state.metrics.batches.note(registration.batch_id)
    status = 201 if result is Registration.CREATED else 200
    return web.json_response({"batch_id": registration.batch_id}, status=status)


async def assign_content(request: web.Request) -> web.Response:
    _, strategy, _ = _started(request)
    batch_id = _path_batch_id(request)
    delivery = parse_content(await _read_json(request))
    result = await _take_slot_timed(
        request,
        batch_id,
        lambda: strategy.assign_content(
            batch_id, delivery.text_storage_id, delivery.file_name
        ),
        f"content {delivery.text_storage_id!r} of batch {batch_id!r}",
    )
    return web.json_response({"slot_id": result.slot_id, "created": result.created})


async def record_failure(request: web.Request) -> web.Response:
    _, strategy, _ = _started(request)
    batch_id = _path_batch_id(request)
    failure_id = parse_failure(await _read_json(request))
    result = await _take_slot_timed(
        request,
        batch_id,
        lambda: strategy.record_failure(batch_id, failure_id),
        f"failure {failure_id!r} of batch {batch_id!r}",
    )
    return web.json_response({"slot_id": result.slot_id, "created": result.created})


async def _take_slot_timed(
    request: web.Request,
    batch_id: str,
    operation: Callable[[], Awaitable[SlotResult]],
    description: str,
) -> SlotResult:
    """Run a content or failure operation with store retries, timing it by outcome."""
    state, _, retry = _started(request)
    started = time.perf_counter()
    outcome = ASSIGNMENT_ERROR
    try:
        result = await retry.run(operation, description)
        outcome = "assigned" if result.created else "replay"
        request[OUTCOME] = outcome
        return result
    except CoordinatorError as err:
        if err.code in ASSIGNMENT_OUTCOMES:
            outcome = err.code
        raise
    finally:
        state.metrics.observe_assignment(outcome, time.perf_counter() - started)
        if outcome in ("assigned", "replay", "no_slot"):
            state.metrics.batches.note(batch_id)


async def read_batch(request: web.Request) -> web.Response:
    state, strategy, retry = _started(request)
    batch_id = _path_batch_id(request)
    batch = await retry.run(
        lambda: strategy.read_batch(batch_id), f"read of batch {batch_id!r}"
    )
    request[OUTCOME] = "ok"
    state.metrics.batches.note(batch_id)
    return web.json_response(batch.to_json())


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = {"instance": state.settings.instance_id, "strategy": state.settings.strategy}
    assert state.stores is not None, "app not started"
    problem = await check_health(state.stores)
    if problem is None:
        request[OUTCOME] = "ok"
        return web.json_response({"status": "ok", **body})
    request[OUTCOME] = "unavailable"
    return web.json_response(
        {"status": "unavailable", "detail": problem, **body}, status=503
    )


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.strategy is not None:
        # Bounded by a deadline, so that a scrape replies while a store hangs.
        await state.metrics.batches.refresh(state.strategy.read_batch, BatchNotFound)
    return web.Response(
        body=generate_latest(state.metrics.registry),
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )
