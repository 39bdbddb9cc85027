"""A generated cluster for bench/status.py: Slurm 22.05 `sinfo --json` / `squeue --json`
documents of any size, shaped like the ones recorded on the dev cluster
(tests/fixtures/slurm/22.05), and a ledger with workers, traffic and reclaims.

Deterministic (seeded), so two runs time the same work.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass
from pathlib import Path

from isense_slurm.meter.ledger import Ledger
from isense_slurm.meter.rows import RequestRow
from isense_slurm.meter.writer import RequestWriter
from isense_slurm.slurm.hostlist import compact

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "slurm" / "22.05"
SERVICE = "isense"
LEND = "inference"
MODELS = ("llama-3.1-8b-instruct", "qwen2.5-72b-instruct")


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float


PRICES = {MODELS[0]: Price(0.10, 0.40, 0.05), MODELS[1]: Price(0.60, 1.20, 0.30)}


@dataclass(frozen=True)
class World:
    sinfo: dict
    squeue: dict
    workers: list[tuple[int, str, str, int]]  # (job id, node, model, gpus) of running worker jobs


def _templates() -> tuple[dict, dict, dict]:
    sinfo = json.loads((FIXTURES / "sinfo.json").read_text())
    squeue = json.loads((FIXTURES / "squeue.json").read_text())
    node = next(n for n in sinfo["nodes"] if n["state"] == "mixed")
    job = next(j for j in squeue["jobs"] if j["job_state"] == "RUNNING" and j.get("gres_detail"))
    return sinfo, job, node


class _Jobs:
    """squeue's jobs as they are made: each takes its GPUs from `free` (node -> indices)."""

    def __init__(self, template: dict, free: dict[str, list[int]], rng: random.Random, now: int):
        self.template, self.free, self.rng, self.now = template, free, rng, now
        self.jobs: list[dict] = []
        self.next_id = 1000

    def add(
        self, user: str, partition: str, state: str, hosts: list[str], per_node: int, name: str, comment: str = ""
    ) -> dict:
        rng, now, free = self.rng, self.now, self.free
        self.next_id += 1
        j = copy.deepcopy(self.template)
        details = []
        for host in hosts:
            taken, free[host] = free[host][:per_node], free[host][per_node:]
            details.append(f"gpu:{per_node}(IDX:{_ranges(taken)})")
        running = state == "RUNNING"
        j.update(
            job_id=self.next_id,
            name=name,
            user_name=user,
            user_id=1000 if user != SERVICE else 999,
            partition=partition,
            job_state=state,
            comment=comment,
            nodes=compact(hosts) if running else "",
            node_count=max(1, len(hosts)),
            batch_host=hosts[0] if running else "",
            gres_detail=details if running else [],
            tres_per_node=f"gres:gpu:{per_node}",
            submit_time=now - rng.randint(60, 86_400),
            start_time=now - rng.randint(1, 3600) if running else 0,
            end_time=now + 3600 if running else 0,
            time_limit=rng.choice([60, 240, 1440]),
            required_nodes="",
            cpus=per_node * max(1, len(hosts)),
            tres_alloc_str=f"cpu={per_node},node={len(hosts)},billing={per_node}",
        )
        j["job_resources"] = {
            "nodes": j["nodes"],
            "allocated_cores": 1,
            "allocated_hosts": len(hosts),
            "allocated_nodes": [],
        }
        j["standard_output"] = f"/scratch/{user}/slurm-%j.out"
        self.jobs.append(j)
        return j


