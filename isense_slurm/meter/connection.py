"""Opening the ledger file: one place for the pragmas, the identity check and migrations.

Durability: the ledger runs in WAL mode with synchronous=NORMAL. A COMMIT returns once
the transaction is appended to the -wal file with write(2), i.e. it sits in the
kernel's page cache. So a committed row survives kill -9 (or any crash) of the process;
only a crash of the operating system or a power cut may lose the last commits before
the next checkpoint. That is the trade the meter makes for commits without fsync.
"""

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlite_utils import Database

from isense_slurm.errors import ConfigError
from isense_slurm.meter import schema

# Several processes may write (the gateway, the controller, node prolog/epilog): wait
# this long for the write lock instead of failing with "database is locked".
BUSY_TIMEOUT_MS = 10_000


def connect(path: Path) -> sqlite3.Connection:
    """A raw connection with explicit transactions (we BEGIN and COMMIT ourselves)."""
    try:
        conn = sqlite3.connect(
            str(path),
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,  # callers serialise use with a lock or own a thread
        )
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    except sqlite3.Error as err:
        raise ConfigError(f"{path}: cannot open the ledger ({err})") from None
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error.

    IMMEDIATE takes the write lock up front, so a busy ledger makes us wait on
    busy_timeout instead of failing half-way through when a read turns into a write.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def open_database(path: str | Path, *, create: bool = True) -> Database:
    """Open (and create or migrate) the ledger at `path` as a sqlite-utils Database.

    Refuses, with a ConfigError naming the path, anything that is not an isense ledger
    or is newer than this code, before writing a single byte to it.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: the ledger path is a directory, not a file")
    if not path.exists():
        if not create:
            raise ConfigError(f"{path}: no ledger here (check [ledger] path)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"{path}: cannot create the ledger's folder ({err.strerror})") from None
    conn = connect(path)
    try:
        db = Database(conn)
        version = schema.read_version(db, path)
        if version > schema.LATEST_VERSION:
            raise ConfigError(
                f"{path}: ledger schema version {version} is newer than this isense "
                f"(knows up to {schema.LATEST_VERSION}); upgrade isense-slurm"
            )
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise ConfigError(f"{path}: cannot switch the ledger to WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous=NORMAL")
        if version < schema.LATEST_VERSION:
            with transaction(conn):
                schema.migrate(db, path)
    except ConfigError:
        conn.close()
        raise
    except sqlite3.DatabaseError as err:
        conn.close()
        raise ConfigError(f"{path}: {_describe(err)}") from None
    return db


def _describe(err: sqlite3.Error) -> str:
    text = str(err)
    if "not a database" in text:
        return "not an SQLite database (check [ledger] path)"
    return f"cannot use the ledger ({text})"
