"""Reaching the workers: the collaborators a forwarded call needs, and the POST to vLLM.

`Upstream` is what the proxy (proxy.py) and the SSE relay (streaming.py) are handed:
the registry that picks a worker, the HTTP client (worker_http.py), the booking of ledger rows and the
429 for a model with no worker left; not the whole gateway.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from isense_slurm.gateway.booking import Booking
from isense_slurm.gateway.calls import JSON, Call
from isense_slurm.gateway.registry import LiveWorker, Registry
from isense_slurm.gateway.worker_http import WorkerClient, WorkerResponse

# What a vanished or failing worker looks like (worker_http's errors are OSErrors).
UPSTREAM_ERRORS = (asyncio.TimeoutError, OSError)

# Attempts per request (first try + retries on other workers).
MAX_ATTEMPTS = 4


@dataclass(frozen=True, slots=True)
class Upstream:
    registry: Registry
    client: WorkerClient
    book: Booking
    no_capacity: Callable[[str], web.Response]  # a model's 429, counted as rejected


def upstream_headers(worker: LiveWorker, call: Call) -> dict[str, str]:
    # Only what vLLM needs: the client's own headers (X-Request-Id among them) must not
    # reach it, or clients could choose the ids of ledger rows.
    return {
        "Authorization": worker.auth_header,
        "Content-Type": JSON,
        "X-Request-Id": call.request_id,
    }


async def post_upstream(client: WorkerClient, worker: LiveWorker, call: Call, payload: bytes) -> WorkerResponse:
    """POST to a worker's vLLM: its answer once the headers came (a stale pooled
    connection is retried inside the client; a dead vLLM raises an UPSTREAM_ERRORS)."""
    return await client.post(worker.url, call.path, upstream_headers(worker, call), payload)
