"""Small converters shared by the JSON and `scontrol` parsers: numbers, times, GRES.

Pure functions, tolerant of the shapes different Slurm versions print.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from isense_slurm.slurm.hostlist import split_top_level

NULL_WORDS = frozenset({"", "(null)", "None", "none", "N/A", "n/a", "Unknown", "NONE"})
UNLIMITED_WORDS = frozenset({"UNLIMITED", "INFINITE", "Partition_Limit", "infinite"})


def number(value: Any) -> int | None:
    """A plain int, or the {set, infinite, number} wrapper of data_parser v0.0.40+.

    Unset and infinite give None; so does 22.05's null (NO_VAL).
    """
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite", False):
            return None
        value = value.get("number")
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def is_infinite(value: Any) -> bool:
    return isinstance(value, dict) and bool(value.get("infinite"))


def epoch(value: Any) -> datetime | None:
    """Unix seconds (plain or wrapped) as UTC datetime; 0, unset and infinite give None."""
    seconds = number(value)
    if not seconds or seconds < 0:
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def local_time(text: str | None) -> datetime | None:
    """scontrol's "2026-11-27T23:50:29" (local time of the command) as UTC datetime."""
    if text is None or text.strip() in NULL_WORDS:
        return None
    try:
        naive = datetime.strptime(text.strip(), "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    return naive.astimezone(UTC)


def duration_minutes(text: str | None) -> int | None:
    """Slurm durations "[days-]hours:minutes:seconds", "mm:ss", "mm" -> whole minutes.

    UNLIMITED, NONE, N/A -> None. Seconds round up, as Slurm counts a started minute.
    """
    if text is None:
        return None
    text = text.strip()
    if text in NULL_WORDS or text in UNLIMITED_WORDS:
        return None
    days = 0
    if "-" in text:
        d, _, text = text.partition("-")
        if not d.isdigit():
            return None
        days = int(d)
        fields = [int(x) for x in text.split(":") if x.isdigit()]
        # days-hours[:minutes[:seconds]]
        fields += [0] * (3 - len(fields))
        h, m, s = fields[:3]
    else:
        parts = text.split(":")
        if not all(p.isdigit() for p in parts):
            return None
        fields = [int(p) for p in parts]
        if len(fields) == 3:
            h, m, s = fields
        elif len(fields) == 2:
            h, m, s = 0, fields[0], fields[1]
        else:
            h, m, s = 0, fields[0], 0
    total_seconds = ((days * 24 + h) * 60 + m) * 60 + s
    return -(-total_seconds // 60)


def text_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return None if text in NULL_WORDS else text


def word_list(value: Any) -> tuple[str, ...]:
    """A JSON list or a comma-separated string as a tuple of non-empty words."""
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
    else:
        items = str(value).split(",")
    return tuple(w.strip() for w in items if w.strip() and w.strip() not in NULL_WORDS)


def states(value: Any) -> list[str]:
    """ "idle", "IDLE+DRAIN", "IDLE*", ["IDLE", "DRAIN"] -> upper-case words in order.

    sinfo/scontrol suffixes mark flags: * not responding, ~ powered down, # powering up,
    % powering down, ! power down pending, $ maintenance, @ reboot requested, ^ reboot issued.
    """
    suffixes = {
        "*": "NOT_RESPONDING",
        "~": "POWERED_DOWN",
        "#": "POWERING_UP",
        "%": "POWERING_DOWN",
        "!": "POWER_DOWN",
        "$": "MAINTENANCE",
        "@": "REBOOT_REQUESTED",
        "^": "REBOOT_ISSUED",
    }
    words = list(value) if isinstance(value, (list, tuple)) else str(value or "").split("+")
    out: list[str] = []
    for word in words:
        word = str(word).strip()
        extra = []
        while word and word[-1] in suffixes:
            extra.append(suffixes[word[-1]])
            word = word[:-1]
        if word:
            out.append(word.upper())
        out.extend(extra)
    return out


NODE_BASE_STATES = frozenset({"IDLE", "MIXED", "ALLOCATED", "DOWN", "ERROR", "FUTURE", "UNKNOWN"})
JOB_BASE_STATES = frozenset(
    {
        "PENDING",
        "RUNNING",
        "SUSPENDED",
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
    }
)
_STATE_ALIASES = {
    "ALLOC": "ALLOCATED",
    "MIX": "MIXED",
    "COMP": "COMPLETING",
    "DRNG": "DRAINING",
    "DRAIN": "DRAIN",
    "IDLE": "IDLE",
}


def split_states(words: list[str], base_states: frozenset[str]) -> tuple[str, frozenset[str]]:
    """(base state, other flags): the first word that is a base state is the state."""
    words = [_STATE_ALIASES.get(w, w) for w in words]
    base = next((w for w in words if w in base_states), words[0] if words else "UNKNOWN")
    return base, frozenset(w for w in words if w != base)


# --- GRES / TRES -----------------------------------------------------------------------

_IDX = re.compile(r"\(.*?IDX:([^)]*)\)")


def _gres_items(spec: str) -> list[str]:
    return [i for i in split_top_level(spec) if i not in NULL_WORDS]


def gpu_count(spec: Any) -> int:
    """GPUs named in a GRES/TRES spec, summed over its items.

    Understands "gpu:4", "gpu:a100:2(S:0-1)", "gpu:2(IDX:0-1)", "gres:gpu:4", "gres/gpu:1",
    "shard:8,gpu:4"; a bare "gpu" counts 1. In TRES strings ("cpu=2,gres/gpu=3,
    gres/gpu:a100=3") the untyped total wins so typed entries are not counted twice.
    """
    if not spec or not isinstance(spec, str):
        return 0
    return _gpu_count(spec)


# A cluster's squeue repeats the same few GRES strings thousands of times: cache them.
@lru_cache(maxsize=4096)
def _gpu_count(spec: str) -> int:
    gres_total, tres_untyped, tres_typed = 0, None, 0
    for item in _gres_items(spec):
        item = item.split("(", 1)[0]
        is_tres = "=" in item
        for prefix in ("gres/", "gres:"):
            if item.startswith(prefix):
                item = item[len(prefix) :]
        parts = re.split(r"[:=]", item)
        if parts[0] != "gpu":
            continue
        last = parts[-1] if len(parts) > 1 else ""
        if re.fullmatch(r"\d+[kKmMgGtT]", last):
            continue  # a size, not a count
        count = int(last) if last.isdigit() else 1  # "gpu" or "gpu:type" alone: one
        if not is_tres:
            gres_total += count
        elif len(parts) == 2:
            tres_untyped = (tres_untyped or 0) + count
        else:
            tres_typed += count
    return gres_total + (tres_untyped if tres_untyped is not None else tres_typed)


def gpu_indices(spec: Any) -> tuple[int, ...]:
    """Indices in "gpu:2(IDX:0-1)" or "gpu:a100:1(IDX:3),gpu:v100:1(IDX:0)"; N/A -> ()."""
    if not spec or not isinstance(spec, str):
        return ()
    return _gpu_indices(spec)


@lru_cache(maxsize=4096)
def _gpu_indices(spec: str) -> tuple[int, ...]:
    out: list[int] = []
    for item in _gres_items(spec):
        if not (item.startswith("gpu") or item.startswith("gres/gpu")):
            continue
        m = _IDX.search(item)
        if not m:
            continue
        for part in m.group(1).split(","):
            lo, _, hi = part.strip().partition("-")
            if lo.isdigit():
                out.extend(range(int(lo), int(hi if hi.isdigit() else lo) + 1))
    return tuple(sorted(set(out)))
