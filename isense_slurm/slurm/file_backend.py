"""A read-only SlurmBackend over saved Slurm output, for offline analysis.

An admin captures a cluster's state once and reads it anywhere (a laptop, a support
ticket, a benchmark):

    sinfo --json > DIR/sinfo.json             # or, on 23.02+: scontrol show node --json > DIR/scontrol-node.json
    squeue --json --states=all > DIR/squeue.json
    scontrol show -o partition > DIR/scontrol-partition.txt   # optional

Same parsers as CliBackend, same filters; every action raises SlurmError.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from isense_slurm.errors import SlurmError, UsageError
from isense_slurm.slurm.backend import JobId, filter_jobs
from isense_slurm.slurm.models import Job, Node, Partition, Reservation
from isense_slurm.slurm.parse_json import jobs_from_json, json_errors, nodes_from_json, slurm_release
from isense_slurm.slurm.parse_scontrol import partitions_from_scontrol
from isense_slurm.slurm.submit import Options

NODE_FILES = ("scontrol-node.json", "sinfo.json")  # per-node list first: exact on every version
JOB_FILE = "squeue.json"
PARTITION_FILE = "scontrol-partition.txt"


class FileBackend:
    """Reads DIR/{sinfo.json | scontrol-node.json}, DIR/squeue.json, DIR/scontrol-partition.txt."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UsageError(f"--from-json {folder}: not a folder")
        node_file = next((self.folder / f for f in NODE_FILES if (self.folder / f).is_file()), None)
        if node_file is None:
            raise UsageError(f"--from-json {folder}: neither {' nor '.join(NODE_FILES)} in it")
        self.node_file: Path = node_file
        if not (self.folder / JOB_FILE).is_file():
            raise UsageError(f"--from-json {folder}: no {JOB_FILE} in it (squeue --json --states=all > {JOB_FILE})")
        self._nodes: list[Node] | None = None
        self._jobs: list[Job] | None = None
        self._node_doc: dict[str, Any] | None = None

    def _load(self, path: Path) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads(path.read_bytes())
        except OSError as err:
            raise UsageError(f"{path}: cannot read ({err.strerror})") from None
        except ValueError as err:
            raise UsageError(f"{path}: not JSON ({err})") from None
        errors = json_errors(doc)
        if errors:
            raise UsageError(f"{path}: Slurm reported errors: {'; '.join(errors)}")
        return doc

    def version(self) -> str:
        if self._node_doc is None:
            self._node_doc = self._load(self.node_file)
        return slurm_release(self._node_doc) or "unknown"

    def nodes(self, *, partition: str | None = None, names: Iterable[str] | None = None) -> list[Node]:
        if self._nodes is None:
            if self._node_doc is None:
                self._node_doc = self._load(self.node_file)
            try:
                self._nodes = nodes_from_json(self._node_doc)
            except (KeyError, TypeError, ValueError) as err:
                raise UsageError(f"{self.node_file}: not a node list Slurm printed ({err})") from None
        wanted = set(names) if names is not None else None
        return [
            n
            for n in self._nodes
            if (partition is None or partition in n.partitions) and (wanted is None or n.name in wanted)
        ]

    def partitions(self) -> list[Partition]:
        path = self.folder / PARTITION_FILE
        if path.is_file():
            return partitions_from_scontrol(path.read_text())
        # Without scontrol's list: the partitions the nodes name, in the order first seen.
        members: dict[str, list[str]] = {}
        for node in self.nodes():
            for name in node.partitions:
                members.setdefault(name, []).append(node.name)
        return [Partition(name=name, nodes=tuple(nodes), total_nodes=len(nodes)) for name, nodes in members.items()]

    def jobs(
        self,
        *,
        user: str | None = None,
        partition: str | None = None,
        states: Iterable[str] | None = None,
        job_ids: Iterable[int] | None = None,
        name: str | None = None,
    ) -> list[Job]:
        if self._jobs is None:
            path = self.folder / JOB_FILE
            try:
                self._jobs = jobs_from_json(self._load(path))
            except (KeyError, TypeError, ValueError) as err:
                raise UsageError(f"{path}: not a job list Slurm printed ({err})") from None
        return filter_jobs(self._jobs, user=user, partition=partition, states=states, job_ids=job_ids, name=name)

    def job(self, job_id: JobId) -> Job | None:
        text = str(job_id)
        if not text.isdigit():
            return None
        return next((j for j in self.jobs() if j.job_id == int(text)), None)

    def reservations(self) -> list[Reservation]:
        return []  # not captured: the saved state has no reservations

    def config(self) -> dict[str, str]:
        self._refuse("read slurmctld's configuration")

    def sbatch_supports(self, option: str) -> bool:
        return False

    # --- actions: refused --------------------------------------------------------------

    def _refuse(self, what: str) -> NoReturn:
        raise SlurmError(f"cannot {what}: reading saved Slurm output from {self.folder} (read-only)")

    def submit(self, script: str, options: Options = None, *, as_user: str | None = None) -> int:
        self._refuse("submit a job")

    def cancel(self, job_id: JobId, *, signal: str | None = None) -> None:
        self._refuse("cancel a job")

    def signal_batch(self, job_id: JobId, signal: str = "TERM") -> None:
        self._refuse("signal a job")

    def requeue(self, job_id: JobId, *, hold: bool = False) -> None:
        self._refuse("requeue a job")

    def hold(self, job_id: JobId) -> None:
        self._refuse("hold a job")

    def release(self, job_id: JobId) -> None:
        self._refuse("release a job")

    def update_job(self, job_id: JobId, fields: Mapping[str, str]) -> None:
        self._refuse("update a job")
