"""A watchdog for the server's event loop: says when, for how long and where it stalled.

Every request and every worker heartbeat waits on the one event loop; a callback that
blocks it (a synchronous read, a huge JSON body, a slow log handler) delays them all.
A task on the loop stamps the time every TICK seconds; a thread outside it checks the
stamp, and when the loop has not ticked for `threshold` seconds it logs the loop
thread's stack at that moment, once per stall, then the stall's length when it ends.
The largest lag seen is kept for /metrics: exact for stalls of TICK or longer (one of
them always holds a tick back), sampled for shorter ones.
"""

import asyncio
import logging
import sys
import threading
import time
import traceback

log = logging.getLogger("isense.gateway")

TICK = 0.25
STACK_LINES = 12
SWITCH_INTERVAL = 0.001  # seconds; CPython's default is 0.005


def favour_the_loop() -> None:
    """Shorten how long a busy thread keeps the GIL when another thread asks for it.

    The event loop gives the GIL up at every socket call; with another thread busy in
    Python (the controller's tick, the ledger writer) it then waits up to the switch
    interval to get it back, at each call: with CPython's 5 ms, a request that makes a
    few dozen such calls waits a few hundred ms. 1 ms bounds that at a small cost of
    switching.
    """
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        # uvloop does its socket calls in C without giving the GIL up at each: far fewer
        # handoffs to wait for, and less CPU per request.
        import uvloop

        uvloop.install()
    except ImportError:
        pass


class LoopWatch:
    def __init__(self, threshold: float = 1.0, clock=time.monotonic):
        self.threshold = threshold
        self.clock = clock
        self.max_lag = 0.0  # seconds, the largest lag seen between two ticks
        self.stalls = 0  # stalls longer than the threshold
        self._last = clock()
        self._loop_thread: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    async def run(self) -> None:
        """The loop's side: stamp the time every TICK; also measure the lag itself."""
        self._loop_thread = threading.get_ident()
        self._last = self.clock()
        self._thread = threading.Thread(target=self._watch, name="isense-loop-watch", daemon=True)
        self._thread.start()
        try:
            while True:
                await asyncio.sleep(TICK)
                now = self.clock()
                self.max_lag = max(self.max_lag, now - self._last - TICK)
                self._last = now
        finally:
            self._stop.set()

    def _watch(self) -> None:
        reported = None  # the stamp of the stall already reported
        while not self._stop.wait(self.threshold / 4):
            last = self._last
            stalled = self.clock() - last
            if stalled >= self.threshold and reported != last:
                reported = last
                self.stalls += 1
                log.warning("event loop stalled for %.2f s so far, in:\n%s", stalled, self._loop_stack())
            elif reported is not None and reported != last:
                log.warning("event loop ran again after %.2f s", last - reported)
                reported = None

    def _loop_stack(self) -> str:
        thread = self._loop_thread
        frame = sys._current_frames().get(thread) if thread is not None else None
        if frame is None:
            return "  (no stack)"
        lines = traceback.format_stack(frame)[-STACK_LINES:]
        return "".join(lines).rstrip()
