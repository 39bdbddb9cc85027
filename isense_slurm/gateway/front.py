"""The gateway's front door: API keys, the OpenAI routes' handlers, and what they share
(the registry of workers, the workers' HTTP client, the booking of ledger rows).

Hot path per request: one dict lookup for the key, one json.loads of the client body
and a check of its fields (validate.py: a few microseconds), the client's bytes
forwarded as they are (streams get `stream_options.include_usage` added), one
json.loads of vLLM's answer for `usage`, and the ledger row's commit awaited before the
answer goes out. http/app.py mounts the handlers; http/server.py runs the app.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from decimal import Decimal

from aiohttp import web

from isense_slurm.contracts.states import WorkerStage
from isense_slurm.gateway import proxy, streaming, validate
from isense_slurm.gateway.auth import KeyCache
from isense_slurm.gateway.booking import Booking
from isense_slurm.gateway.calls import Call
from isense_slurm.gateway.control import WorkerControl
from isense_slurm.gateway.gate import Gate, Loaded, Refusal
from isense_slurm.gateway.ledger_link import LedgerLink, end_reason
from isense_slurm.gateway.loop_watch import LoopWatch
from isense_slurm.gateway.registry import LiveWorker, ModelStats, Registry
from isense_slurm.gateway.upstream import Upstream
from isense_slurm.gateway.worker_http import WorkerClient
from isense_slurm.http import errors, protocol
from isense_slurm.meter.keys import key_hash
from isense_slurm.meter.limits import LimitBook
from isense_slurm.meter.writer import RequestWriter

log = logging.getLogger("isense.gateway")

CHAT_PATH = "/v1/chat/completions"
INFERENCE_PATHS = (CHAT_PATH, "/v1/completions")
EXPIRY_SECONDS = 1.0
OWNER = "isense"


class Gateway:
    """Everything a request handler needs, owned by one event loop."""

    def __init__(
        self,
        cfg,
        *,
        secret: bytes,
        writer: RequestWriter,
        ledger: LedgerLink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.ledger = ledger
        self.models = {m.name: m for m in cfg.models}
        self.retry_after = int(cfg.gateway.retry_after_seconds)
        self.max_body = int(cfg.gateway.max_body_bytes)
        self.registry = Registry(cfg.gateway.heartbeat_timeout_seconds, on_event=self._worker_event, clock=clock)
        self.keys = KeyCache(self._load_keys, key_hash)
        self.gate = Gate({m.name: m.price for m in cfg.models})
        self.currency = cfg.revenue.currency
        self.book = Booking(writer, self.stats, on_row=self.gate.on_row)
        self.loop_watch = LoopWatch()
        self.control = WorkerControl(secret, self.models, self.registry, self.loop_watch, self._worker_start)
        self.upstream: Upstream | None = None  # made with its session when the app starts
        self.created = int(time.time())

    @classmethod
    async def open(cls, cfg, *, secret: bytes) -> "Gateway":
        """A gateway with its own ledger link (keys, worker events) and request writer."""
        link = LedgerLink(cfg.ledger.path)
        await link.start()
        # interval_s=0: commit as soon as the queue is empty; rows that arrive during a
        # commit share the next one, so batching grows with load without adding latency.
        writer = RequestWriter(
            cfg.ledger.path,
            prices={m.name: m.price for m in cfg.models},
            operator_share=cfg.revenue.operator_share,
            currency=cfg.revenue.currency,
            interval_s=0,
        )
        return cls(cfg, secret=secret, writer=writer, ledger=link)

    async def close(self) -> None:
        """Flush the ledger writer and close the link: after the app's cleanup (no request left)."""
        await asyncio.get_running_loop().run_in_executor(None, self.book.writer.close)
        if self.ledger is not None:
            self.ledger.close()

    # --- ledger ---------------------------------------------------------------------

    async def _load_keys(self):
        return await self.ledger.changed_keys() if self.ledger else {}

    async def _load_limits(self, known: LimitBook, now: float) -> Loaded:
        if self.ledger is None:
            return None, {}, (0.0, 0.0)
        return await self.ledger.limits(known, now, self.book.writer.flush)

    def _worker_start(self, job_id: str, phases: dict[str, float]) -> None:
        if self.ledger is not None:
            self.ledger.worker_start(job_id, phases)

    def _worker_event(self, state: str, worker: LiveWorker, reason: str | None) -> None:
        log.info(
            "worker %s %s: node %s, gpus %s, model %s, %s%s",
            worker.job_id,
            state,
            worker.node or "-",
            worker.gpus or "-",
            worker.model,
            worker.url,
            f" ({reason})" if reason else "",
        )
        if self.ledger is not None:
            self.ledger.worker_event(
                worker.job_id,
                state=state,
                node=worker.node or None,
                gpus=worker.gpus or None,
                model=worker.model,
                address=worker.url,
                reason=end_reason(reason) if state == WorkerStage.ENDED else None,
            )

    def stats(self, model: str) -> ModelStats:
        return self.registry.model_stats(model)

    def no_capacity(self, model: str) -> web.Response:
        self.stats(model).rejected += 1
        return errors.no_worker(model, self.retry_after)

    # --- handlers -------------------------------------------------------------------

    async def inference(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return errors.error_response(405, f"{request.path} takes POST", headers={"Allow": "POST"})
        key = self.keys.lookup(request.headers.get("Authorization"))
        if key is None:
            return _unauthorized(request)
        if (request.content_length or 0) > self.max_body:
            return _too_large(self.max_body)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large(self.max_body)
        except web.RequestPayloadError as err:  # a bad chunk or Content-Encoding (after the headers)
            return errors.error_response(400, f"the body could not be read: {protocol.describe(err)}")
        try:
            body = validate.request_body(raw, chat=request.path == CHAT_PATH)
        except validate.Invalid as err:
            return err.response()
        model = body["model"]
        if model not in self.models:
            return errors.error_response(
                404, f"the model '{validate.shown(model)}' does not exist", param="model", code="model_not_found"
            )
        stats = self.stats(model)
        stats.requests += 1
        if not self.registry.has_live(model):
            return self.no_capacity(model)
        held = self.gate.admit(key.id)
        if isinstance(held, Refusal):
            stats.rejected += 1
            if held.quota:
                return errors.insufficient_quota(held.message)
            return errors.rate_limited(held.message, held.retry_after or 1)
        call = Call(
            path=request.path,
            model=model,
            body=body,
            raw=raw,
            key_id=key.id,
            request_id=uuid.uuid4().hex,
            ts=time.time(),
            started=time.perf_counter(),
        )
        stats.in_flight += 1
        try:
            up = self.upstream
            assert up is not None  # made when the app started, before any request
            if body.get("stream"):
                return await streaming.relay(up, request, call)
            return await proxy.forward(up, call)
        finally:
            stats.in_flight -= 1
            self.gate.release(held)

    async def list_models(self, request: web.Request) -> web.Response:
        if request.method != "GET":
            return errors.error_response(405, "/v1/models takes GET", headers={"Allow": "GET"})
        if self.keys.lookup(request.headers.get("Authorization")) is None:
            return _unauthorized(request)
        data = [model_card(m, self.registry.live_count(m.name), self.created) for m in self.models.values()]
        return web.json_response({"object": "list", "data": data})

    async def not_found(self, request: web.Request) -> web.Response:
        return errors.error_response(404, f"no route {request.method} {request.path}", code="unknown_url")

    # --- lifecycle ------------------------------------------------------------------

    async def background(self, app: web.Application):
        """The app's cleanup context: the workers' HTTP client and the key, expiry and loop
        watch tasks, from the app's start to its cleanup."""
        client = WorkerClient()
        self.upstream = Upstream(self.registry, client, self.book, self.no_capacity)
        await self.keys.refresh()
        await self.gate.refresh(self._load_limits)
        tasks = [
            asyncio.create_task(self.keys.run()),
            asyncio.create_task(self.gate.run(self._load_limits)),
            asyncio.create_task(self._expire_loop()),
            asyncio.create_task(self.loop_watch.run()),
        ]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_SECONDS)
            self.registry.expire()


