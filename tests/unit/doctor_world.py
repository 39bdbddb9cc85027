"""A Slurm site that passes every `isense doctor` check: the facts the doctor tests start
from and change one thing of."""

from isense_slurm.admin.doctor import Facts
from isense_slurm.slurm import Node, Partition


def healthy() -> Facts:
    nodes = [Node(f"n{i}", "IDLE", gpus_total=4, partitions=("train", "inference")) for i in (1, 2)]
    return Facts(
        version="22.05.8",
        config={
            "PreemptType": "preempt/partition_prio",
            "KillWait": "5 sec",
            "Prolog": "/etc/slurm/prolog.d/*",
            "Epilog": "/etc/slurm/epilog.d/*",
            "PrologFlags": "Alloc",
            "SchedulerType": "sched/backfill",
            "JobSubmitPlugins": "lua",
        },
        partitions=[
            Partition("train", ("n1", "n2"), priority_tier=10),
            Partition("inference", ("n1", "n2"), priority_tier=1, preempt_mode="REQUEUE"),
        ],
        nodes=nodes,
        plugin=True,
        prolog_files=["/opt/isense/etc-slurm/prolog.d/isense-prolog"],
        epilog_files=["/opt/isense/etc-slurm/epilog.d/isense-epilog"],
        account=(1002, 1002),
        secret_mode=(0o640, 1002),
    )
