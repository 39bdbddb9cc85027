"""One client request on its way through the gateway, and the ledger rows it leaves.

Shared by the non-streamed proxy and the SSE relay.
"""

import time
from dataclasses import dataclass

from isense_slurm.gateway.registry import LiveWorker
from isense_slurm.meter.rows import RequestRow

JSON = "application/json"


@dataclass(slots=True)
class Call:
    path: str  # "/v1/chat/completions" or "/v1/completions"
    model: str
    body: dict  # the client's JSON, parsed once
    raw: bytes  # the client's bytes, forwarded as they are when nothing changes
    key_id: int | None
    request_id: str  # sent as X-Request-Id: vLLM builds the response id from it
    ts: float  # wall clock at arrival (ledger time)
    started: float  # perf_counter at arrival (latency)

    @property
    def is_chat(self) -> bool:
        return self.path.endswith("/chat/completions")

    @property
    def response_id(self) -> str:
        """The id vLLM gives the answer (it prefixes X-Request-Id); the ledger row's id."""
        return ("chatcmpl-" if self.is_chat else "cmpl-") + self.request_id

    def latency_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0


def usage_tokens(usage: dict | None) -> tuple[int, int, int]:
    """(prompt, completion, cached) tokens of an OpenAI `usage` object."""
    if not usage:
        return 0, 0, 0
    details = usage.get("prompt_tokens_details") or {}
    return (
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        int(details.get("cached_tokens") or 0),
    )


def make_row(
    call: Call,
    *,
    row_id: str,
    worker: LiveWorker | None,
    status: str,
    streamed: bool,
    prompt: int = 0,
    completion: int = 0,
    cached: int = 0,
    error: str | None = None,
    attempts: int = 1,
) -> RequestRow:
    return RequestRow(
        id=row_id,
        ts=call.ts,
        key_id=call.key_id,
        model=call.model,
        job_id=worker.job_id if worker else None,
        node=worker.node if worker else None,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        status=status,
        latency_ms=call.latency_ms(),
        streamed=streamed,
        error=error,
        attempts=attempts,
    )


def attempt_row_id(call: Call, attempt: int) -> str:
    """Id of the row of a failed attempt; the answer's own row keeps the response id."""
    return f"{call.response_id}#attempt{attempt}"
