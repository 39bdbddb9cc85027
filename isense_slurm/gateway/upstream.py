"""Reaching the workers: the collaborators a forwarded call needs, and the POST to vLLM.

`Upstream` is what the proxy (proxy.py) and the SSE relay (streaming.py) are handed:
the registry that picks a worker, the HTTP session, the booking of ledger rows and the
429 for a model with no worker left; not the whole gateway.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from isense_slurm.gateway.booking import Booking
from isense_slurm.gateway.calls import JSON, Call
from isense_slurm.gateway.registry import LiveWorker, Registry

# What a vanished or failing worker looks like to the client side of aiohttp.
UPSTREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)

# Attempts per request (first try + retries on other workers).
MAX_ATTEMPTS = 4


@dataclass(frozen=True, slots=True)
class Upstream:
    registry: Registry
    session: aiohttp.ClientSession
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


# A pooled keep-alive connection the server closed meanwhile fails like this on reuse.
_STALE_CONNECTION = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


async def post_upstream(session: aiohttp.ClientSession, worker: LiveWorker, call: Call, payload: bytes):
    """POST to a worker's vLLM; once more at once when the connection was a stale one
    (uvicorn closes idle connections after 5 s: a race with our pool's reuse). A dead
    vLLM refuses the second try too, and the caller moves on to another worker."""
    url, headers = worker.url + call.path, upstream_headers(worker, call)
    try:
        return await session.post(url, data=payload, headers=headers)
    except _STALE_CONNECTION:
        return await session.post(url, data=payload, headers=headers)
