"""Export files: one line per request as CSV or JSON Lines, written atomically with a
sha256sum-style checksum file beside it.

Byte-identical re-exports: rows come sorted by (ts, id), every value is formatted
without floats or locale (money as exact decimal strings with 9 places, times as UTC
ISO 8601 with microseconds, truncated), lines end in '\\n', text is UTF-8.
"""

import csv
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from isense_slurm.errors import UsageError

FORMATS = ("csv", "jsonl")
COLUMNS = (
    "id",
    "time",
    "client",
    "key_id",
    "model",
    "node",
    "job_id",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "currency",
    "gross",
    "operator_share",
)
FILE_MODE = 0o644


def file_name(period_label: str, fmt: str) -> str:
    return f"isense-requests-{period_label}.{fmt}"


def money_text(nanos: int) -> str:
    """Exact decimal string with 9 places: 42 nanos -> '0.000000042'."""
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(nanos), 1_000_000_000)
    return f"{sign}{whole}.{frac:09d}"


def time_text(ts: float) -> str:
    """UTC ISO 8601 with microseconds, truncated (never rounded into the next day)."""
    seconds = math.floor(ts)
    micros = min(int((ts - seconds) * 1_000_000), 999_999)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{micros:06d}Z"


def record(row: Sequence[Any]) -> dict[str, Any]:
    """A ledger row (the columns of meter.exports.ROW_COLUMNS) as an export record."""
    (rid, ts, key_id, client, model, node, job_id, status, prompt, completion, cached, currency, gross, operator) = row
    return {
        "id": rid,
        "time": time_text(ts),
        "client": client,
        "key_id": key_id,
        "model": model,
        "node": node,
        "job_id": job_id,
        "status": status,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": cached,
        "currency": currency,
        "gross": money_text(gross),
        "operator_share": money_text(operator),
    }


class _HashingText:
    """A text sink that encodes to UTF-8, hashes and buffers into a binary file."""

    def __init__(self, binary: IO[bytes]) -> None:
        self.binary = binary
        self.sha256 = hashlib.sha256()

    def write(self, text: str) -> int:
        data = text.encode("utf-8")
        self.sha256.update(data)
        self.binary.write(data)
        return len(text)


class RecordWriter:
    """Serialises records in one format onto a binary file, hashing as it goes."""

    def __init__(self, binary: IO[bytes], fmt: str) -> None:
        if fmt not in FORMATS:
            raise UsageError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
        self.fmt = fmt
        self._sink = _HashingText(binary)
        if fmt == "csv":
            # None (no node, no key) becomes an empty field, as csv does by default.
            self._csv = csv.writer(self._sink, lineterminator="\n")
            self._csv.writerow(COLUMNS)

    def write(self, rec: dict[str, Any]) -> None:
        if self.fmt == "csv":
            self._csv.writerow(rec.values())
        else:
            self._sink.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")

    @property
    def sha256(self) -> str:
        return self._sink.sha256.hexdigest()


def checksum_line(sha256: str, path: Path) -> str:
    """The line `sha256sum` prints, so `sha256sum -c FILE.sha256` works in the folder."""
    return f"{sha256}  {path.name}\n"


def file_sha256(path: Path) -> str | None:
    """The file's sha256, or None when it does not exist."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def check_out_dir(out_dir: str | Path) -> Path:
    """The export folder must exist and be writable: UsageError (exit 2) otherwise."""
    folder = Path(out_dir)
    if not folder.exists():
        raise UsageError(f"--out {folder}: no such folder (create it first)")
    if not folder.is_dir():
        raise UsageError(f"--out {folder}: not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--out {folder}: not writable by this user")
    return folder


class AtomicFile:
    """A temp file in the target's folder; commit() fsyncs it and renames it into place.

    Leaving the block without commit() (an error, Ctrl-C) removes the temp file, so a
    reader never sees a partial export under the final name.
    """

    def __init__(self, target: Path) -> None:
        self.target = target
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        except OSError as err:
            raise UsageError(f"--out {target.parent}: cannot create a file there ({err.strerror})") from None
        self.temp = Path(temp)
        self.file = os.fdopen(fd, "wb", buffering=1 << 20)
        self.committed = False

    def __enter__(self) -> "AtomicFile":
        return self

    def commit(self) -> None:
        self.file.flush()
        os.fchmod(self.file.fileno(), FILE_MODE)
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.temp, self.target)
        self.committed = True
        _fsync_dir(self.target.parent)  # the rename itself survives a crash

    def __exit__(self, *exc: object) -> None:
        if not self.committed:
            self.file.close()
            self.temp.unlink(missing_ok=True)


def write_text_atomic(target: Path, text: str) -> None:
    with AtomicFile(target) as out:
        out.file.write(text.encode("utf-8"))
        out.commit()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
