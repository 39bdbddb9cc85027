"""`isense doctor`: check the live cluster and this host against what isense needs."""

NAME = "doctor"
HELP = "check Slurm, the hooks, the plugin, the secret and the ledger; say what to change"
DESCRIPTION = """\
Ask the live cluster (scontrol show config, partitions, nodes, sbatch --help) and this
host whether isense can lend and reclaim: preemption type and modes, the lend
partition's tier against the pools' partitions, GraceTime, KillWait against the drain
budget, Prolog/Epilog running the isense hooks, PrologFlags, the SPANK plugin, the
service account, the worker secret, the ledger, the job dir and the config file.
As the service account (runuser, when run as root): whether `isense worker` and the
configured vLLM start (`isense worker --help`; vLLM's interpreter finds the vllm package,
or `<vllm_executable> --version`). When `isense serve` runs on this host: the nodes it
holds back because their workers end before they serve, with the last failure.
One line per finding: OK, WARN or FAIL, and after -> what to change.
"""
EPILOG = "exit status: 0 no FAIL, 1 at least one FAIL, 2 usage or config error."


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    from isense_slurm.admin.doctor import check
    from isense_slurm.admin.doctor_gather import gather
    from isense_slurm.config import load_config
    from isense_slurm.slurm import backend_for

    cfg = load_config(args.config)
    findings = check(cfg, gather(cfg, backend_for(cfg.slurm, timeout=15)))
    for finding in findings:
        print(finding.line())
    failed = sum(f.level == "FAIL" for f in findings)
    warned = sum(f.level == "WARN" for f in findings)
    print(f"{len(findings)} checks: {failed} FAIL, {warned} WARN")
    return 1 if failed else 0
