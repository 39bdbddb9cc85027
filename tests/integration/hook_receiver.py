"""Test helpers for the node hooks: a real aiohttp receiver built on
reclaim.events.make_events_route (the daemon's stand-in), and a config for the
hooks pointing at it."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path

from aiohttp import web

from isense_slurm.reclaim.events import make_events_route
from waiting import free_port

REPO = Path(__file__).resolve().parents[2]


class EventReceiver:
    """POST /internal/events on 127.0.0.1:port in a thread; records each event."""

    def __init__(self, secret: bytes, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.events: list[dict] = []
        self.requests = 0
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self._secret = secret
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "receiver did not start"

    def _record(self, event: dict) -> None:
        with self._lock:
            self.events.append(event)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        route = make_events_route(self._secret, self._record)

        async def counted(request):
            self.requests += 1
            return await route(request)

        app.router.add_post("/internal/events", counted)
        self.runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self.loop.run_forever()

    def matching(self, **fields) -> list[dict]:
        with self._lock:
            return [e for e in self.events if all(e.get(k) == v for k, v in fields.items())]

    def wait_for(self, timeout: float = 30, **fields) -> dict:
        deadline = time.monotonic() + timeout
        while not (found := self.matching(**fields)):
            if time.monotonic() > deadline:
                raise AssertionError(f"no event {fields} within {timeout} s; got {self.events}")
            time.sleep(0.05)
        return found[0]

    def close(self):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def write_hook_config(
    folder: Path, advertise_url: str, secrets_dir: Path, job_dir: Path | None = None, service_account: str | None = None
) -> Path:
    """dev/isense.dev.toml with the gateway URL, secrets and (optionally) job_dir and
    service account replaced."""
    text = (REPO / "dev" / "isense.dev.toml").read_text()
    if service_account is not None:
        text = re.sub(r"(?m)^service_account = .*$", f'service_account = "{service_account}"', text)
    text = re.sub(r"(?m)^advertise_url = .*$", f'advertise_url = "{advertise_url}"', text)
    text = re.sub(r"(?m)^dir = .*$", f'dir = "{secrets_dir}"', text)
    if job_dir is not None:
        text = re.sub(r"(?m)^job_dir = .*$", f'job_dir = "{job_dir}"', text)
    path = folder / "isense.toml"
    path.write_text(text)
    path.chmod(0o644)
    return path
