"""Streamed (SSE) requests: relay vLLM's events, continue on another worker when one
goes, and commit the ledger row before the final `data: [DONE]`.

Upstream always gets `stream_options.include_usage = true` so every stream can be
metered; the usage chunk reaches the client only if the client asked for it. Until the
first upstream 200 nothing is sent, so a worker failing before that is retried like a
non-streamed request. Once bytes went out, a failed attempt is continued elsewhere
(see sse.continuation_body); when that is impossible the stream ends with an
OpenAI-style error event and `data: [DONE]`, never a hang.
"""

import json
import logging

from aiohttp import web

from isense_slurm.contracts.states import RequestStatus
from isense_slurm.gateway.calls import Call, make_row
from isense_slurm.gateway.registry import LiveWorker
from isense_slurm.gateway.sse import DONE_EVENT, SSEBuffer, StreamState, continuation_body
from isense_slurm.gateway.upstream import MAX_ATTEMPTS, UPSTREAM_ERRORS, Upstream, post_upstream
from isense_slurm.http.errors import error_response, sse_error_event

log = logging.getLogger("isense.gateway")

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

# Client-side write failures (the client went away); upstream ones are UPSTREAM_ERRORS.
CLIENT_GONE = (ConnectionError, RuntimeError)

DONE, UPSTREAM_FAILED, CLIENT_LEFT = "done", "upstream", "client"
REFUSED = "refused"  # a worker's 4xx: the request itself is wrong


def upstream_body(body: dict) -> tuple[dict, bool]:
    """The client's body with usage forced on; and whether the client asked for usage."""
    options = body.get("stream_options")
    options = dict(options) if isinstance(options, dict) else {}
    client_usage = options.get("include_usage") is True
    options["include_usage"] = True
    return {**body, "stream_options": options}, client_usage


async def pump(upstream, response: web.StreamResponse, state: StreamState) -> str:
    """Copy one attempt's events to the client until [DONE], a failure, or a gone client."""
    frames = SSEBuffer()
    readany = upstream.readany
    while True:
        try:
            chunk = await readany()
        except UPSTREAM_ERRORS as err:
            state.error = state.error or f"{type(err).__name__}: {err}"
            return UPSTREAM_FAILED
        if not chunk:
            state.error = state.error or "stream ended without [DONE]"
            return UPSTREAM_FAILED
        out = [e for e in map(state.on_event, frames.feed(chunk)) if e is not None]
        if out:
            try:
                await response.write(b"".join(out) if len(out) > 1 else out[0])
            except CLIENT_GONE:
                return CLIENT_LEFT
        if state.done:
            return DONE if state.ok else UPSTREAM_FAILED
        if state.error:
            return UPSTREAM_FAILED


async def relay(up: Upstream, request: web.Request, call: Call) -> web.StreamResponse:
    body, client_usage = upstream_body(call.body)
    payload = json.dumps(body).encode()
    running = client_usage and body["stream_options"].get("continuous_usage_stats") is True
    state = StreamState(chat=call.is_chat, client_usage=client_usage, client_running_usage=running)
    response: web.StreamResponse | None = None
    tried: list[str] = []
    failure = "no live worker"
    worker = None
    attempt = 0
    for attempt in range(1, MAX_ATTEMPTS + 1):
        picked = up.registry.pick(call.model, tried)
        if picked is None:
            break
        worker = picked  # the last worker tried stays named in a cut stream's row
        if response is not None:  # bytes went out: continue where the client is
            resumed = continuation_body(body, state, chat=call.is_chat)
            if resumed is None:
                failure += "; the stream cannot be continued"
                break
            payload = json.dumps(resumed).encode()
        tried.append(worker.job_id)
        state.start_attempt(continuing=response is not None)
        outcome, failed_with, answer = await _attempt(up, request, call, worker, attempt, payload, state, response)
        failure = failed_with or failure
        if outcome == REFUSED:
            if response is None:  # the request itself is wrong: vLLM's own answer
                return answer
            break  # a continuation refused: end the stream cleanly
        response = answer
        if outcome == DONE:
            return await _finish(up, call, worker, response, state, attempt)
        if outcome == CLIENT_LEFT:
            _record_client_left(up, call, worker, state, attempt)
            return response
        if response is not None:
            state.attempt_failed()
        up.book.failed_attempt(call, worker, attempt, failure, streamed=True)
        log.info("stream %s: worker %s failed (%s), trying another", call.request_id, worker.job_id, failure)
    else:
        failure = f"no worker could finish the stream after {attempt} attempts ({failure})"
        if response is None:
            return error_response(502, failure)

    if response is None:
        return up.no_capacity(call.model)
    return await _cut(up, call, worker, response, state, len(tried), failure)


