"""The gateway's client to its workers (gateway/worker_http.py), against real sockets:
a scripted raw HTTP server on localhost plays the worker, so each test decides exactly
what the worker sends and when it closes."""

import asyncio

import pytest

from isense_slurm.gateway.worker_http import HIGH_WATER, WorkerClient, WorkerConnectionError, request_head

OK_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"


class Worker:
    """A raw HTTP/1.1 server: `answer(request_bytes, nth request on its connection) ->
    list of (bytes, close_after)`."""

    def __init__(self, answer):
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.closed_by_client = asyncio.Event()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.connections += 1
        nth = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(
                    next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1]
                )
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                nth += 1
                for data, close in await self.answer(head + body, nth):
                    if data:
                        writer.write(data)
                        await writer.drain()
                    if close:
                        writer.close()
                        return
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client.set()
            writer.close()


def fixed(body: bytes, *, close=False):
    async def answer(_request, _nth):
        return [(OK_HEAD + b"content-length: %d\r\n\r\n" % len(body) + body, close)]

    return answer


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_a_content_length_answer_is_read_whole_and_the_connection_reused():
    async def main():
        async with Worker(fixed(b'{"ok": true}')) as worker:
            client = WorkerClient()
            for _ in range(3):
                async with await client.post(worker.url, "/v1/chat/completions", {"X-Request-Id": "r1"}, b"{}") as r:
                    assert r.status == 200
                    assert await r.read() == b'{"ok": true}'
            await client.close()
            return worker

    worker = run(main())
    assert worker.connections == 1
    assert len(worker.requests) == 3
    assert worker.requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nX-Request-Id: r1\r\n" in worker.requests[0]
    assert worker.requests[0].endswith(b"Content-Length: 2\r\n\r\n{}")


def test_a_base_url_path_prefixes_the_route():
    async def main():
        async with Worker(fixed(b"{}")) as worker:
            client = WorkerClient()
            async with await client.post(worker.url + "/prefix/", "/v1/completions", {}, b"{}") as r:
                await r.read()
            await client.close()
            return worker.requests[0]

    assert run(main()).startswith(b"POST /prefix/v1/completions HTTP/1.1\r\n")


def test_a_chunked_stream_arrives_piece_by_piece():
    go_on = None

    async def answer(_request, _nth):
        await go_on.wait()
        return [
            (OK_HEAD + b"transfer-encoding: chunked\r\n\r\n" + b"6\r\ndata: \r\n", False),
            (b"3\r\nabc\r\n", False),
            (b"0\r\n\r\n", False),
        ]

    async def main():
        nonlocal go_on
        go_on = asyncio.Event()
        async with Worker(answer) as worker:
            client = WorkerClient()
            go_on.set()
            async with await client.post(worker.url, "/v1/completions", {}, b"{}") as r:
                pieces = []
                while piece := await r.readany():
                    pieces.append(piece)
            assert client.idle_connections() == 1  # a finished answer: back to the pool
            await client.close()
            return pieces

    pieces = run(main())
    assert b"".join(pieces) == b"data: abc"


def test_a_body_ended_by_the_close_is_whole():
    async def answer(_request, _nth):
        return [(OK_HEAD + b"connection: close\r\n\r\nall of it", True)]

    async def main():
        async with Worker(answer) as worker:
            client = WorkerClient()
            async with await client.post(worker.url, "/v1/completions", {}, b"{}") as r:
                body = await r.read()
            assert client.idle_connections() == 0
            await client.close()
            return body

    assert run(main()) == b"all of it"


def test_an_answer_cut_mid_body_raises_after_what_came():
    async def answer(_request, _nth):
        return [(OK_HEAD + b"content-length: 100\r\n\r\nonly this", True)]

    async def main():
        async with Worker(answer) as worker:
            client = WorkerClient()
            async with await client.post(worker.url, "/v1/completions", {}, b"{}") as r:
                assert await r.readany() == b"only this"
                with pytest.raises(WorkerConnectionError, match="before its answer ended"):
                    await r.readany()
            await client.close()

    run(main())


