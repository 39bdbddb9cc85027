"""The one server (http/server.py, http/app.py) in-process: every route mounted where
`isense gateway` and `isense serve` expect it, a stub vLLM behind the gateway, a
stand-in controller, and a clean stop on SIGTERM."""

import asyncio
import json
import logging
import signal
import socket
import sqlite3
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from isense_slurm.config import load_config
from isense_slurm.http.server import serve
from isense_slurm.meter.ledger import Ledger
from isense_slurm.secrets import ensure_secret, hook_token, worker_token

REPO = Path(__file__).resolve().parents[2]
MODEL = "tiny-llama"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def site(tmp_path: Path, port: int):
    text = (REPO / "dev" / "isense.dev.toml").read_text()
    text = text.replace('path = "/var/lib/isense-dev/ledger.db"', f'path = "{tmp_path / "ledger.db"}"')
    text = text.replace('dir = "/var/lib/isense-dev/secrets"', f'dir = "{tmp_path / "secrets"}"')
    text = text.replace('listen = "127.0.0.1:8000"', f'listen = "127.0.0.1:{port}"')
    path = tmp_path / "isense.toml"
    path.write_text(text)
    cfg = load_config(path)
    with Ledger.open(cfg.ledger.path) as ledger:
        ledger.sync_prices(cfg.models, cfg.revenue.currency)
        _, key = ledger.create_key("test")
    return cfg, key, ensure_secret(cfg.secrets.dir, cfg.slurm.service_account)


