"""The ledger's control-plane API: API keys, the price book, workers, request totals.

Request rows are written by meter.writer.RequestWriter (its own thread and connection);
everything else goes through a Ledger. A Ledger serialises its calls with a lock, so
one instance may be shared by the threads of a process.
"""

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from sqlite_utils import Database

from isense_slurm.errors import UsageError
from isense_slurm.meter import money
from isense_slurm.meter.connection import open_database, transaction
from isense_slurm.meter.keys import KEY_DISPLAY_CHARS, KEY_NAME, key_hash, new_key_plaintext
from isense_slurm.meter.ledger_workers import WorkerRecords
from isense_slurm.meter.money import PriceLike
from isense_slurm.meter.rows import (
    KEY_COLUMNS,
    RECLAIM_COLUMNS,
    KeyInfo,
    PriceEntry,
    ReclaimInfo,
    RequestTotals,
)
from isense_slurm.meter.worker_starts import StartRecords

GROUP_COLUMNS = ("model", "key_id", "job_id", "node", "status")


class _PricedModel(Protocol):
    """What sync_prices needs from a configured model (config.ModelConfig fits)."""

    @property
    def name(self) -> str: ...

    @property
    def price(self) -> PriceLike: ...


class Ledger(WorkerRecords, StartRecords):
    def __init__(self, db: Database, path: Path) -> None:
        self.db = db
        self.path = path
        self._lock = threading.RLock()

    @classmethod
    def open(cls, path: str | Path, *, create: bool = True) -> "Ledger":
        """Open the ledger, creating it (and its folder) and migrating it as needed.

        ConfigError, naming the path, for a file that is not an isense ledger or one
        written by a newer isense. create=False: a missing file is a ConfigError too.
        """
        path = Path(path)
        return cls(open_database(path, create=create), path)

    @property
    def lock(self) -> threading.RLock:
        """Held around every use of `db` (meter/limits.py and meter/usage.py take it too)."""
        return self._lock

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def schema_version(self) -> int:
        version = self._meta("schema_version")
        assert version is not None  # open_database() migrated the file, which writes it
        return int(version)

    def _meta(self, key: str) -> str | None:
        with self._lock:
            row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    # -- API keys ---------------------------------------------------------------------

    def create_key(self, name: str) -> tuple[KeyInfo, str]:
        """A new client key: (its info, the plaintext). The plaintext is not stored."""
        if not KEY_NAME.fullmatch(name) or name.isdigit():
            raise UsageError(
                f"key name {name!r}: use 1-64 letters, digits and . _ @ + -, "
                "starting with a letter or digit, not only digits"
            )
        plaintext = new_key_plaintext()
        now = time.time()
        with self._lock, transaction(self.db.conn):
            clash = self.db.execute("SELECT id FROM api_keys WHERE name = ? AND revoked_at IS NULL", [name]).fetchone()
            if clash:
                raise UsageError(f"an active key named {name!r} exists (id {clash[0]}); revoke it or pick another name")
            cursor = self.db.execute(
                "INSERT INTO api_keys(name, prefix, hash, created_at) VALUES (?, ?, ?, ?)",
                [name, plaintext[:KEY_DISPLAY_CHARS], key_hash(plaintext), now],
            )
            self._bump_keys_generation()
        assert cursor.lastrowid is not None  # set by the INSERT just above
        return KeyInfo(cursor.lastrowid, name, plaintext[:KEY_DISPLAY_CHARS], now, None), plaintext

    def list_keys(self) -> list[KeyInfo]:
        with self._lock:
            rows = list(self.db.query(f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY id"))
        return [KeyInfo(**row) for row in rows]

    def revoke_key(self, id_or_name: int | str) -> KeyInfo:
        """Revoke by id or by name; UsageError when unknown or already revoked."""
        text = str(id_or_name)
        with self._lock, transaction(self.db.conn):
            if text.isdigit():
                rows = self.db.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?", [int(text)])
            else:
                # The active key of that name first; else any (to say it is revoked).
                rows = self.db.execute(
                    f"SELECT {KEY_COLUMNS} FROM api_keys WHERE name = ? ORDER BY revoked_at IS NOT NULL, id DESC",
                    [text],
                )
            row = rows.fetchone()
            if row is None:
                raise UsageError(f"no API key with id or name {text!r} (see `isense keys list`)")
            key = KeyInfo(*row)
            if not key.active:
                raise UsageError(f"API key {key.id} ({key.name}) is already revoked")
            now = time.time()
            self.db.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", [now, key.id])
            self._bump_keys_generation()
        return KeyInfo(key.id, key.name, key.prefix, key.created_at, now)

    def active_key_hashes(self) -> dict[str, KeyInfo]:
        """sha256 hex -> KeyInfo of every active key, for the gateway's in-memory check."""
        with self._lock:
            rows = self.db.execute(f"SELECT hash, {KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL").fetchall()
        return {row[0]: KeyInfo(*row[1:]) for row in rows}

    def keys_generation(self) -> int:
        """A counter bumped by every key change: poll it to know when to reload the keys."""
        return int(self._meta("keys_generation") or 0)

    def _bump_keys_generation(self) -> None:
        self.db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'keys_generation'")

    # -- price book -------------------------------------------------------------------

    def sync_prices(
        self, models: Mapping[str, PriceLike] | Iterable[_PricedModel], currency: str, at: float | None = None
    ) -> list[str]:
        """Record the configured prices; a row is added only for a model whose price changed.

        `models`: config ModelConfig objects (.name, .price) or a mapping name -> price.
        Returns the names of the models that got a new row.
        """
        items = models.items() if isinstance(models, Mapping) else ((m.name, m.price) for m in models)
        at = time.time() if at is None else at
        changed: list[str] = []
        with self._lock, transaction(self.db.conn):
            for name, price in items:
                wanted = (currency, *money.price_nanos_per_mtok(price))
                latest = self.db.execute(
                    "SELECT currency, input_nanos_per_mtok, output_nanos_per_mtok, cached_nanos_per_mtok "
                    "FROM prices WHERE model = ? ORDER BY effective_from DESC, id DESC LIMIT 1",
                    [name],
                ).fetchone()
                if latest != wanted:
                    self.db.execute(
                        "INSERT INTO prices(model, currency, input_nanos_per_mtok, output_nanos_per_mtok, "
                        "cached_nanos_per_mtok, effective_from) VALUES (?, ?, ?, ?, ?, ?)",
                        [name, *wanted, at],
                    )
                    changed.append(name)
        return changed

    def price_for(self, model: str, at: float | None = None) -> PriceEntry | None:
        """The price in force at `at` (default: the latest), or None for an unpriced model."""
        sql = (
            "SELECT model, currency, input_nanos_per_mtok, output_nanos_per_mtok, cached_nanos_per_mtok, "
            "effective_from FROM prices WHERE model = ?"
        )
        params: list[Any] = [model]
        if at is not None:
            sql += " AND effective_from <= ?"
            params.append(at)
        with self._lock:
            row = self.db.execute(sql + " ORDER BY effective_from DESC, id DESC LIMIT 1", params).fetchone()
        if row is None:
            return None
        name, currency, inp, out, cached, since = row
        nano = money.NANOS_PER_UNIT
        return PriceEntry(name, currency, inp / nano, out / nano, cached / nano, since)

    # -- reclaims ---------------------------------------------------------------------

    def record_reclaim(
        self,
        training_job_id: str | int,
        *,
        node: str | None = None,
        worker_job_id: str | None = None,
        submit_time: float | None = None,
        sigterm_time: float | None = None,
        gpus_free_time: float | None = None,
        start_time: float | None = None,
        at: float | None = None,
    ) -> list[ReclaimInfo]:
        """Upsert the reclaim of a training job (one row per node it started on).

        Given fields overwrite, None leaves a field as it is, so the hooks' times and the
        controller's submit time can arrive in any order. Without `node` (the submit time
        from squeue) every row of the job is updated, or one is created without a node
        for the hooks' record to fill later. Returns the job's rows.
        """
        job = str(training_job_id)
        given = {
            "worker_job_id": worker_job_id,
            "submit_time": submit_time,
            "sigterm_time": sigterm_time,
            "gpus_free_time": gpus_free_time,
            "start_time": start_time,
        }
        changes = {k: v for k, v in given.items() if v is not None}
        with self._lock, transaction(self.db.conn):
            rows = self.db.execute(
                "SELECT id, node FROM reclaims WHERE training_job_id = ? ORDER BY id", [job]
            ).fetchall()
            if node is None:
                targets = [row[0] for row in rows]
            else:
                same = [row[0] for row in rows if row[1] == node]
                blank = [row[0] for row in rows if row[1] is None]
                targets = same[:1] or blank[:1]
                if targets:
                    changes["node"] = node
            if targets and changes:
                assignments = ", ".join(f"{column} = ?" for column in changes)
                marks = ", ".join("?" * len(targets))
                self.db.execute(
                    f"UPDATE reclaims SET {assignments} WHERE id IN ({marks})", [*changes.values(), *targets]
                )
            elif not targets:
                row = {"training_job_id": job, "node": node, **given, "created_at": time.time() if at is None else at}
                self.db.execute(
                    f"INSERT INTO reclaims({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values())
                )
        return self.reclaims(job)

    def reclaims(self, training_job_id: str | int | None = None, since: float | None = None) -> list[ReclaimInfo]:
        """Reclaim rows, oldest first: of one training job, or created at/after `since`."""
        clauses: list[str] = []
        params: list[Any] = []
        if training_job_id is not None:
            clauses.append("training_job_id = ?")
            params.append(str(training_job_id))
        if since is not None:
            clauses.append("created_at >= ?")
            params.append(since)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self.db.execute(f"SELECT {RECLAIM_COLUMNS} FROM reclaims {where} ORDER BY id", params).fetchall()
        return [ReclaimInfo(*row) for row in rows]

    # -- requests (reads) ---------------------------------------------------------------

    def request_totals(
        self, since: float | None = None, until: float | None = None, group_by: str | None = None
    ) -> RequestTotals | dict[str | int | None, RequestTotals]:
        """Sums over requests with since <= ts < until.

        Without group_by: one RequestTotals. With group_by (one of GROUP_COLUMNS): a dict
        of group value -> RequestTotals.
        """
        if group_by is not None and group_by not in GROUP_COLUMNS:
            raise UsageError(f"cannot group requests by {group_by!r}; use one of {', '.join(GROUP_COLUMNS)}")
        clauses: list[str] = []
        params: list[Any] = []
        if since is not None:
            clauses.append("ts >= ?")
            params.append(since)
        if until is not None:
            clauses.append("ts < ?")
            params.append(until)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sums = (
            "COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
            "COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(gross_nanos), 0), COALESCE(SUM(operator_nanos), 0)"
        )
        with self._lock:
            if group_by is None:
                row = self.db.execute(f"SELECT {sums} FROM requests {where}", params).fetchone()
                return _totals(row)
            rows = self.db.execute(
                f"SELECT {group_by}, {sums} FROM requests {where} GROUP BY {group_by} ORDER BY {group_by}", params
            ).fetchall()
        return {row[0]: _totals(row[1:]) for row in rows}


def _totals(row: Sequence[int]) -> RequestTotals:
    # SUM() over integers stays an exact integer in SQLite (it raises on 64-bit overflow
    # rather than rounding), which is why money is kept in integer nanos.
    return RequestTotals(*row)
