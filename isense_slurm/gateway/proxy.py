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

from isense_slurm.gateway.calls import (
    JSON,
    MAX_ATTEMPTS,
    UPSTREAM_ERRORS,
    Call,
    make_row,
    post_upstream,
    record_failed_attempt,
    usage_tokens,
)
from isense_slurm.http.errors import error_response

log = logging.getLogger("isense.gateway")


def finished(answer: dict) -> bool:
    """Every choice ended on its own: none aborted by a stopping vLLM, none missing."""
    choices = answer.get("choices")
    return bool(choices) and all(c.get("finish_reason") not in (None, "abort") for c in choices)


async def forward(gw, call: Call) -> web.Response:
    registry = gw.registry
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
            async with await post_upstream(gw.session, worker, call, call.raw) as upstream:
                payload = await upstream.read()
                status = upstream.status
            failed = status >= 500
        except UPSTREAM_ERRORS as err:
            status, payload = 0, b""
            last_failure = f"{type(err).__name__}: {err}".rstrip(": ")
        finally:
            registry.release(worker, failed=failed)

        if status == 200:
            try:
                answer = json.loads(payload)
            except ValueError:
                answer = None
            if isinstance(answer, dict) and finished(answer):
                prompt, completion, cached = usage_tokens(answer.get("usage"))
                row = make_row(
                    call,
                    row_id=answer.get("id") or call.response_id,
                    worker=worker,
                    status="ok",
                    streamed=False,
                    prompt=prompt,
                    completion=completion,
                    cached=cached,
                    attempts=attempt,
                )
                if not await gw.commit(row):
                    return error_response(500, "the answer could not be recorded; not billed, please retry")
                return web.Response(body=payload, content_type=JSON)
            last_failure = "aborted by the worker" if answer else "unreadable answer"
            registry.quarantine(worker)
        elif 0 < status < 500:
            # The request itself is wrong (vLLM's 4xx): the client gets vLLM's own body.
            row = make_row(
                call, row_id=call.response_id, worker=worker, status="error", streamed=False,
                error=f"HTTP {status}", attempts=attempt,
            )
            if not await gw.commit(row):
                return error_response(500, "the answer could not be recorded; please retry")
            return web.Response(status=status, body=payload, content_type=JSON)
        elif status:
            last_failure = f"HTTP {status}"

        record_failed_attempt(gw, call, worker, attempt, last_failure, streamed=False)
        log.info("request %s: worker %s failed (%s), retrying", call.request_id, worker.job_id, last_failure)

    else:
        return error_response(502, f"no worker could answer after {len(tried)} attempts ({last_failure})")
    # No (other) worker left to try: capacity, not an outage, as aggregators see it.
    return gw.no_capacity(call.model)