async def vllm(request: web.Request) -> web.StreamResponse:
    """A stub vLLM: one answer, or one streamed chunk, the usage chunk and [DONE]."""
    body = await request.json()
    rid = "chatcmpl-" + request.headers["X-Request-Id"]
    usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    if not body.get("stream"):
        return web.json_response(
            {
                "id": rid,
                "choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}],
                "usage": usage,
            }
        )
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    chunk = {"id": rid, "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}
    for event in (chunk, {"id": rid, "choices": [], "usage": usage}):
        await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    return response


class Controller:
    """Stands in for controller/daemon.ControllerDaemon."""

    def __init__(self):
        self.calls, self.events = [], []

        async def events_route(request):
            self.events.append(await request.read())
            return web.Response(status=204)

        self.events_route = events_route

    def status(self):
        return {"plan": ["lend n1"]}

    def use_gateway(self, registry):
        self.calls.append("use_gateway")

    def lending(self):
        return "lending gpu to lend every 5 s"

    def start(self):
        self.calls.append("start")

    async def stop(self):
        self.calls.append("stop")

    def close(self):
        self.calls.append("close")


async def run_server(cfg, secret, port, with_gateway, controller, talk):
    ready = asyncio.Event()
    server = asyncio.create_task(
        serve(
            cfg,
            host="127.0.0.1",
            port=port,
            secret=secret,
            with_gateway=with_gateway,
            controller=controller,
            ready=ready.set,
        )
    )
    await asyncio.wait_for(ready.wait(), 30)
    try:
        async with ClientSession(f"http://127.0.0.1:{port}") as client:
            return await talk(client)
    finally:
        signal.raise_signal(signal.SIGTERM)
        await asyncio.wait_for(server, 30)


async def call(client, method, path, *, token=None, body=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with client.request(method, path, headers=headers, json=body) as resp:
        return resp.status, await resp.text()


def error_of(text: str) -> dict:
    body = json.loads(text)
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


@pytest.mark.parametrize("controller", [None, Controller()], ids=["gateway", "serve"])
def test_gateway_routes_with_and_without_the_controller(tmp_path, caplog, controller):
    caplog.set_level(logging.INFO, logger="isense")
    port = free_port()
    cfg, key, secret = site(tmp_path, port)

    async def talk(client):
        out = {}
        upstream = web.Application()
        upstream.router.add_post("/v1/chat/completions", vllm)
        runner = web.AppRunner(upstream)
        await runner.setup()
        stub = web.TCPSite(runner, "127.0.0.1", 0)
        await stub.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            out["health"] = await call(client, "GET", "/health")
            out["register"] = await call(
                client,
                "POST",
                "/internal/workers/register",
                token=worker_token(secret, "7"),
                body={"job_id": "7", "node": "n1", "gpus": "0", "model": MODEL, "url": url},
            )
            out["bad_worker"] = await call(
                client, "POST", "/internal/workers/heartbeat", token="x" * 64, body={"job_id": "7"}
            )
            chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
            out["chat"] = await call(client, "POST", "/v1/chat/completions", token=key, body=chat)
            out["stream"] = await call(client, "POST", "/v1/chat/completions", token=key, body={**chat, "stream": True})
            out["no_key"] = await call(client, "GET", "/v1/models")
            out["models"] = await call(client, "GET", "/v1/models", token=key)
            out["workers"] = await call(client, "GET", "/internal/workers")
            out["metrics"] = await call(client, "GET", "/metrics")
            out["controller"] = await call(client, "GET", "/internal/controller")
            out["events"] = await call(client, "POST", "/internal/events", token=hook_token(secret, "n1"), body={})
            out["nowhere"] = await call(client, "GET", "/nowhere")
        finally:
            await runner.cleanup()
        return out

    out = asyncio.run(run_server(cfg, secret, port, True, controller, talk))
    assert out["health"][0] == 200 and json.loads(out["health"][1])["live_workers"] == {MODEL: 0}
    assert out["register"][0] == 200 and out["bad_worker"][0] == 401
    assert error_of(out["bad_worker"][1])["code"] == "invalid_worker_token"
    assert out["chat"][0] == 200 and json.loads(out["chat"][1])["usage"]["completion_tokens"] == 1
    assert out["stream"][0] == 200 and out["stream"][1].endswith("data: [DONE]\n\n") and '"hi"' in out["stream"][1]
    assert out["no_key"][0] == 401 and error_of(out["no_key"][1])["message"].startswith("no API key")
    assert out["models"][0] == 200 and json.loads(out["models"][1])["data"][0]["workers"] == 1
    assert out["workers"][0] == 200 and json.loads(out["workers"][1])["workers"][0]["job_id"] == "7"
    assert out["metrics"][0] == 200 and 'isense_gateway_requests_total{model="tiny-llama"} 2.0' in out["metrics"][1]
    assert out["nowhere"][0] == 404 and error_of(out["nowhere"][1])["code"] == "unknown_url"
    with sqlite3.connect(cfg.ledger.path) as db:
        rows = db.execute("SELECT status, streamed FROM requests ORDER BY streamed").fetchall()
    assert rows == [("ok", 0), ("ok", 1)]
    lines = [r.getMessage() for r in caplog.records]
    if controller is None:
        assert out["controller"][0] == 404 and out["events"][0] == 404
        assert f"listening on 127.0.0.1:{port} (1 model)" in lines and "stopped; ledger rows flushed" in lines
    else:
        assert out["controller"] == (200, '{"plan": ["lend n1"]}') and out["events"][0] == 204
        assert controller.calls == ["use_gateway", "start", "stop", "close"] and controller.events == [b"{}"]
        assert f"listening on 127.0.0.1:{port} (gateway and controller); lending gpu to lend every 5 s" in lines
        assert "stopping: no more ticks; finishing requests in flight" in lines and "stopped" in lines


def test_controller_only_serves_its_routes_and_the_ledgers_metrics(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="isense")
    port = free_port()
    cfg, key, secret = site(tmp_path, port)
    controller = Controller()

    async def talk(client):
        return {
            path: await call(client, "GET", path, token=key)
            for path in ("/internal/controller", "/metrics", "/v1/models", "/health")
        }

    out = asyncio.run(run_server(cfg, secret, port, False, controller, talk))
    assert out["/internal/controller"][0] == 200
    assert out["/metrics"][0] == 200 and "isense_ledger_up 1.0" in out["/metrics"][1]
    assert "isense_gateway_requests_total" not in out["/metrics"][1]
    assert out["/v1/models"][0] == 404 and error_of(out["/v1/models"][1])  # aiohttp's 404, in JSON
    assert out["/health"][0] == 404
    assert controller.calls == ["start", "stop", "close"]
    assert f"listening on 127.0.0.1:{port} (controller only); lending gpu to lend every 5 s" in [
        r.getMessage() for r in caplog.records
    ]
