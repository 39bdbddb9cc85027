"""Ledger.record_reclaim: one row per (training job, node), filled in any order."""

from isense_slurm.meter.ledger import Ledger
from isense_slurm.reclaim.assembler import Reclaim

T = 1_700_000_000.0


def test_hook_record_then_submit_time_fill_one_row(tmp_path):
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        reclaim = Reclaim("11", "n1", ("10",), T + 0.3, T + 1.2, T + 1.5)
        (row,) = ledger.record_reclaim(**reclaim.ledger_fields(), at=T + 2)
        assert (row.training_job_id, row.node, row.worker_job_id) == ("11", "n1", "10")
        assert (row.sigterm_time, row.gpus_free_time, row.start_time, row.submit_time) == (
            T + 0.3,
            T + 1.2,
            T + 1.5,
            None,
        )
        (row,) = ledger.record_reclaim("11", submit_time=T + 0.1)
        assert row.submit_time == T + 0.1 and row.start_time == T + 1.5
        assert abs(row.submit_to_start - 1.4) < 1e-6
        # A corrected record (a late worker_end) overwrites the times it gives.
        (row,) = ledger.record_reclaim("11", node="n1", worker_job_id="10,12", sigterm_time=T + 0.2)
        assert (row.worker_job_id, row.sigterm_time, row.submit_time) == ("10,12", T + 0.2, T + 0.1)
        assert len(ledger.reclaims()) == 1


def test_submit_time_first_then_nodes(tmp_path):
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        (row,) = ledger.record_reclaim("21", submit_time=T)
        assert row.node is None
        (row,) = ledger.record_reclaim("21", node="n1", start_time=T + 1)
        assert (row.node, row.submit_time, row.start_time) == ("n1", T, T + 1)
        rows = ledger.record_reclaim("21", node="n2", start_time=T + 1.1)  # a two-node job
        assert [(r.node, r.submit_time) for r in rows] == [("n1", T), ("n2", None)]
        rows = ledger.record_reclaim("21", submit_time=T - 0.5)
        assert [r.submit_time for r in rows] == [T - 0.5, T - 0.5]
        assert ledger.reclaims("nope") == [] and len(ledger.reclaims(since=0)) == 2
