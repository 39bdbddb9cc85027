"""The workers' control protocol, and the registry view for the controller and reports.

POST /internal/workers/register   {"job_id","node","gpus","model","url"[,"start"]} -> 200 {"ok": true}
POST /internal/workers/heartbeat  {"job_id"} -> 200; 404 unknown (the worker registers again)
POST /internal/workers/deregister {"job_id","reason"} -> 200; no new request goes to it
Each with `Authorization: Bearer worker_token(secret, job_id)`: only a process that can
read the gateway's secret (the service account) can speak for a job.
GET /internal/workers: registry state and per-model counters, from localhost only.
GET /health: 200 {"status": "ok", ...} while the process serves (no key needed; says
nothing secret): for load balancers and `isense doctor`.
"""

from collections.abc import Callable, Collection
from dataclasses import dataclass

from aiohttp import web

from isense_slurm.contracts.control import REQUIRED_FIELDS, ControlAction, check_start
from isense_slurm.gateway.loop_watch import LoopWatch
from isense_slurm.gateway.registry import Registry
from isense_slurm.http.access import bearer, is_local
from isense_slurm.http.body import Invalid, parse
from isense_slurm.http.errors import error_response
from isense_slurm.secrets import check_worker_token, vllm_api_key


@dataclass(frozen=True, slots=True)
class WorkerControl:
    """What the control routes need: the secret tokens derive from, the configured
    models, the registry, and the loop watch that /health reports."""

    secret: bytes
    models: Collection[str]
    registry: Registry
    loop_watch: LoopWatch
    on_start: Callable[[str, dict[str, float]], object] | None = None  # a worker's start phases


async def _worker_request(ctl: WorkerControl, request: web.Request, required: tuple[str, ...]):
    """(payload, None) for an authentic request, else (None, error response)."""
    try:
        payload = parse(await request.read())
    except Invalid as err:
        return None, err.response()
    except (web.HTTPRequestEntityTooLarge, web.RequestPayloadError):
        return None, error_response(400, "the body could not be read")
    for name in required:
        value = payload.get(name)
        if not isinstance(value, str) or not value or not value.isprintable() or not value.isascii():
            return None, error_response(400, f"'{name}' must be a non-empty string of printable ASCII", param=name)
    if not check_worker_token(ctl.secret, payload["job_id"], bearer(request.headers.get("Authorization"))):
        return None, error_response(401, f"bad worker token for job {payload['job_id']}", code="invalid_worker_token")
    return payload, None


def _ok(**extra) -> web.Response:
    return web.json_response({"ok": True, **extra})


async def register(ctl: WorkerControl, request: web.Request) -> web.Response:
    payload, refusal = await _worker_request(ctl, request, REQUIRED_FIELDS[ControlAction.REGISTER])
    if refusal:
        return refusal
    model = payload["model"]
    if model not in ctl.models:
        return error_response(
            404, f"model '{model}' is not configured on this gateway", param="model", code="model_not_found"
        )
    url = payload["url"]
    if not url.startswith(("http://", "https://")):
        return error_response(400, "'url' must be an http(s) URL", param="url")
    start = check_start(payload["start"]) if "start" in payload else None
    if isinstance(start, str):
        return error_response(400, start, param="start")
    job_id = payload["job_id"]
    ctl.registry.register(
        job_id,
        node=str(payload.get("node") or ""),
        gpus=payload.get("gpus"),
        model=model,
        url=url,
        auth_header="Bearer " + vllm_api_key(ctl.secret, job_id),
    )
    if start and ctl.on_start is not None:
        ctl.on_start(job_id, start)  # after the 'serving' event: the ledger's run exists
    return _ok()


async def heartbeat(ctl: WorkerControl, request: web.Request) -> web.Response:
    payload, refusal = await _worker_request(ctl, request, REQUIRED_FIELDS[ControlAction.HEARTBEAT])
    if refusal:
        return refusal
    if not ctl.registry.heartbeat(payload["job_id"]):
        return error_response(404, f"unknown worker {payload['job_id']}; register again", code="unknown_worker")
    return _ok()


async def deregister(ctl: WorkerControl, request: web.Request) -> web.Response:
    payload, refusal = await _worker_request(ctl, request, REQUIRED_FIELDS[ControlAction.DEREGISTER])
    if refusal:
        return refusal
    reason = payload.get("reason")
    known = ctl.registry.deregister(payload["job_id"], reason if isinstance(reason, str) else None)
    return _ok(known=known)


async def workers(ctl: WorkerControl, request: web.Request) -> web.Response:
    if request.method != "GET":
        return error_response(405, "use GET", headers={"Allow": "GET"})
    if not is_local(request.remote):
        return error_response(403, "the registry view is served to localhost only")
    return web.json_response(ctl.registry.snapshot())


async def health(ctl: WorkerControl, request: web.Request) -> web.Response:
    if request.method not in ("GET", "HEAD"):
        return error_response(405, "use GET", headers={"Allow": "GET"})
    live = {name: ctl.registry.live_count(name) for name in ctl.models}
    return web.json_response(
        {
            "status": "ok",
            "live_workers": live,
            "loop_max_lag_ms": round(ctl.loop_watch.max_lag * 1000, 1),
        }
    )
