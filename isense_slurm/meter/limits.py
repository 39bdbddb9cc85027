"""Limits per API key and per key group: what they are and how the ledger keeps them.

A subject is one key ('key:<id>') or one group of keys ('group:<name>', the keys whose
`key_group` is that name). Each may have requests per minute, tokens per minute,
concurrent requests, and spend budgets per UTC day, UTC month and in total, in integer
nanos of the ledger's currency (meter/money.py). None: no limit. A key in a group is
held to its own limits and to its group's. Every change bumps `limits_generation` in
meta, which the gateways poll to reload them.
"""

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace

from isense_slurm.errors import UsageError
from isense_slurm.meter.connection import transaction
from isense_slurm.meter.keys import KEY_NAME
from isense_slurm.meter.ledger import Ledger
from isense_slurm.meter.rows import KEY_COLUMNS, KeyInfo

RATE_FIELDS = ("rpm", "tpm", "concurrent")
BUDGET_FIELDS = ("budget_day_nanos", "budget_month_nanos", "budget_total_nanos")
LIMIT_FIELDS = RATE_FIELDS + BUDGET_FIELDS
BUDGET_PERIODS = ("day", "month", "total")  # in the order of BUDGET_FIELDS


@dataclass(frozen=True)
class Limits:
    rpm: int | None = None
    tpm: int | None = None
    concurrent: int | None = None
    budget_day_nanos: int | None = None
    budget_month_nanos: int | None = None
    budget_total_nanos: int | None = None

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"limit {field.name} must be a whole number >= 0 or None, got {value!r}")

    @property
    def empty(self) -> bool:
        return all(getattr(self, name) is None for name in LIMIT_FIELDS)

    def budgets(self) -> dict[str, int]:
        """period ('day', 'month', 'total') -> budget in nanos, for the budgets set."""
        values = (getattr(self, name) for name in BUDGET_FIELDS)
        return {period: value for period, value in zip(BUDGET_PERIODS, values) if value is not None}

    def as_dict(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in LIMIT_FIELDS}


NO_LIMITS = Limits()


def key_subject(key_id: int) -> str:
    return f"key:{key_id}"


def group_subject(group: str) -> str:
    return f"group:{group}"


@dataclass(frozen=True)
class LimitBook:
    """Every limit at one moment: what a gateway holds in memory."""

    generation: int
    groups_of_keys: dict[int, str]  # active key id -> its group (keys in a group only)
    limits: dict[str, Limits]  # subject -> its limits (subjects with some limit only)

    def subjects(self, key_id: int) -> list[tuple[str, Limits]]:
        """The subjects that hold a key back: itself, then its group (those with limits)."""
        out = []
        mine = self.limits.get(key_subject(key_id))
        if mine is not None:
            out.append((key_subject(key_id), mine))
        group = self.groups_of_keys.get(key_id)
        if group is not None and (theirs := self.limits.get(group_subject(group))) is not None:
            out.append((group_subject(group), theirs))
        return out

    def budgeted(self) -> tuple[list[int], list[str]]:
        """(key ids, group names) that have a spend budget: the spend a gateway reads."""
        keys: list[int] = []
        groups: list[str] = []
        for subject, limits in self.limits.items():
            if limits.budgets():
                kind, _, name = subject.partition(":")
                if kind == "key":
                    keys.append(int(name))
                else:
                    groups.append(name)
        return keys, groups


EMPTY_BOOK = LimitBook(-1, {}, {})


def check_group_name(name: str) -> str:
    if not KEY_NAME.fullmatch(name):
        raise UsageError(
            f"group name {name!r}: use 1-64 letters, digits and . _ @ + -, starting with a letter or digit"
        )
    return name


def generation(ledger: Ledger) -> int:
    with ledger.lock:
        row = ledger.db.execute("SELECT value FROM meta WHERE key = 'limits_generation'").fetchone()
    return int(row[0]) if row else 0


