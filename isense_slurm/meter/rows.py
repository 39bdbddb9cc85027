"""The ledger's records as frozen dataclasses: what goes in and what comes out."""

from dataclasses import dataclass

from isense_slurm.contracts.states import EndReason, RequestStatus, WorkerStage

REQUEST_STATUSES = tuple(RequestStatus)
WORKER_STATES = tuple(WorkerStage)
END_REASONS = tuple(EndReason)


@dataclass(frozen=True)
class RequestRow:
    """One request that reached a worker, with the tokens the client actually received."""

    id: str  # the response id sent to the client; the ledger's primary key
    ts: float  # unix seconds
    key_id: int | None
    model: str
    job_id: str | None
    node: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    status: str  # 'ok' | 'aborted' | 'partial' | 'error'
    latency_ms: float
    streamed: bool
    error: str | None = None
    attempts: int = 1

    def __post_init__(self) -> None:
        # Checked here so that a bad row fails in the caller, not in the writer thread.
        if not self.id:
            raise ValueError("RequestRow.id must not be empty")
        if self.status not in REQUEST_STATUSES:
            raise ValueError(f"RequestRow.status must be one of {REQUEST_STATUSES}, got {self.status!r}")
        if min(self.prompt_tokens, self.completion_tokens, self.cached_tokens) < 0:
            raise ValueError("RequestRow token counts must not be negative")


@dataclass(frozen=True)
class KeyInfo:
    """A client API key as the ledger knows it: never the plaintext, never the hash."""

    id: int
    name: str
    prefix: str  # first characters of the key, for people to tell keys apart
    created_at: float
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class PriceEntry:
    """A row of the price book; fits money.revenue like config.Price does."""

    model: str
    currency: str
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float
    effective_from: float


@dataclass(frozen=True)
class WorkerInfo:
    """One run of a worker job (a requeued Slurm job gets a new run under the same id)."""

    job_id: str
    run: int
    state: str
    reason: str | None
    model: str | None
    node: str | None
    gpus: int | None
    gpu_ids: str | None  # "0,1" when the GPU indices are known
    address: str | None
    started_at: float
    serving_at: float | None
    draining_at: float | None
    ended_at: float | None
    updated_at: float


@dataclass(frozen=True)
class RequestTotals:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    gross_nanos: int = 0
    operator_nanos: int = 0


@dataclass(frozen=True)
class ReclaimInfo:
    """One training job taking lent GPUs back on one node; unix times, None when unknown."""

    id: int
    training_job_id: str
    node: str | None
    worker_job_id: str | None  # "12" or "12,13" when several workers held the GPUs
    submit_time: float | None
    sigterm_time: float | None
    gpus_free_time: float | None
    start_time: float | None
    created_at: float

    @property
    def submit_to_start(self) -> float | None:
        if self.submit_time is None or self.start_time is None:
            return None
        return self.start_time - self.submit_time


# SELECT lists in the order of KeyInfo's, ReclaimInfo's and WorkerInfo's fields.
KEY_COLUMNS = "id, name, prefix, created_at, revoked_at"
RECLAIM_COLUMNS = (
    "id, training_job_id, node, worker_job_id, submit_time, sigterm_time, gpus_free_time, start_time, created_at"
)
WORKER_COLUMNS = (
    "job_id, run, state, reason, model, node, gpus, gpu_ids, address, "
    "started_at, serving_at, draining_at, ended_at, updated_at"
)