def model_card(model, live_workers: int, created: int) -> dict:
    """A /v1/models entry in the form aggregators (OpenRouter) read: per-token prices as
    decimal strings."""
    price = model.price
    return {
        "id": model.name,
        "object": "model",
        "created": created,
        "owned_by": OWNER,
        "name": model.name,
        "context_length": model.context_length,
        "max_output_length": model.context_length,
        "input_modalities": ["text"],
        "output_modalities": ["text"],
        "pricing": {
            "prompt": per_token(price.input_per_mtok),
            "completion": per_token(price.output_per_mtok),
            "input_cache_read": per_token(price.cached_input_per_mtok),
        },
        "workers": live_workers,
    }


def per_token(per_mtok: float) -> str:
    """0.4 per million -> "0.0000004" (no exponent, no trailing zeros)."""
    value = Decimal(str(per_mtok)) / Decimal(1_000_000)
    text = format(value.normalize(), "f")
    return text


def _unauthorized(request: web.Request) -> web.Response:
    if not request.headers.get("Authorization"):
        message = "no API key: send 'Authorization: Bearer isk-...'"
    else:
        message = "invalid or revoked API key"
    return errors.error_response(401, message)


def _too_large(limit: int) -> web.Response:
    return errors.error_response(413, f"the body is larger than {limit} bytes")
