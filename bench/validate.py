"""Time the gateway's body checks (gateway/validate.py) per request (a figure, not a test).

For a few ordinary bodies: the check alone (validate.check on the parsed dict), and
what the gateway does with the client's bytes (validate.request_body: decode, parse,
check) beside the bare json.loads the gateway did before, so the added cost is read
from the same run.

    .venv/bin/python bench/validate.py [--runs 20000] [--repeat 5]

Last line of output: JSON with the figures (microseconds per body, best of --repeat).
"""

import argparse
import json
import timeit

from isense_slurm.gateway import validate

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
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
