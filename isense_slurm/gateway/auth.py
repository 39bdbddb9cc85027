"""Client API keys: an in-memory copy of the ledger's active keys, refreshed every
couple of seconds so a revocation takes effect within seconds, with no database read
per request.
"""

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable

from isense_slurm.http.access import bearer

log = logging.getLogger("isense.gateway")

KEY_PREFIX = "isk-"
REFRESH_SECONDS = 2.0


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class KeyCache:
    """sha256(plaintext) -> key info of every active key.

    `load` returns the active keys, or None when they did not change since last time.
    """

    def __init__(
        self,
        load: Callable[[], Awaitable[dict]],
        hash_key: Callable[[str], str] | None = None,
        refresh_seconds: float = REFRESH_SECONDS,
    ):
        self._load = load
        self._hash = hash_key or sha256_hex
        self._refresh_seconds = refresh_seconds
        self._keys: dict[str, object] = {}
        self.loaded = False

    def lookup(self, authorization: str | None):
        """Key info for a request's Authorization header, or None (missing, unknown, revoked)."""
        token = bearer(authorization)
        if token is None or not token.startswith(KEY_PREFIX):
            return None
        return self._keys.get(self._hash(token))

    async def refresh(self) -> None:
        keys = await self._load()  # None: unchanged since the last load
        if keys is not None:
            self._keys = dict(keys)
        self.loaded = True

    async def run(self) -> None:
        """Refresh forever; a failed read keeps the last good copy."""
        while True:
            await asyncio.sleep(self._refresh_seconds)
            try:
                await self.refresh()
            except Exception as err:  # noqa: BLE001 - busy, unreadable, anything: keep the last good keys, never end the task
                log.warning("key refresh failed: %s", err)
