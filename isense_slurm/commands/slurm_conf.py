"""`isense slurm-conf`: the Slurm settings isense needs, for the site's config."""

NAME = "slurm-conf"
HELP = "print the slurm.conf / gres / plugstack / job_submit.lua / prolog.d / epilog.d snippets isense needs"
DESCRIPTION = """\
Print, for this config's pools and lend partition, what Slurm needs: partition-priority
preemption (PreemptType, PreemptMode, PriorityTier, GraceTime=0), KillWait fitted to
[slurm] drain_seconds, the node Prolog/Epilog, PrologFlags, the SPANK plugin's
plugstack line, the prolog.d/epilog.d links and, with [slurm] submit_wake, the
JobSubmitPlugins=lua line and job_submit.lua that wake the controller on each submit.
The pools' node list comes from the live cluster when Slurm answers. Nothing is written: review and merge by hand, then
check with `isense doctor`.

The text is for the Slurm release this host's Slurm reports, or --slurm-version's; what
differs between releases (RunInJob, --signal=R:, cgroups, concurrent job_submit,
OpenMetrics) is said where it matters. With neither, the header says which it assumes.
"""
EPILOG = "exit status: 0 printed, 2 usage or config error."

_VERSION_ARG = r"^\d{2}\.\d{2}(\.\d+)?$"


def add_arguments(parser) -> None:
    parser.add_argument(
        "--slurm-version",
        metavar="X.Y",
        help="write for this Slurm release (e.g. 24.11), not the one Slurm here reports",
    )


def _release_arg(text: str):
    import re

    from isense_slurm.admin.slurm_conf import OLDEST_RELEASE, parse_release
    from isense_slurm.errors import UsageError

    if not re.match(_VERSION_ARG, text.strip()):
        raise UsageError(f"--slurm-version {text!r}: write it as Slurm does, e.g. 24.11 or 24.11.5")
    release = parse_release(text)
    assert release is not None  # _VERSION_ARG admits only what parse_release reads
    if release[:2] < OLDEST_RELEASE:
        raise UsageError(f"--slurm-version {text}: isense supports Slurm 22.05 and later")
    return text.strip()


def run(args) -> int:
    from isense_slurm.admin.doctor import service_group
    from isense_slurm.admin.slurm_conf import Site, checkout_root, render
    from isense_slurm.config import load_config
    from isense_slurm.controller.observe import pool_nodes
    from isense_slurm.errors import SlurmError
    from isense_slurm.slurm import backend_for, compact

    wanted = _release_arg(args.slurm_version) if args.slurm_version is not None else None
    cfg = load_config(args.config)
    s = cfg.slurm
    slurm = backend_for(s, timeout=10)
    try:
        here = slurm.version()
    except SlurmError:
        here = ""  # no Slurm commands here: the text says which release it assumes
    if wanted:
        version, version_from = wanted, "--slurm-version" + (f"; Slurm here is {here}" if here else "")
    else:
        version, version_from = here, "as Slurm here reports it; for another: --slurm-version X.Y"
    nodes_text: str | None = None
    pool_partitions: tuple[str, ...] = ()
    try:
        nodes = slurm.nodes()
        known_partitions = {p for n in nodes for p in n.partitions}
        pool_partitions = tuple(p for p in s.pools if p in known_partitions)
        names = [n.name for n in pool_nodes(s.pools, nodes)]
        nodes_text = compact(names) if names else None
    except SlurmError:
        pass  # Slurm not reachable here: placeholders say what to fill in
    site = Site(
        lend_partition=s.lend_partition,
        service_account=s.service_account,
        service_group=service_group(s.service_account),
        pools=tuple(s.pools),
        pool_partitions=pool_partitions or tuple(p for p in s.pools if "[" not in p and "," not in p),
        pool_nodes=nodes_text,
        max_job_minutes=s.max_job_minutes,
        drain_seconds=s.drain_seconds,
        root=checkout_root(),
        submit_wake=s.submit_wake,
        slurm_version=version,
        version_from=version_from,
    )
    print(render(site, str(cfg.path)), end="")
    return 0
