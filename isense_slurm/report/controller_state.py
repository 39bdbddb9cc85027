"""What the running `isense serve` on this host says about its controller: one
GET /internal/controller (served to localhost only) at [gateway] listen. Read-only, stdlib
only, short timeout: `isense status` and `isense doctor` work the same without a daemon.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime

from isense_slurm.report.status_model import HeldBack

TIMEOUT_SECONDS = 2.0
PATH = "/internal/controller"


def controller_url(cfg) -> str:
    """The daemon's controller view on this host: a wildcard listen address is reached on loopback."""
    host = cfg.gateway.listen_host
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{cfg.gateway.listen_port}{PATH}"


def read_controller(cfg, timeout: float = TIMEOUT_SECONDS) -> tuple[dict | None, str]:
    """(the controller's state, "") or (None, why it could not be read)."""
    url = controller_url(cfg)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            doc = json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return None, f"{url} answered HTTP {err.code}"
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        return None, f"no isense serve answers at {url} ({reason})"
    if not isinstance(doc, dict):
        return None, f"{url} did not answer with a JSON object"
    return doc, ""


def held_back(state: dict | None) -> list[HeldBack]:
    """The (node, model) pairs the controller holds back, from its state."""
    out = []
    for item in (state or {}).get("held_back") or []:
        try:
            out.append(
                HeldBack(
                    node=str(item["node"]),
                    model=str(item["model"]),
                    failures=int(item["failures"]),
                    state=str(item.get("state", "")),
                    until=datetime.fromtimestamp(float(item["until"]), UTC),
                    last_job_id=str(item.get("last_job_id", "")),
                    last_reason=str(item.get("last_reason", "")),
                    text=str(item.get("text", "")),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue  # an older or newer daemon: show what can be read
    return out
