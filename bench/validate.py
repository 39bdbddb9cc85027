"""Time the gateway's body checks (gateway/validate.py) and its limit check
(gateway/gate.py) per request (figures, not a test).

For a few ordinary bodies: the check alone (validate.check on the parsed dict), and
what the gateway does with the client's bytes (validate.request_body: decode, parse,
check) beside the bare json.loads the gateway did before, so the added cost is read
from the same run.

    .venv/bin/python bench/validate.py [--runs 20000] [--repeat 5]

The limit check: Gate.admit + release for a key without limits, with its own limits
(rpm, tpm, concurrency, a day budget), and with those plus a group's; and Gate.on_row
(what booking a row adds). Limits are set high so nothing is refused; a refusal is an
error (exit status 1).

Last line of output: JSON with the figures (microseconds per body or check, best of
--repeat).
"""

import argparse
import json
import sys
import timeit

from isense_slurm.config import Price
from isense_slurm.gateway import validate
from isense_slurm.gateway.gate import Gate, Refusal
from isense_slurm.meter.limits import LimitBook, Limits
from isense_slurm.meter.rows import RequestRow

MESSAGES = [
    {"role": "system", "content": "You are brief."},
    {"role": "user", "content": "Say something about the sea."},
]
BODIES = {
    "chat": (True, {"model": "tiny-llama", "messages": MESSAGES, "max_tokens": 64, "temperature": 0.7}),
    "chat_stream": (
        True,
        {
            "model": "tiny-llama",
            "messages": MESSAGES,
            "max_tokens": 64,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ),
    "chat_20_turns": (
        True,
        {
            "model": "tiny-llama",
            "max_tokens": 64,
            "messages": [{"role": ("user", "assistant")[i % 2], "content": "x " * 40} for i in range(20)],
        },
    ),
    "completion": (False, {"model": "tiny-llama", "prompt": "The sea is", "max_tokens": 16, "ignore_eos": True}),
    "completion_1k_token_ids": (False, {"model": "tiny-llama", "prompt": list(range(1000)), "max_tokens": 16}),
}


def per_call_us(fn, runs: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=runs, repeat=repeat)) / runs * 1e6


HIGH = Limits(rpm=10**9, tpm=10**12, concurrent=10**6, budget_day_nanos=10**18)


def limit_checks(runs: int, repeat: int) -> tuple[dict, int]:
    """Microseconds per admit+release (and per on_row); the number of refusals (errors)."""
    book = LimitBook(1, {3: "acme"}, {"key:2": HIGH, "key:3": HIGH, "group:acme": HIGH})
    gate = Gate({"tiny-llama": Price(input_per_mtok=0.1, output_per_mtok=0.4, cached_input_per_mtok=0.05)})
    gate.install(book)
    refused = 0

    def check(key_id: int) -> None:
        nonlocal refused
        held = gate.admit(key_id)
        if isinstance(held, Refusal):
            refused += 1
        else:
            gate.release(held)

    figures = {}
    for name, key_id in (("no_limits", 1), ("key_limits", 2), ("key_and_group_limits", 3)):
        figures[name] = round(per_call_us(lambda key_id=key_id: check(key_id), runs, repeat), 2)
    row = RequestRow("r", 0.0, 3, "tiny-llama", "1", "n1", 30, 64, 0, "ok", 1.0, False)
    figures["on_row_key_and_group"] = round(per_call_us(lambda: gate.on_row(row), runs, repeat), 2)
    return figures, refused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    figures = {}
    print(f"{'BODY':<26}{'BYTES':>7}{'CHECK us':>10}{'LOADS us':>10}{'READ+CHECK us':>15}{'ADDED us':>10}")
    for name, (chat, body) in BODIES.items():
        raw = json.dumps(body).encode()
        check = per_call_us(lambda body=body, chat=chat: validate.check(body, chat=chat), args.runs, args.repeat)
        loads = per_call_us(lambda raw=raw: json.loads(raw), args.runs, args.repeat)
        full = per_call_us(lambda raw=raw, chat=chat: validate.request_body(raw, chat=chat), args.runs, args.repeat)
        figures[name] = {
            "bytes": len(raw),
            "check_us": round(check, 2),
            "json_loads_us": round(loads, 2),
            "request_body_us": round(full, 2),
            "added_us": round(full - loads, 2),
        }
        print(f"{name:<26}{len(raw):>7}{check:>10.2f}{loads:>10.2f}{full:>15.2f}{full - loads:>10.2f}")
    limits, refused = limit_checks(args.runs, args.repeat)
    print(f"\n{'LIMIT CHECK':<26}{'us':>7}")
    for name, value in limits.items():
        print(f"{name:<26}{value:>7.2f}")
    figures["limit_check_us"] = limits
    figures["errors"] = refused
    print(json.dumps(figures))
    if refused:
        print(f"error: {refused} checks refused a request under limits set high", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
