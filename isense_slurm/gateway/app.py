"""The gateway's aiohttp application: routes, the shared upstream session, and run().

Hot path per request: one dict lookup for the key, one json.loads of the client body
and a check of its fields (validate.py: a few microseconds), the client's bytes
forwarded as they are (streams get `stream_options.include_usage` added), one
json.loads of vLLM's answer for `usage`, and the ledger row's commit awaited before the
answer goes out.
"""

import asyncio
import logging
import signal
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from functools import partial

import aiohttp
from aiohttp import web

from isense_slurm.gateway import control, proxy, streaming, validate
from isense_slurm.http import errors, protocol
from isense_slurm.gateway.auth import KeyCache
from isense_slurm.gateway.calls import Call
from isense_slurm.gateway.ledger_link import end_reason
from isense_slurm.gateway.loop_watch import LoopWatch
from isense_slurm.gateway.registry import ModelStats, Registry, Worker

log = logging.getLogger("isense.gateway")

CHAT_PATH = "/v1/chat/completions"
INFERENCE_PATHS = (CHAT_PATH, "/v1/completions")
EXPIRY_SECONDS = 1.0
OWNER = "isense"


class Gateway:
    """Everything a request handler needs, owned by one event loop."""

    def __init__(self, cfg, *, secret: bytes, writer, ledger=None, clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.secret = secret
        self.writer = writer
        self.ledger = ledger
        self.models = {m.name: m for m in cfg.models}
        self.retry_after = int(cfg.gateway.retry_after_seconds)
        self.max_body = int(cfg.gateway.max_body_bytes)
        self.registry = Registry(cfg.gateway.heartbeat_timeout_seconds, on_event=self._worker_event, clock=clock)
        self.keys = KeyCache(self._load_keys, _ledger_key_hash())
        self.session: aiohttp.ClientSession | None = None
        self.created = int(time.time())
        self.loop_watch = LoopWatch()

    # --- ledger ---------------------------------------------------------------------

    async def _load_keys(self):
        return await self.ledger.changed_keys() if self.ledger else {}

    def _worker_event(self, state: str, worker: Worker, reason: str | None) -> None:
        log.info(
            "worker %s %s: node %s, gpus %s, model %s, %s%s",
            worker.job_id, state, worker.node or "-", worker.gpus or "-", worker.model, worker.url,
            f" ({reason})" if reason else "",
        )
        if self.ledger is not None:
            self.ledger.worker_event(
                worker.job_id, state=state, node=worker.node or None, gpus=worker.gpus or None,
                model=worker.model, address=worker.url,
                reason=end_reason(reason) if state == "ended" else None,
            )

    def stats(self, model: str) -> ModelStats:
        return self.registry.model_stats(model)

    def _count(self, row) -> None:
        if row.status == "aborted":
            return
        stats = self.stats(row.model)
        stats.completed += 1
        stats.prompt_tokens += row.prompt_tokens
        stats.completion_tokens += row.completion_tokens

    async def commit(self, row) -> bool:
        """Write a row and wait until it is committed; False (logged) if it could not be."""
        self._count(row)
        try:
            await asyncio.wrap_future(self.writer.submit(row))
            return True
        except Exception as err:
            log.error("ledger: row %s not committed: %s", row.id, err)
            return False

    def record(self, row) -> None:
        """Write a row without waiting (failed attempts, streams whose client left)."""
        self._count(row)
        try:
            self.writer.submit(row).add_done_callback(partial(_log_row_failure, row.id))
        except Exception as err:
            log.error("ledger: row %s not queued: %s", row.id, err)

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
        call = Call(
            path=request.path, model=model, body=body, raw=raw, key_id=key.id,
            request_id=uuid.uuid4().hex, ts=time.time(), started=time.perf_counter(),
        )
        stats.in_flight += 1
        try:
            if body.get("stream"):
                return await streaming.relay(self, request, call)
            return await proxy.forward(self, call)
        finally:
            stats.in_flight -= 1

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

    async def _background(self, app: web.Application):
        self.session = aiohttp.ClientSession(
            # Idle connections closed after 4 s, before vLLM's uvicorn closes them (5 s).
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
            auto_decompress=False,
        )
        await self.keys.refresh()
        tasks = [asyncio.create_task(self.keys.run()), asyncio.create_task(self._expire_loop()),
                 asyncio.create_task(self.loop_watch.run())]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.session.close()

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


def _ledger_key_hash():
    try:
        from isense_slurm.meter.ledger import key_hash
    except ImportError:  # pragma: no cover - the meter ships with the gateway
        return None
    return key_hash


def _unauthorized(request: web.Request) -> web.Response:
    if not request.headers.get("Authorization"):
        message = "no API key: send 'Authorization: Bearer isk-...'"
    else:
        message = "invalid or revoked API key"
    return errors.error_response(401, message)


def _too_large(limit: int) -> web.Response:
    return errors.error_response(413, f"the body is larger than {limit} bytes")


def _log_row_failure(row_id: str, future) -> None:
    if future.exception() is not None:
        log.error("ledger: row %s not written: %s", row_id, future.exception())


def create_app(gw: Gateway, routes=()) -> web.Application:
    """The gateway's app; `routes` are extra (method, path, handler) served before the
    catch-all 404 (isense serve adds the controller's /internal/events)."""
    app = web.Application(client_max_size=gw.max_body)
    app.cleanup_ctx.append(gw._background)
    for path in INFERENCE_PATHS:
        app.router.add_route("*", path, gw.inference)
    app.router.add_route("*", "/v1/models", gw.list_models)
    for action in ("register", "heartbeat", "deregister"):
        handler = getattr(control, action)
        app.router.add_post(f"/internal/workers/{action}", partial(handler, gw))
    app.router.add_route("*", "/internal/workers", partial(control.workers, gw))
    app.router.add_route("*", "/health", partial(control.health, gw))
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    app.router.add_route("*", "/{tail:.*}", gw.not_found)
    app["gateway"] = gw
    return app


async def serve(cfg, *, host: str, port: int, secret: bytes, ready: Callable[[], None] | None = None) -> None:
    """Run the gateway until SIGTERM/SIGINT; then finish in-flight requests and flush
    the ledger writer."""
    from isense_slurm.gateway.ledger_link import LedgerLink
    from isense_slurm.meter.writer import RequestWriter

    ledger = LedgerLink(cfg.ledger.path)
    await ledger.start()
    # interval_s=0: commit as soon as the queue is empty; rows that arrive during a
    # commit share the next one, so batching grows with load without adding latency.
    writer = RequestWriter(
        cfg.ledger.path,
        prices={m.name: m.price for m in cfg.models},
        operator_share=cfg.revenue.operator_share,
        currency=cfg.revenue.currency,
        interval_s=0,
    )
    gw = Gateway(cfg, secret=secret, writer=writer, ledger=ledger)
    from isense_slurm.http.metrics_route import metrics_routes

    app = create_app(gw, metrics_routes(cfg, gateway_stats=gw.registry.snapshot))
    runner = protocol.JsonErrorRunner(app, access_log=None, handle_signals=False, shutdown_timeout=30)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
        try:
            await site.start()
        except OSError as err:
            from isense_slurm.errors import IsenseError

            raise IsenseError(f"cannot listen on {host}:{port}: {err.strerror}") from None
        log.info("listening on %s:%d (%d model%s)", host, port, len(gw.models), "" if len(gw.models) == 1 else "s")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready()
        await stop.wait()
        log.info("stopping: finishing requests in flight")
    finally:
        await runner.cleanup()
        await asyncio.get_running_loop().run_in_executor(None, writer.close)
        ledger.close()
        log.info("stopped; ledger rows flushed")
