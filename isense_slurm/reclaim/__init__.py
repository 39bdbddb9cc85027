"""Reclaim: giving lent GPUs back to training, and recording how fast it went.

submit_watch (job_submit.lua's wake file) -> make_way (SIGTERM the workers a new job
would preempt); events (POST /internal/events from the node hooks) -> recorder (worker
ends and reclaim records to the ledger) with assembler (pairs hook events into reclaim
records). book.ReclaimBook holds each reclaim's state from submit to training start.
"""
