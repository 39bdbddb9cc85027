"""A stand-in for a vLLM that passes /health and fails every completion.

What a vLLM whose engine faults on its first forward pass looks like from outside
(seen on a machine of this kind: bf16 on a CPU that advertises AMX but faults on it,
shared/notes/vllm-cpu.md): the API server answers /health 200, and each request gets
HTTP 500 "EngineCore encountered an issue". A real vLLM cannot be made to do this on
demand, so the worker's refusal to register such a vLLM is tested against this.

    faulty_vllm.py serve MODEL --port P [--host H] [any other vLLM flags]
"""

import argparse
import sys

from aiohttp import web


async def health(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def load(request: web.Request) -> web.Response:
    return web.json_response({"server_load": 0})


async def broken(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response(
        {
            "error": {
                "message": "EngineCore encountered an issue. See stack trace (above) for the root cause.",
                "type": "InternalServerError",
                "code": 500,
            }
        },
        status=500,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("command")
    ap.add_argument("model")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args, _ = ap.parse_known_args()
    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/load", load)
    app.router.add_post("/v1/completions", broken)
    app.router.add_post("/v1/chat/completions", broken)
    print(f"faulty vLLM stand-in on {args.host}:{args.port}", file=sys.stderr, flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
