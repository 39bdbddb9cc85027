"""What to submit: sbatch long options as a typed record or a plain mapping."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

_OPTION_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class SubmitOptions:
    """The sbatch options isense uses; anything else goes into `extra`.

    None leaves an option out. `time` and `time_min` are minutes (int) or a Slurm time
    string ("1:00:00"). `requeue`: True -> --requeue, False -> --no-requeue.
    """

    partition: str | None = None
    job_name: str | None = None
    gres: str | None = None  # "gpu:4"
    nodes: int | None = None
    nodelist: str | Sequence[str] | None = None  # -w
    exclude: str | Sequence[str] | None = None
    time: int | str | None = None
    time_min: int | str | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    output: str | None = None
    error: str | None = None
    chdir: str | None = None
    comment: str | None = None
    requeue: bool | None = None
    signal: str | None = None  # "B:TERM@30"
    export: str | None = None  # "NONE", "ALL,VAR=x"
    hold: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name == "requeue" and value is False:
                out["no-requeue"] = True
                continue
            out[f.name] = value
        out.update(self.extra)
        return out


Options = SubmitOptions | Mapping[str, Any] | None


def sbatch_args(options: Options) -> list[str]:
    """["--partition=train", "--gres=gpu:4", "--requeue", ...] from options.

    Keys are long option names (underscores become dashes); True gives a bare flag,
    False and None leave the option out; lists join with commas.
    """
    if options is None:
        return []
    mapping = options.as_mapping() if isinstance(options, SubmitOptions) else dict(options)
    args: list[str] = []
    for key, value in mapping.items():
        name = str(key).replace("_", "-")
        if not _OPTION_NAME.match(name):
            raise ValueError(f"not an sbatch long option name: {key!r}")
        if value is None or value is False:
            continue
        if value is True:
            args.append(f"--{name}")
            continue
        if isinstance(value, (list, tuple, set, frozenset)):
            value = ",".join(str(v) for v in value)
        text = str(value)
        if "\n" in text or "\0" in text:
            raise ValueError(f"sbatch option --{name} has a newline or NUL in its value")
        args.append(f"--{name}={text}")
    return args
