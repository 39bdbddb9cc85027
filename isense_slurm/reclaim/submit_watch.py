"""The submit watcher: job_submit.lua rewrites the [slurm] submit_wake file on every
submit; a thread polls its mtime and calls make way at once (reclaim/make_way.py)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("isense.controller")

POLL_SECONDS = 0.025


class SubmitWatcher:
    """Calls `on_submit(mtime)` when the job_submit hook rewrites `path` (polls its mtime)."""

    def __init__(self, path: Path, on_submit: Callable[[float], object], poll_seconds: float = POLL_SECONDS):
        self.path = Path(path)
        self.on_submit = on_submit
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.wakes = 0

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def start(self) -> None:
        if not self.path.parent.is_dir():
            log.warning("make way off: [slurm] submit_wake folder %s does not exist", self.path.parent)
            return
        # The file as it is now is no wake; stamped here, not in the thread, so a write
        # right after start() is never taken for the starting point.
        self._thread = threading.Thread(
            target=self._loop, args=(self._stamp(),), name="isense-submit-watch", daemon=True
        )
        self._thread.start()
        log.info("make way on: watching %s (written by job_submit.lua)", self.path)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _loop(self, last: tuple[int, int] | None) -> None:
        while not self._stop.wait(self.poll_seconds):
            stamp = self._stamp()
            # Size 0: caught between the hook's truncate and its write (the mtime is
            # still the last submit's); the next poll sees the write.
            if stamp is None or stamp == last or stamp[1] == 0:
                continue
            last = stamp
            self.wakes += 1
            log.debug("make way: wake %d (%s)", self.wakes, stamp)
            try:
                self.on_submit(stamp[0] / 1e9)
            except Exception as err:  # noqa: BLE001 - the watcher must outlive one bad pass
                log.error("make way failed: %s", err)
