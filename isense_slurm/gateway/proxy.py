"""Non-streamed requests: forward the client's bytes, retry elsewhere when a worker goes.

A worker has gone when the connection fails, it answers 5xx (a draining vLLM refuses
new work with 500), or it answers 200 with finish_reason "abort" (vLLM stopped by
SIGTERM ends its in-flight requests that way). The client never sees such an attempt:
it is recorded as an 'aborted' row with 0 tokens (the client received none of them)
and the request goes to another worker. The answer's row is committed before the
answer's first byte is written.
"""

import json
import logging

from aiohttp import web

from isense_slurm.contracts.states import RequestStatus
from isense_slurm.gateway.calls import JSON, Call, make_row, usage_tokens
from isense_slurm.gateway.registry import LiveWorker
from isense_slurm.gateway.upstream import MAX_ATTEMPTS, UPSTREAM_ERRORS, Upstream, post_upstream
from isense_slurm.http.errors import error_response

log = logging.getLogger("isense.gateway")


def finished(answer: dict) -> bool:
    """Every choice ended on its own: none aborted by a stopping vLLM, none missing."""
    choices = answer.get("choices") or []
    return bool(choices) and all(c.get("finish_reason") not in (None, "abort") for c in choices)


async def forward(up: Upstream, call: Call) -> web.Response:
    registry = up.registry
    tried: list[str] = []
    last_failure = "no live worker"
    for attempt in range(1, MAX_ATTEMPTS + 1):
        worker = registry.pick(call.model, tried)
        if worker is None:
            break
        tried.append(worker.job_id)
        registry.acquire(worker)
        failed = True
        try:
            async with await post_upstream(up.client, worker, call, call.raw) as upstream:
                payload = await upstream.read()
                status = upstream.status
            failed = status >= 500
        except UPSTREAM_ERRORS as err:
            status, payload = 0, b""
            last_failure = f"{type(err).__name__}: {err}".rstrip(": ")
        finally:
            registry.release(worker, failed=failed)

        if 0 < status < 500:
            answered = await _answer(up, call, worker, attempt, status, payload)
            if isinstance(answered, web.Response):
                return answered
            last_failure = answered
        elif status:
            last_failure = f"HTTP {status}"

        up.book.failed_attempt(call, worker, attempt, last_failure, streamed=False)
        log.info("request %s: worker %s failed (%s), retrying", call.request_id, worker.job_id, last_failure)

    else:
        return error_response(502, f"no worker could answer after {len(tried)} attempts ({last_failure})")
    # No (other) worker left to try: capacity, not an outage, as aggregators see it.
    return up.no_capacity(call.model)


async def _answer(
    up: Upstream, call: Call, worker: LiveWorker, attempt: int, status: int, payload: bytes
) -> web.Response | str:
    """The client's answer to a worker's 2xx-4xx, its row committed first; or why the
    attempt failed (a 200 that vLLM aborted or that cannot be read)."""
    if status == 200:
        try:
            answer = json.loads(payload)
        except ValueError:
            answer = None
        if not (isinstance(answer, dict) and finished(answer)):
            up.registry.quarantine(worker)
            return "aborted by the worker" if answer else "unreadable answer"
        prompt, completion, cached = usage_tokens(answer.get("usage"))
        row = make_row(
            call,
            row_id=answer.get("id") or call.response_id,
            worker=worker,
            status=RequestStatus.OK,
            streamed=False,
            prompt=prompt,
            completion=completion,
            cached=cached,
            attempts=attempt,
        )
        if not await up.book.commit(row):
            return error_response(500, "the answer could not be recorded; not billed, please retry")
        return web.Response(body=payload, content_type=JSON)
    # The request itself is wrong (vLLM's 4xx): the client gets vLLM's own body.
    row = make_row(
        call,
        row_id=call.response_id,
        worker=worker,
        status=RequestStatus.ERROR,
        streamed=False,
        error=f"HTTP {status}",
        attempts=attempt,
    )
    if not await up.book.commit(row):
        return error_response(500, "the answer could not be recorded; please retry")
    return web.Response(status=status, body=payload, content_type=JSON)