def generate(nodes: int = 1000, gpus_per_node: int = 8, seed: int = 7, now: int = 1_795_000_000) -> World:
    """A busy cluster: multi-node and single-node training, lent workers, a queue."""
    rng = random.Random(seed)
    base_sinfo, job_template, node_template = _templates()
    names = [f"gpu{i:04d}" for i in range(1, nodes + 1)]
    free = {name: list(range(gpus_per_node)) for name in names}
    down = set(rng.sample(names, max(1, nodes // 100)))
    drained = set(rng.sample([n for n in names if n not in down], max(1, nodes // 50)))
    jobs = _Jobs(job_template, free, rng, now)
    workers: list[tuple[int, str, str, int]] = []
    job = jobs.add

    usable = [n for n in names if n not in down and n not in drained]
    # Multi-node training: 8-node jobs taking whole nodes over a fifth of the cluster.
    pool = usable[:]
    rng.shuffle(pool)
    for start in range(0, len(pool) // 5, 8):
        job("trainer", "train", "RUNNING", pool[start : start + 8], gpus_per_node, "train-multi")
    # Single-node training and lent workers on the rest.
    for host in pool[len(pool) // 5 :]:
        for _ in range(rng.randint(0, 3)):
            if len(free[host]) >= 2:
                job("trainer", "train", "RUNNING", [host], rng.choice([1, 2]), "train-one")
        if free[host] and rng.random() < 0.7:
            model = rng.choice(MODELS)
            size = 4 if model == MODELS[1] and len(free[host]) >= 4 else 1
            lent = job(SERVICE, LEND, "RUNNING", [host], size, "isense-worker", comment=f"isense:{model}")
            workers.append((lent["job_id"], host, model, size))
    for _ in range(nodes):  # the queue
        job("trainer", "train", "PENDING", [], rng.choice([1, 2, 4, 8]), "train-queued")
    for _ in range(nodes // 4):  # finished jobs Slurm still remembers (MinJobAge)
        j = job("trainer", "train", "COMPLETED", [], 1, "train-done")
        j["end_time"] = now - rng.randint(1, 300)

    node_docs = _node_docs(names, free, down, drained, node_template, gpus_per_node)
    sinfo = {"meta": base_sinfo["meta"], "errors": [], "nodes": node_docs}
    squeue = {"meta": base_sinfo["meta"], "errors": [], "jobs": jobs.jobs}
    return World(sinfo, squeue, workers)


def _node_docs(
    names: list[str], free: dict[str, list[int]], down: set[str], drained: set[str], template: dict, gpus_per_node: int
) -> list[dict]:
    """sinfo's nodes, their GPUs used as the jobs left them."""
    node_docs = []
    for name in names:
        n = copy.deepcopy(template)
        used = gpus_per_node - len(free[name])
        state = "down" if name in down else ("idle" if used == 0 else ("allocated" if not free[name] else "mixed"))
        n.update(
            name=name,
            hostname=name,
            address=name,
            gres=f"gpu:{gpus_per_node}",
            gres_used=f"gpu:{used}",
            state=state,
            state_flags=["DRAIN"] if name in drained else [],
            partitions=["train", LEND],
            cpus=64,
            alloc_cpus=used * 8,
            idle_cpus=64 - used * 8,
            reason="maintenance" if name in drained or name in down else "",
        )
        node_docs.append(n)
    return node_docs


def _ranges(indices: list[int]) -> str:
    out, run = [], []
    for i in indices:
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def fill_ledger(
    path: Path, world: World, *, now: float, requests_today: int, last_minute: int, day_start: float, seed: int = 11
) -> int:
    """Workers for every running worker job, requests spread over today (more in the last
    minute), and some reclaims. Returns the request rows committed: a caller whose bench
    times work over these rows counts any shortfall as errors."""
    rng = random.Random(seed)
    with Ledger.open(path) as ledger:
        for name in ("alice", "bob", "carol"):
            ledger.create_key(name)
        for job_id, node, model, gpus in world.workers:
            state = rng.choice(("serving", "serving", "serving", "lent", "draining"))
            ledger.worker_event(job_id, state="lent", node=node, gpus=gpus, model=model, at=now - 3600)
            if state != "lent":
                ledger.worker_event(job_id, state="serving", at=now - 3500)
            if state == "draining":
                ledger.worker_event(job_id, state="draining", at=now - 2)
        for i in range(200):
            submit = now - 86_400 + i * 400
            ledger.record_reclaim(
                f"9{i:04d}",
                node=rng.choice(world.workers)[1],
                worker_job_id="1",
                submit_time=submit,
                sigterm_time=submit + 0.3,
                gpus_free_time=submit + 1.0,
                start_time=submit + rng.uniform(0.6, 6.0),
            )
    serving = [(str(j), node, model) for j, node, model, _ in world.workers]
    futures = []
    with RequestWriter(path, prices=PRICES, operator_share=0.7, currency="USD", batch_max=4096) as writer:
        times = [rng.uniform(day_start, now - 60) for _ in range(requests_today - last_minute)]
        times += [now - 60 + 60 * i / max(1, last_minute) for i in range(last_minute)]
        for i, ts in enumerate(times):
            job_id, node, model = serving[i % len(serving)]
            futures.append(
                writer.submit(
                    RequestRow(
                        id=f"chatcmpl-{i:09d}",
                        ts=ts,
                        key_id=1 + i % 3,
                        model=model,
                        job_id=job_id,
                        node=node,
                        prompt_tokens=200 + i % 700,
                        completion_tokens=40 + i % 400,
                        cached_tokens=(i % 3) * 64,
                        status="ok" if i % 50 else "partial",
                        latency_ms=20.0,
                        streamed=bool(i % 2),
                    )
                )
            )
    # Closing the writer committed or failed every row: a future still pending is a row lost.
    return sum(1 for f in futures if f.done() and f.exception() is None)
