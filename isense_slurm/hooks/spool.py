"""Events kept on the node while the daemon cannot be reached, sent by the next hook run.

One JSON object per line in `<dir>/events-<node>.jsonl` (one file per node name: the
token that sends them is per node, and several slurmd may share one host). Prologs
and epilogs of different jobs run at the same time, so every access holds an flock;
the lock is never held across the network. Bounded: only the newest `max_lines`
events are kept.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from pathlib import Path

DEFAULT_DIR = "/var/spool/isense"
DEFAULT_MAX_LINES = 1000


def _safe(node: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", node) or "node"


class Spool:
    def __init__(self, directory, node: str, max_lines: int = DEFAULT_MAX_LINES):
        self.path = Path(directory) / f"events-{_safe(node)}.jsonl"
        self.max_lines = max(1, max_lines)

    def _open(self) -> int:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    @staticmethod
    def _read(fd: int) -> list[dict]:
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        events = []
        for line in b"".join(chunks).splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a torn line (crash mid-write): skip it
            if isinstance(event, dict):
                events.append(event)
        return events

    @staticmethod
    def _write(fd: int, events: list[dict]) -> None:
        data = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events).encode()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)

    def take(self) -> list[dict]:
        """Every spooled event, oldest first; the spool is left empty."""
        if not self.path.exists():
            return []
        fd = self._open()
        try:
            events = self._read(fd)
            if events:
                os.ftruncate(fd, 0)
            return events
        finally:
            os.close(fd)  # closing drops the lock

    def put(self, events: list[dict]) -> int:
        """Add events (after what is there); returns how many old ones were dropped."""
        if not events:
            return 0
        fd = self._open()
        try:
            kept = self._read(fd) + list(events)
            dropped = max(0, len(kept) - self.max_lines)
            self._write(fd, kept[dropped:])
            return dropped
        finally:
            os.close(fd)

    def peek(self) -> list[dict]:
        """Read without taking (tests, `isense doctor`)."""
        if not self.path.exists():
            return []
        fd = self._open()
        try:
            return self._read(fd)
        finally:
            os.close(fd)