def test_a_pooled_connection_the_worker_closed_is_retried_on_a_fresh_one():
    async def answer(_request, nth):
        if nth > 1:  # the worker closed it meanwhile (uvicorn's idle close racing our reuse)
            return [(b"", True)]
        return [(OK_HEAD + b"content-length: 2\r\n\r\n{}", False)]

    async def main():
        async with Worker(answer) as worker:
            client = WorkerClient()
            for _ in range(3):
                async with await client.post(worker.url, "/v1/completions", {}, b"{}") as r:
                    assert await r.read() == b"{}"
            await client.close()
            return worker

    worker = run(main())
    assert worker.connections == 3  # each reuse failed unanswered and went to a fresh one
    assert len(worker.requests) == 5


def test_a_fresh_connection_closed_unanswered_is_not_retried():
    async def answer(_request, _nth):
        return [(b"", True)]

    async def main():
        async with Worker(answer) as worker:
            client = WorkerClient()
            with pytest.raises(WorkerConnectionError, match="before its answer ended"):
                await client.post(worker.url, "/v1/completions", {}, b"{}")
            await client.close()
            return worker

    assert len(run(main()).requests) == 1


def test_an_idle_connection_is_closed_after_the_keepalive():
    async def main():
        async with Worker(fixed(b"{}")) as worker:
            client = WorkerClient(keepalive_s=0.1)
            async with await client.post(worker.url, "/v1/completions", {}, b"{}") as r:
                await r.read()
            assert client.idle_connections() == 1
            await asyncio.wait_for(worker.closed_by_client.wait(), 30)
            assert client.idle_connections() == 0
            await client.close()

    run(main())


def test_leaving_an_unfinished_answer_closes_its_connection():
    async def answer(_request, _nth):
        return [(OK_HEAD + b"transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n", False)]

    async def main():
        async with Worker(answer) as worker:
            client = WorkerClient()
            async with await client.post(worker.url, "/v1/completions", {}, b"{}") as r:
                assert await r.readany() == b"abc"
            await asyncio.wait_for(worker.closed_by_client.wait(), 30)  # vLLM would abort it
            assert client.idle_connections() == 0
            await client.close()

    run(main())


def test_a_refused_connection_is_an_oserror():
    async def main():
        async with Worker(fixed(b"{}")) as worker:
            url = worker.url
        client = WorkerClient()
        with pytest.raises(OSError):
            await client.post(url, "/v1/completions", {}, b"{}")
        await client.close()

    run(main())


def test_bytes_that_are_not_http_fail_the_request():
    async def answer(_request, _nth):
        return [(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", False)]

    async def main():
        async with Worker(answer) as worker:
            client = WorkerClient()
            with pytest.raises(WorkerConnectionError, match="not HTTP"):
                await client.post(worker.url, "/v1/completions", {}, b"{}")
            assert client.idle_connections() == 0
            await client.close()

    run(main())


def test_a_slow_reader_still_gets_every_byte_of_a_large_answer():
    body = bytes(range(256)) * (4 * HIGH_WATER // 256)

    async def main():
        async with Worker(fixed(body)) as worker:
            client = WorkerClient()
            async with await client.post(worker.url, "/v1/completions", {}, b"{}") as r:
                got = []
                while piece := await r.readany():
                    got.append(piece)
                    await asyncio.sleep(0.001)
            await client.close()
            return b"".join(got)

    assert run(main()) == body


def test_header_values_cannot_split_the_request():
    with pytest.raises(WorkerConnectionError, match="X-Request-Id"):
        request_head("/v1/completions", "h:1", {"X-Request-Id": "a\r\nEvil: 1"}, 2)
    with pytest.raises(WorkerConnectionError, match="cannot be sent"):
        request_head("/v1/completions", "h:1", {"Authorization": "Bearer \u2603"}, 2)


@pytest.mark.parametrize("url", ["ftp://h:1", "http://", "http://h:99999"])
def test_a_worker_url_that_is_not_http_is_refused_clearly(url):
    async def main():
        client = WorkerClient()
        with pytest.raises(WorkerConnectionError, match="url"):
            await client.post(url, "/v1/completions", {}, b"{}")

    run(main())
