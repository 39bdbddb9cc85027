"""How this worker's start went, for the ledger (contracts.control.START_PHASES).

Wall times of the worker's own steps, plus two durations vLLM prints in its log:
"Loading weights took 0.01 seconds" and "init engine (profile, create kv cache, warmup
model) took 0.05 s" (vLLM 0.32; a vLLM that prints neither reports neither).
"""

import os
import re
import time
from pathlib import Path

_WEIGHTS = re.compile(rb"Loading weights took ([0-9]+(?:\.[0-9]+)?) s")
_ENGINE = re.compile(rb"init engine .*? took ([0-9]+(?:\.[0-9]+)?) s")
# The start's lines are near the log's top: read no more than this of it.
MAX_LOG_BYTES = 4 * 1024 * 1024


def process_started_at() -> float | None:
    """This process's start as unix seconds (from /proc: clock ticks since boot), or
    None where /proc cannot tell."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


def vllm_durations(log_path: Path, offset: int = 0) -> dict[str, float]:
    """weights_s and engine_s from this run's part of vLLM's log (what it printed)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            text = f.read(MAX_LOG_BYTES)
    except OSError:
        return {}
    out = {}
    for name, pattern in (("weights_s", _WEIGHTS), ("engine_s", _ENGINE)):
        found = pattern.search(text)
        if found:
            out[name] = float(found.group(1))
    return out
