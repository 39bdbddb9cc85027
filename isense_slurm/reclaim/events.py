"""The daemon's receiver for node hook events: POST /internal/events.

    app.router.add_post("/internal/events", make_events_route(secret, on_event))

(before any catch-all route). The body is one event or {"events": [...]} (a hook sends
its spooled events with its own). `Authorization: Bearer hook_token(secret, node)`
must match every event's node. Each valid event, normalised (see contracts/events.py), goes
to on_event(event) in order; a coroutine result is scheduled, not awaited, so the hook
gets its 204 at once. 400 names the bad field (the hook then drops the batch), 401 a
bad token, 413 a body over the limit.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from isense_slurm.contracts.events import EventError, events_of, node_of, validate_event
from isense_slurm.http.access import bearer
from isense_slurm.http.body import Invalid, parse
from isense_slurm.http.errors import error_response
from isense_slurm.secrets import check_hook_token

log = logging.getLogger("isense.events")

MAX_BODY_BYTES = 4 << 20  # a full spool (1000 events) is well under this
MAX_EVENTS = 5000


def _error(status: int, message: str) -> web.Response:
    return error_response(status, message)


def make_events_route(secret: bytes, on_event: Callable[[dict], Any]):
    pending: set[asyncio.Future] = set()  # scheduled on_event coroutines, kept alive

    async def events_route(request: web.Request) -> web.Response:
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return _error(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "the body is too large")
        if len(raw) > MAX_BODY_BYTES:
            return _error(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        try:
            body = parse(raw)  # also refuses non-UTF-8, NaN and nesting deep enough to recurse
        except Invalid as err:
            return _error(400, err.message)
        try:
            items = events_of(body)
            if len(items) > MAX_EVENTS:
                raise EventError(f"events: at most {MAX_EVENTS} per request")
            where = (lambda i: f"events[{i}]") if isinstance(body, dict) and "events" in body else (lambda i: "event")
            nodes = {node_of(item, where(i)) for i, item in enumerate(items)}
        except EventError as err:
            return _error(400, str(err))
        token = bearer(request.headers.get("Authorization"))
        if not token or not all(check_hook_token(secret, node, token) for node in nodes):
            return _error(401, "bad or missing hook token for node " + ",".join(sorted(nodes)))
        try:
            events = [validate_event(item, where(i)) for i, item in enumerate(items)]
        except EventError as err:
            return _error(400, str(err))
        for event in events:
            try:
                result = on_event(event)
                if inspect.isawaitable(result):
                    future = asyncio.ensure_future(result)
                    pending.add(future)
                    future.add_done_callback(_finished(pending))
            except Exception:  # noqa: BLE001 - a consumer bug must not make hooks re-send forever
                log.exception("hook event %s from %s not handled", event["kind"], event["node"])
        return web.Response(status=204)

    return events_route


def _finished(pending: set):
    def done(future: asyncio.Future) -> None:
        pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("hook event handler failed: %s", future.exception())

    return done
