"""`isense secrets init`: the worker secret that gateway, workers and hooks derive from."""

NAME = "secrets"
HELP = "create the worker secret ([secrets] dir/worker.key)"
DESCRIPTION = """\
init: create [secrets] dir/worker.key (64 random hex characters) unless it exists,
mode 0640, group of the service account, so worker jobs (run as the service account)
can read it and other users cannot. Safe to run again: an existing secret is kept.
Workers' and hooks' credentials derive from it; replacing it logs every worker out.
"""
EPILOG = "exit status: 0 created or already there, 1 cannot write it, 2 usage or config error."


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="secrets_action", metavar="ACTION")
    sub.add_parser("init", help="create the worker secret if missing (idempotent)")


def run(args) -> int:
    import os
    import pwd

    from isense_slurm.config import load_config
    from isense_slurm.errors import IsenseError, UsageError
    from isense_slurm.secrets import create_secret, load_secret, secret_path, service_gid

    if getattr(args, "secrets_action", None) != "init":
        raise UsageError("secrets: say what to do: `isense secrets init`")
    cfg = load_config(args.config)
    account = cfg.slurm.service_account
    path = secret_path(cfg.secrets.dir)
    existed = path.exists()
    gid = service_gid(account)
    try:
        create_secret(cfg.secrets.dir, gid)
    except OSError as err:
        raise IsenseError(f"{path}: cannot create the worker secret ({err.strerror})") from None
    load_secret(cfg.secrets.dir)  # readable and long enough, or a clear error
    if existed:
        print(f"{path}: exists (kept)")
        return 0
    print(f"{path}: created")
    if gid is None and pwd.getpwuid(os.geteuid()).pw_name != account:
        print(
            f"warning: not root, so {path} is not in {account}'s group: worker jobs cannot read it;"
            f" run `isense secrets init` as root (after removing it)"
        )
    return 0
