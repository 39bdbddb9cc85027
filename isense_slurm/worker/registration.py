"""The worker's side of the gateway's control protocol (the payloads: contracts/control.py)."""

import asyncio
import json
import logging

import aiohttp

from isense_slurm.contracts.control import (
    ControlAction,
    Registration,
    action_path,
    deregister_payload,
    heartbeat_payload,
)

log = logging.getLogger("isense.worker")

REGISTER_BACKOFF_START = 0.5
REGISTER_BACKOFF_MAX = 10.0


class RegistrationRefused(Exception):
    """The gateway answered and said no (bad token, unknown model): retrying won't help."""


class UnknownWorker(Exception):
    """Heartbeat answered 404: the gateway forgot us (restarted, or timed us out)."""


def _error_text(status: int, body: str) -> str:
    try:
        data = json.loads(body)
        err = data.get("error")
        if isinstance(err, dict):
            err = err.get("message")
        if err:
            return f"HTTP {status}: {err}"
    except (ValueError, AttributeError):
        pass
    return f"HTTP {status}: {body.strip()[:200]}"


class GatewayClient:
    def __init__(self, session: aiohttp.ClientSession, gateway_url: str, token: str):
        self.session = session
        self.base = gateway_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}

    async def _post(self, action: ControlAction, payload: dict, timeout: float) -> tuple[int, str]:
        async with self.session.post(
            self.base + action_path(action),
            json=payload,
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            return resp.status, await resp.text()

    async def register(self, reg: Registration, timeout: float = 5.0) -> None:
        """One attempt. Raises RegistrationRefused on 4xx, aiohttp/OS errors or
        RuntimeError (5xx) when a retry may help."""
        status, body = await self._post(ControlAction.REGISTER, reg.payload(), timeout)
        if status == 200:
            return
        if 400 <= status < 500:
            raise RegistrationRefused(_error_text(status, body))
        raise RuntimeError(_error_text(status, body))

    async def register_until_done(self, reg: Registration) -> int:
        """Retry with backoff while the gateway is down or failing; returns attempts."""
        delay, attempt = REGISTER_BACKOFF_START, 0
        while True:
            attempt += 1
            try:
                await self.register(reg)
                return attempt
            except RegistrationRefused:
                raise
            except (TimeoutError, aiohttp.ClientError, OSError, RuntimeError) as err:
                log.info(
                    "register attempt %d failed (%s); retrying in %.1f s",
                    attempt,
                    str(err) or type(err).__name__,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, REGISTER_BACKOFF_MAX)

    async def heartbeat(self, job_id: str, timeout: float = 5.0) -> None:
        status, body = await self._post(ControlAction.HEARTBEAT, heartbeat_payload(job_id), timeout)
        if status == 404:
            raise UnknownWorker(_error_text(status, body))
        if status != 200:
            raise RuntimeError(_error_text(status, body))

    async def deregister(self, job_id: str, reason: str, timeout: float = 1.0) -> None:
        status, body = await self._post(ControlAction.DEREGISTER, deregister_payload(job_id, reason), timeout)
        if status != 200:
            raise RuntimeError(_error_text(status, body))
