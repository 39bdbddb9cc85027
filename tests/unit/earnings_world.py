"""A small real ledger for earnings and export tests: a config file, keys, workers and
request rows written through the real Ledger and RequestWriter.

Plain functions (no fixtures) so each test reads top to bottom.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from isense_slurm.cli import main
from isense_slurm.config import load_config
from isense_slurm.meter.ledger import Ledger
from isense_slurm.meter.rows import RequestRow
from isense_slurm.meter.writer import RequestWriter

# Wednesday 2025-01-01 00:00 UTC; the ISO week 2025-W01 runs Monday 2024-12-30 to Sunday 2025-01-05.
DAY = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
HOUR = 3600.0

CONFIG = """\
[slurm]
lend_partition = "inference"
service_account = "isense"
pools = ["train"]
[ledger]
path = "{ledger}"
[revenue]
operator_share = 0.7
currency = "EUR"
raw_gpu_hour_price = 2.5
[[models]]
name = "tiny"
path = "/models/tiny"
context_length = 2048
gpus = 2
price = {{ input_per_mtok = 0.10, output_per_mtok = 0.40, cached_input_per_mtok = 0.05 }}
[[models]]
name = "big"
path = "/models/big"
context_length = 8192
price = {{ input_per_mtok = 1.00, output_per_mtok = 2.00, cached_input_per_mtok = 0.50 }}
"""


def make_world(tmp_path: Path) -> tuple[Path, Path]:
    """(config path, ledger path) with a fresh ledger holding the keys 'alice' (id 1) and 'bob' (id 2)."""
    ledger = tmp_path / "ledger.db"
    config = tmp_path / "isense.toml"
    config.write_text(CONFIG.format(ledger=ledger))
    with Ledger.open(ledger) as book:
        book.create_key("alice")
        book.create_key("bob")
    return config, ledger


def request(
    rid: str,
    ts: float,
    *,
    key: int | None = 1,
    model: str = "tiny",
    node: str | None = "n1",
    job: str | None = "10",
    prompt: int = 1000,
    completion: int = 500,
    cached: int = 0,
    status: str = "ok",
) -> RequestRow:
    return RequestRow(
        id=rid,
        ts=ts,
        key_id=key,
        model=model,
        job_id=job,
        node=node,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        status=status,
        latency_ms=3.0,
        streamed=False,
    )


def write_requests(config: Path, rows) -> None:
    """Through the real group-committing writer, with the config's prices and share."""
    cfg = load_config(config)
    with RequestWriter(
        cfg.ledger.path,
        prices={m.name: m.price for m in cfg.models},
        operator_share=cfg.revenue.operator_share,
        currency=cfg.revenue.currency,
    ) as writer:
        for row in rows:
            writer.submit(row)


def lend(ledger: Path, job: str, *, node: str, gpus: int | None, model: str, start: float, end: float | None) -> None:
    with Ledger.open(ledger) as book:
        book.worker_event(job, state="lent", node=node, gpus=gpus, model=model, at=start)
        book.worker_event(job, state="serving", at=start + 30)
        if end is not None:
            book.worker_event(job, state="ended", reason="preempted", at=end)


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run `isense ARGV` in-process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def db_bytes(ledger: Path) -> bytes:
    """The database and its write-ahead log: what 'the ledger untouched' means (the -shm
    file is SQLite's shared-memory index, which readers update)."""
    wal = ledger.with_name(ledger.name + "-wal")
    return ledger.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def table_rows(ledger: Path, table: str) -> list[tuple]:
    with Ledger.open(ledger, create=False) as book:
        return book.db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
