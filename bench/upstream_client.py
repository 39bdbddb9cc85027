#!/usr/bin/env python3
"""The gateway's upstream hop alone: CPU per POST of its own client to the workers
(gateway/worker_http.py) against aiohttp's ClientSession as the gateway had it, on the
same local keep-alive server, in the same run.

    .venv/bin/python bench/upstream_client.py [--requests 5000] [--rounds 3] [--stream]

The server is a small asyncio HTTP/1.1 server in a child process that answers every
POST with a fixed OpenAI-style body (Content-Length), or with --stream with six chunked
SSE events, as vLLM's uvicorn does. Each round sends --requests POSTs one after another
with each client and reads every answer whole; the figure is this process's CPU time
(user + system) per request, best of --rounds rounds. Failed requests are counted and
make the exit status 1. The last line is JSON.
"""

import argparse
import asyncio
import json
import multiprocessing
import socket
import sys
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))

from isense_slurm.gateway.worker_http import WorkerClient  # noqa: E402
from waiting import free_port, wait_for  # noqa: E402

BODY = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "a b c d"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16},
    }
).encode()
EVENTS = [b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"t%d"}}]}\n\n' % i for i in range(5)] + [
    b"data: [DONE]\n\n"
]
HEADERS = {"Authorization": "Bearer k", "Content-Type": "application/json", "X-Request-Id": "bench"}


def serve(port: int, stream: bool) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                sizes = [h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")]
                await reader.readexactly(int(sizes[0].split(b":")[1]))
                if stream:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                    )
                    for ev in EVENTS:
                        writer.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                    writer.write(b"0\r\n\r\n")
                else:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                        % (len(BODY), BODY)
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(main())


async def with_aiohttp(url: str, n: int) -> int:
    failed = 0
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
        auto_decompress=False,
    ) as session:
        for _ in range(n):
            try:
                async with await session.post(url + "/v1/chat/completions", data=b"{}", headers=HEADERS) as r:
                    while await r.content.readany():
                        pass
                    failed += r.status != 200
            except (aiohttp.ClientError, OSError):
                failed += 1
    return failed


async def with_worker_client(url: str, n: int) -> int:
    failed = 0
    client = WorkerClient()
    for _ in range(n):
        try:
            async with await client.post(url, "/v1/chat/completions", HEADERS, b"{}") as r:
                while await r.readany():
                    pass
                failed += r.status != 200
        except OSError:
            failed += 1
    await client.close()
    return failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000, help="POSTs per client per round (default 5000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best is kept (default 3)")
    parser.add_argument("--stream", action="store_true", help="answer with chunked SSE events")
    args = parser.parse_args()
    if args.requests < 1 or args.rounds < 1:
        parser.error("--requests and --rounds must be at least 1")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    port = free_port()
    server = multiprocessing.Process(target=serve, args=(port, args.stream), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{port}"

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    try:
        wait_for(listening, 30, "the local server", interval=0.05)
    except AssertionError as err:
        print(f"bench: {err}", file=sys.stderr)
        return 1
    best: dict[str, float] = {}
    failed = 0
    for _ in range(args.rounds):
        for name, run in (("aiohttp", with_aiohttp), ("worker_http", with_worker_client)):
            t0 = time.process_time()
            failed += asyncio.run(run(url, args.requests))
            per = (time.process_time() - t0) / args.requests * 1e6
            best[name] = min(best.get(name, per), per)
            print(f"bench: {name:12s} {per:7.1f} µs CPU per request", file=sys.stderr)
    server.terminate()
    summary = {
        "requests": args.requests,
        "rounds": args.rounds,
        "stream": args.stream,
        "errors": failed,
        "aiohttp_cpu_us_per_request": round(best["aiohttp"], 1),
        "worker_http_cpu_us_per_request": round(best["worker_http"], 1),
        "ratio": round(best["worker_http"] / best["aiohttp"], 3),
    }
    print(json.dumps(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
