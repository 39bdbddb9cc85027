"""Entry point of the node hooks: `main("prolog")` / `main("epilog")`.

Whatever happens (no config, daemon down, a bug) it writes one line to the hook log
and returns 0: a non-zero prolog/epilog drains the node and requeues the user's job.
Events go to {gateway.advertise_url}/internal/events with a per-node HMAC token
(secrets.hook_token), under one 0.5 s deadline; what cannot be sent waits in the
spool and goes first with the next hook run's events.

Settings from the environment (the wrapper scripts may load them from
/etc/isense/hooks.env): ISENSE_CONFIG, ISENSE_HOOK_LOG, ISENSE_HOOK_SPOOL (a folder),
ISENSE_HOOK_SPOOL_MAX (events kept).

The package's own modules are imported inside the functions, within their try blocks:
a broken install must still end in one log line and exit 0, and a hook run loads only
what it uses (slurmd waits for the prolog on every job).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping

DEFAULT_LOG = "/var/log/isense/hooks.log"
SEND_TIMEOUT_SECONDS = 0.5
EVENTS_PATH = "/internal/events"


def _one_line(value: object, limit: int = 500) -> str:
    """str(value) (text or an exception) on one line, cut to `limit` characters."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_log(path: str, line: str) -> None:
    """Append one line (a single write: lines of concurrent hooks never interleave)."""
    try:
        os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except OSError:
        try:
            sys.stderr.write(line + "\n")  # slurmd keeps it in its own log
        except Exception:  # noqa: BLE001 - nowhere left to log to; the hook still exits 0
            pass


def deliver(
    events: list[dict],
    spool,
    url: str | None,
    token: str | None,
    why_not: str = "",
    timeout_s: float = SEND_TIMEOUT_SECONDS,
) -> str:
    """Send the spool's events and then `events` in one POST; keep them on failure."""
    from isense_slurm.hooks.send import SendError, post_json

    pending = spool.take()
    batch = pending + events
    if not batch:
        return "nothing to send"
    note = f" ({len(pending)} from the spool)" if pending else ""

    def keep(reason: str) -> str:
        dropped = spool.put(batch)
        lost = f", {dropped} oldest dropped" if dropped else ""
        return f"spooled {len(batch)} event(s){lost}: {reason}"

    if not url or not token:
        return keep(why_not or "nowhere to send")
    t0 = time.monotonic()
    try:
        status, text = post_json(url + EVENTS_PATH, token, {"events": batch}, timeout_s)
    except SendError as err:
        return keep(str(err))
    if 200 <= status < 300:
        return f"sent {len(batch)} event(s){note} in {(time.monotonic() - t0) * 1000:.0f} ms"
    if status == 400:
        # The daemon refuses the batch as malformed: retrying cannot help. Spooled events
        # written by an older isense may be the bad ones: try this run's alone once.
        if pending and events:
            left = timeout_s - (time.monotonic() - t0)
            try:
                status2, _ = post_json(url + EVENTS_PATH, token, {"events": events}, max(left, 0.05))
            except SendError as err:
                spool.put(events)
                return (
                    f"dropped {len(pending)} spooled event(s) refused ({_one_line(text, 200)}); "
                    f"spooled {len(events)}: {err}"
                )
            if 200 <= status2 < 300:
                return f"dropped {len(pending)} spooled event(s) refused ({_one_line(text, 200)}); sent {len(events)}"
        return f"dropped {len(batch)} event(s) refused by the daemon: {_one_line(text, 200)}"
    return keep(f"HTTP {status} {_one_line(text, 120)}")


def _run(kind: str, env: Mapping[str, str], started: float) -> str:
    from isense_slurm.hooks import epilog, prolog
    from isense_slurm.hooks.jobenv import JobFacts
    from isense_slurm.hooks.spool import DEFAULT_DIR, DEFAULT_MAX_LINES, Spool

    facts = JobFacts.from_env(env)
    head = (
        f"{kind} job={facts.job_id or '-'} node={facts.node} user={facts.user or '-'} "
        f"partition={facts.partition or '-'} gpus={','.join(map(str, facts.gpus)) or '-'}"
    )
    parts = []
    cfg = None
    try:
        from isense_slurm.config import load_config

        cfg = load_config(env.get("ISENSE_CONFIG") or None)
    except Exception as err:  # noqa: BLE001 - ConfigError, or anything odd in the file
        parts.append(f"config: {_one_line(err, 300)}")

    try:
        hook = prolog if kind == "prolog" else epilog
        events, note = hook.run(facts, cfg, time.time if kind == "prolog" else _epilog_clock(env))
        parts.append(note)
    except Exception as err:  # noqa: BLE001 - a hook error is logged, never fails the user's job
        events = []
        parts.append(f"{kind} failed: {type(err).__name__}: {_one_line(err, 300)}")

    url = token = None
    why_not = "no config"
    if cfg is not None:
        try:
            from isense_slurm.secrets import hook_token, load_secret

            token = hook_token(load_secret(cfg.secrets.dir), facts.node)
            url = cfg.gateway.advertise_url.rstrip("/")
        except Exception as err:  # noqa: BLE001 - no report this time; the job goes on
            why_not = _one_line(err, 200)
    try:
        max_lines = int(env.get("ISENSE_HOOK_SPOOL_MAX") or DEFAULT_MAX_LINES)
    except ValueError:
        max_lines = DEFAULT_MAX_LINES
    spool = Spool(env.get("ISENSE_HOOK_SPOOL") or DEFAULT_DIR, facts.node, max_lines)
    try:
        parts.append(deliver(events, spool, url, token, why_not))
    except Exception as err:  # noqa: BLE001 - spool unwritable, ...
        parts.append(f"events lost: {type(err).__name__}: {_one_line(err, 200)}")
    return f"{head} | " + " | ".join(p for p in parts if p)


def _epilog_clock(env: Mapping[str, str]):
    """The epilog's event time: when slurmd ran it (ISENSE_HOOK_STARTED, set by the wrapper
    before it detached), not when the detached Python got the CPU."""
    try:
        started = float(env.get("ISENSE_HOOK_STARTED") or "")
    except ValueError:
        return time.time
    return lambda: started if abs(time.time() - started) < 60 else time.time()


class KilledByTimeout(Exception):
    """The wrapper's `timeout` sent SIGTERM: log what we know, then go."""


def _on_sigterm(signum, frame):
    raise KilledByTimeout("stopped by SIGTERM (the wrapper's timeout)")


def main(kind: str, env: Mapping[str, str] | None = None) -> int:
    started = time.monotonic()
    env = os.environ if env is None else env
    try:
        import signal

        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not the main thread (tests)
        pass
    log_path = env.get("ISENSE_HOOK_LOG") or DEFAULT_LOG
    try:
        if kind not in ("prolog", "epilog"):
            line = f"{kind}: unknown hook kind (use prolog or epilog)"
        else:
            line = _run(kind, env, started)
    except BaseException as err:  # noqa: BLE001 - even KeyboardInterrupt/SystemExit: exit 0
        line = f"{kind} failed: {type(err).__name__}: {_one_line(err, 300)}"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    write_log(log_path, f"{stamp}Z {line} | {(time.monotonic() - started) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":  # python -m isense_slurm.hooks.run prolog|epilog
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ""))
