"""`isense worker`: the payload of a lent Slurm job (vLLM + gateway registration)."""

import os

NAME = "worker"
HELP = "run one inference worker: vLLM for a model, registered with the gateway"
DESCRIPTION = """\
Start vLLM's OpenAI-compatible server for MODEL on this job's GPUs and a free port,
wait until it is healthy, register it with the gateway and heartbeat. On SIGTERM
(Slurm preemption or time limit) or SIGINT: deregister, let in-flight requests finish
within [slurm] drain_seconds, stop vLLM's whole process group, exit 0.

The controller's batch script runs it as `exec isense worker --model NAME`. It also
runs outside Slurm for development, with a made-up job id.
"""
EPILOG = """\
environment: ISENSE_MODEL (default model), SLURM_JOB_ID, SLURMD_NODENAME,
SLURM_JOB_GPUS / CUDA_VISIBLE_DEVICES (recorded; vLLM inherits CUDA_VISIBLE_DEVICES).
signals: SIGTERM, SIGINT or SIGUSR1 start the drain (`sbatch --signal=B:USR1@N`
reaches the worker alone, before Slurm's job-wide SIGTERM).
exit status: 0 stopped by a signal, 2 usage or config error, 3 vLLM failed to start
or died (its log's tail is printed), 4 the gateway refused the registration.
"""


def add_arguments(parser) -> None:
    parser.add_argument("--model", metavar="NAME", help="model from the config (default: $ISENSE_MODEL)")
    parser.add_argument("--port", type=int, metavar="N", help="vLLM's port (default: a free one)")
    parser.add_argument("--job-id", metavar="ID", help="job id (default: $SLURM_JOB_ID, else local-HOST-PID)")
    parser.add_argument("--gateway", metavar="URL", help="gateway to register with (default: [gateway] advertise_url)")


def run(args) -> int:
    from isense_slurm.config import load_config
    from isense_slurm.errors import UsageError
    from isense_slurm.worker.main import run_worker, setup_logging
    from isense_slurm.worker.plan import plan_worker

    model = args.model or os.environ.get("ISENSE_MODEL")
    if not model:
        raise UsageError("--model: not given and $ISENSE_MODEL is not set")
    if args.port is not None and not 0 < args.port < 65536:
        raise UsageError(f"--port: {args.port} is not a TCP port (1-65535)")
    if args.gateway is not None and not args.gateway.startswith(("http://", "https://")):
        raise UsageError(f"--gateway: '{args.gateway}' is not an http(s):// URL")
    cfg = load_config(args.config)
    setup_logging()
    return run_worker(plan_worker(cfg, model, job_id=args.job_id, port=args.port, gateway_url=args.gateway))
