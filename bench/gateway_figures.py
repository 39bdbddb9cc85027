"""bench/gateway.py's figures: added latency against direct, the table, the JSON summary."""

import argparse

from gateway_control import StandIn


def add_latency(results: list[dict]) -> None:
    """Added latency = the target's percentile minus direct's, same stream mode and concurrency."""
    direct = {(r["stream"], r["concurrency"]): r for r in results if r["target"] == "direct"}
    for r in results:
        base = direct[(r["stream"], r["concurrency"])]
        r["added_p50_ms"] = round(r["p50_ms"] - base["p50_ms"], 3)
        r["added_p99_ms"] = round(r["p99_ms"] - base["p99_ms"], 3)


def print_table(results: list[dict]) -> None:
    header = (
        f"{'TARGET':8} {'STREAM':6} {'C':>3} {'REQ/S':>8} {'P50MS':>8} {'P99MS':>8} "
        f"{'+P50MS':>8} {'+P99MS':>8} {'CPUMS/REQ':>9} {'ROWS/S':>8} {'ERR':>4}"
    )
    print(header)
    for r in results:
        print(
            f"{r['target']:8} {'yes' if r['stream'] else 'no':6} {r['concurrency']:>3} {r['rps']:>8.1f} "
            f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['added_p50_ms']:>8.2f} {r['added_p99_ms']:>8.2f} "
            f"{r.get('proxy_cpu_ms_per_request', float('nan')):>9.3f} "
            f"{r.get('ledger_rows_per_s', float('nan')):>8.1f} {r['errors']:>4}"
        )


def summarize(
    args: argparse.Namespace, results: list[dict], control: dict | None, stand_in: StandIn | None
) -> tuple[dict, int]:
    """The JSON summary (without its error count) and the number of failed requests."""
    summary = {
        "server": "isense serve" if args.serve else "isense gateway",
        "max_tokens": args.max_tokens,
        "concurrency": args.concurrency,
        "results": results,
    }
    errors = sum(r["errors"] for r in results)
    if control is not None:
        summary["control_plane"] = control
        summary["control_plane_p99_ms"] = control["p99_ms"]
        errors += control["errors"]
    summary["errors"] = errors
    summary["reregistered"] = stand_in.reregistered if stand_in else 0
    ll = {(r["stream"], r["concurrency"]): r for r in results if r["target"] == "litellm"}
    for target, name in (("gateway", "gateway"), ("gw+lim", "gateway_limits")):
        for r in (r for r in results if r["target"] == target):
            key = (r["stream"], r["concurrency"])
            tag = f"{'stream' if key[0] else 'plain'}_c{key[1]}"
            summary[f"{name}_added_p50_ms_{tag}"] = r["added_p50_ms"]
            if key in ll and ll[key]["rps"]:
                summary[f"{name}_vs_litellm_rps_{tag}"] = round(r["rps"] / ll[key]["rps"], 2)
    summary.pop("errors")
    return summary, errors