def _record_client_left(up: Upstream, call: Call, worker: LiveWorker, state: StreamState, attempt: int) -> None:
    """The client left mid-stream: what it received so far is billed (a partial row)."""
    prompt, completion, cached = state.partial_totals(current_attempt=True)
    up.book.record(
        make_row(
            call,
            row_id=state.response_id or call.response_id,
            worker=worker,
            status=RequestStatus.PARTIAL,
            streamed=True,
            prompt=prompt,
            completion=completion,
            cached=cached,
            error="client disconnected",
            attempts=attempt,
        )
    )


async def _attempt(
    up: Upstream,
    request: web.Request,
    call: Call,
    worker: LiveWorker,
    attempt: int,
    payload: bytes,
    state: StreamState,
    response: web.StreamResponse | None,
):
    """One worker's try: (outcome, why it failed or "", the client's response).

    REFUSED (a 4xx) comes with vLLM's own answer, its row committed, when nothing went
    to the client yet; otherwise the response is the stream (made here on the first 200),
    or None while nothing was sent."""
    up.registry.acquire(worker)
    failed = True
    outcome, failure = UPSTREAM_FAILED, ""
    try:
        async with await post_upstream(up.client, worker, call, payload) as upstream:
            if upstream.status != 200:
                detail = await upstream.read()
                failure = f"HTTP {upstream.status}"
                if upstream.status < 500:
                    failed = False
                    if response is None:
                        return REFUSED, failure, await _refused(up, call, worker, upstream.status, detail, attempt)
                    return REFUSED, failure, response
            else:
                if response is None:
                    response = web.StreamResponse(headers=SSE_HEADERS)
                    try:
                        await response.prepare(request)
                    except CLIENT_GONE:
                        outcome = CLIENT_LEFT
                if outcome != CLIENT_LEFT:
                    outcome = await pump(upstream, response, state)
                failed = outcome == UPSTREAM_FAILED
                if failed:
                    failure = state.error or ("aborted by the worker" if state.aborted else "stream cut")
    except UPSTREAM_ERRORS as err:
        failure = f"{type(err).__name__}: {err}".rstrip(": ")
    finally:
        up.registry.release(worker, failed=failed)
    return outcome, failure, response


async def _refused(
    up: Upstream, call: Call, worker: LiveWorker, status: int, detail: bytes, attempt: int
) -> web.Response:
    row = make_row(
        call,
        row_id=call.response_id,
        worker=worker,
        status=RequestStatus.ERROR,
        streamed=True,
        error=f"HTTP {status}",
        attempts=attempt,
    )
    if not await up.book.commit(row):
        return error_response(500, "the answer could not be recorded; please retry")
    return web.Response(status=status, body=detail, content_type="application/json")


async def _finish(
    up: Upstream, call: Call, worker: LiveWorker, response: web.StreamResponse, state: StreamState, attempt: int
):
    prompt, completion, cached = state.totals()
    row = make_row(
        call,
        row_id=state.response_id or call.response_id,
        worker=worker,
        status=RequestStatus.OK,
        streamed=True,
        prompt=prompt,
        completion=completion,
        cached=cached,
        attempts=attempt,
    )
    committed = await up.book.commit(row)
    # The usage event (if asked for), [DONE] and the chunked body's end in one write:
    # one wake of the client instead of three. The client has every token already.
    tail = [state.usage_event() or b""]
    if not committed:
        tail.append(sse_error_event("the answer could not be recorded; not billed"))
    try:
        await response.write_eof(b"".join(tail) + DONE_EVENT)
    except CLIENT_GONE:
        pass
    return response


async def _cut(
    up: Upstream, call: Call, worker: LiveWorker | None, response, state: StreamState, attempt: int, failure: str
):
    prompt, completion, cached = state.partial_totals(current_attempt=False)
    row = make_row(
        call,
        row_id=state.response_id or call.response_id,
        worker=worker,
        status=RequestStatus.PARTIAL if completion else "error",
        streamed=True,
        prompt=prompt,
        completion=completion,
        cached=cached,
        error=failure,
        attempts=attempt,
    )
    log.warning("stream %s ended early: %s", call.request_id, failure)
    try:
        await response.write(sse_error_event(f"the stream was interrupted: {failure}"))
    except CLIENT_GONE:
        pass
    await up.book.commit(row)
    try:
        await response.write(DONE_EVENT)
        await response.write_eof()
    except CLIENT_GONE:
        pass
    return response
