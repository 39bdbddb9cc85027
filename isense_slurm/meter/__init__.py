"""The meter: the SQLite token ledger, and the only code that writes SQL.

- money.py: integer nanos, revenue and the operator's share.
- rows.py: the records (RequestRow, KeyInfo, WorkerInfo, PriceEntry, RequestTotals) and their columns.
- keys.py: client API keys as text (form, display prefix, stored hash).
- schema.py: tables and versioned, additive migrations.
- connection.py: opening the file (WAL, synchronous=NORMAL, busy_timeout, identity check).
- ledger.py: Ledger (keys, prices, workers, reads).
- writer.py: RequestWriter, the group-committing writer of request rows.
- earnings.py: read-only queries behind `isense earnings` (mode=ro connection).
- exports.py: run_export() and the exports table (closed periods, checksums, late rows).
"""
