"""Logging for the long-running processes (`isense gateway`, `isense serve`).

Records are formatted and written by a thread of their own (QueueHandler ->
QueueListener): a write to stderr blocks when whatever reads it (journald, a pipe, a
full disk) is slow, and on the event loop that would stall every request and every
worker heartbeat with it. The loop only puts the record on a queue.
"""

import atexit
import logging
import logging.handlers
import queue
import sys


def setup(name: str, verbose: bool = False) -> None:
    """Log `isense.*` as '<time> <name>: <message>' to stderr, off the calling thread."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {name}: %(message)s", "%Y-%m-%dT%H:%M:%S"))
    records: queue.SimpleQueue = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, handler, respect_handler_level=False)
    listener.start()
    atexit.register(listener.stop)  # flushes what is queued at exit
    log = logging.getLogger("isense")
    log.handlers[:] = [logging.handlers.QueueHandler(records)]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
    # APScheduler reports each skipped overlapping tick; ours are coalesced on purpose.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