def read_book(ledger: Ledger) -> LimitBook:
    cols = ", ".join(LIMIT_FIELDS)
    with ledger.lock:
        gen = generation(ledger)
        groups = ledger.db.execute(
            "SELECT id, key_group FROM api_keys WHERE revoked_at IS NULL AND key_group IS NOT NULL"
        ).fetchall()
        rows = ledger.db.execute(f"SELECT subject, {cols} FROM limits").fetchall()
    return LimitBook(gen, {row[0]: row[1] for row in groups}, {row[0]: Limits(*row[1:]) for row in rows})


def limits_of(ledger: Ledger, subject: str) -> Limits:
    cols = ", ".join(LIMIT_FIELDS)
    with ledger.lock:
        row = ledger.db.execute(f"SELECT {cols} FROM limits WHERE subject = ?", [subject]).fetchone()
    return Limits(*row) if row else NO_LIMITS


def set_limits(ledger: Ledger, subject: str, changes: Mapping[str, int | None]) -> Limits:
    """Change some limits of a subject (None clears one); returns all its limits now."""
    unknown = set(changes) - set(LIMIT_FIELDS)
    if unknown:
        raise ValueError(f"unknown limits: {', '.join(sorted(unknown))}")
    with ledger.lock:
        new = replace(limits_of(ledger, subject), **changes)
        with _writing(ledger):
            if new.empty:
                ledger.db.execute("DELETE FROM limits WHERE subject = ?", [subject])
            else:
                cols = ", ".join(LIMIT_FIELDS)
                updates = ", ".join(f"{name} = excluded.{name}" for name in LIMIT_FIELDS)
                ledger.db.execute(
                    f"INSERT INTO limits(subject, {cols}, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    f"ON CONFLICT(subject) DO UPDATE SET {updates}, updated_at = excluded.updated_at",
                    [subject, *new.as_dict().values(), time.time()],
                )
    return new


def set_key_group(ledger: Ledger, key_id: int, group: str | None) -> None:
    """Put a key in a group (None: in none)."""
    if group is not None:
        check_group_name(group)
    with ledger.lock, _writing(ledger):
        ledger.db.execute("UPDATE api_keys SET key_group = ? WHERE id = ?", [group, key_id])


def find_key(ledger: Ledger, id_or_name: int | str) -> tuple[KeyInfo, str | None]:
    """A key (the active one of that name first, else the latest) and its group."""
    text = str(id_or_name)
    params: list[int | str]
    with ledger.lock:
        if text.isdigit():
            sql, params = f"SELECT {KEY_COLUMNS}, key_group FROM api_keys WHERE id = ?", [int(text)]
        else:
            sql = (
                f"SELECT {KEY_COLUMNS}, key_group FROM api_keys WHERE name = ? ORDER BY revoked_at IS NOT NULL, id DESC"
            )
            params = [text]
        row = ledger.db.execute(sql, params).fetchone()
    if row is None:
        raise UsageError(f"no API key with id or name {text!r} (see `isense keys list`)")
    return KeyInfo(*row[:-1]), row[-1]


def groups_of_all_keys(ledger: Ledger) -> dict[int, str | None]:
    """key id -> group, revoked keys included (for `isense keys list`)."""
    with ledger.lock:
        rows = ledger.db.execute("SELECT id, key_group FROM api_keys").fetchall()
    return {row[0]: row[1] for row in rows}


def group_members(ledger: Ledger, group: str) -> list[int]:
    """Every key id ever in a group (revoked ones too: their spend counts)."""
    with ledger.lock:
        rows = ledger.db.execute("SELECT id FROM api_keys WHERE key_group = ? ORDER BY id", [group]).fetchall()
    return [row[0] for row in rows]


@contextmanager
def _writing(ledger: Ledger) -> Iterator[None]:
    """One write transaction that also bumps limits_generation (the caller holds the lock)."""
    with transaction(ledger.db.conn):
        yield
        ledger.db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'limits_generation'")
