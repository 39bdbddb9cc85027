"""A TCP relay in front of a real vLLM that breaks its answers on purpose.

The gateway must continue a stream however the upstream breaks. Killing real processes
at the right instant depends on timing; this relay breaks a response at an exact
place instead: after the n-th SSE event of each response it forwards half of the
bytes it holds (so the cut falls inside an HTTP chunk and inside an SSE event) and then
closes the connection (FIN) or resets it (RST). Everything else passes through as the
real vLLM sent it. It also swaps the request's bearer token, so one vLLM can stand
behind several registered worker ids (each id has its own derived key).

    proxy = FaultProxy("127.0.0.1", vllm_port, token_for_vllm)
    proxy.start(); proxy.arm(after_events=5, how="reset")
    ... register f"http://127.0.0.1:{proxy.port}" as a worker ...
    proxy.cuts  # responses broken so far
    proxy.stop()
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import threading

from waiting import free_port

HEAD_END = b"\r\n\r\n"
AUTH_LINE = re.compile(rb"(?im)^authorization:[^\r\n]*")
CONTENT_LENGTH = re.compile(rb"(?im)^content-length:\s*(\d+)\s*$")
EVENT = b"data: "


class FaultProxy:
    def __init__(self, host: str, port: int, upstream_token: str):
        self.upstream = (host, port)
        self.token = upstream_token.encode()
        self.port = free_port()
        self.after_events: int | None = None
        self.how = "close"
        self.cuts = 0
        self.responses = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # --- control (from the test's thread) -------------------------------------------

    def arm(self, after_events: int, how: str) -> None:
        """Break every response from now on after its `after_events`-th SSE event."""
        assert how in ("close", "reset"), how
        self.after_events, self.how = after_events, how

    def disarm(self) -> None:
        self.after_events = None

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, daemon=True, name="fault-proxy")
        self._thread.start()
        assert self._ready.wait(30), "the fault proxy did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    # --- the relay ---------------------------------------------------------------------

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        # One request at a time per connection (aiohttp does not pipeline): a new request
        # head from the client starts a new response to count events in.
        state = {"events": 0, "cut": False}
        to_upstream = asyncio.ensure_future(self._requests(reader, up_writer, state))
        try:
            await self._responses(up_reader, writer, state)
        finally:
            to_upstream.cancel()
            up_writer.close()
            if not state["cut"]:
                writer.close()

    async def _requests(self, reader, up_writer, state) -> None:
        buf = b""
        while True:
            while HEAD_END not in buf:
                data = await reader.read(65536)
                if not data:
                    up_writer.close()
                    return
                buf += data
            head, _, buf = buf.partition(HEAD_END)
            found = CONTENT_LENGTH.search(head)
            length = int(found.group(1)) if found else 0
            state["events"] = 0
            self.responses += 1
            up_writer.write(AUTH_LINE.sub(b"Authorization: Bearer " + self.token, head) + HEAD_END)
            while len(buf) < length:
                data = await reader.read(65536)
                if not data:
                    up_writer.close()
                    return
                buf += data
            up_writer.write(buf[:length])
            buf = buf[length:]
            await up_writer.drain()

    async def _responses(self, up_reader, writer, state) -> None:
        while True:
            data = await up_reader.read(65536)
            if not data:
                return
            limit = self.after_events
            if limit is not None:
                state["events"] += data.count(EVENT)
                if state["events"] >= limit:
                    writer.write(data[: max(1, len(data) // 2)])  # inside a chunk and an event
                    await writer.drain()
                    self._cut(writer)
                    state["cut"] = True
                    return
            writer.write(data)
            await writer.drain()

    def _cut(self, writer: asyncio.StreamWriter) -> None:
        self.cuts += 1
        if self.how == "reset":
            sock = writer.get_extra_info("socket")
            if sock is not None:  # SO_LINGER 0: close() sends RST, not FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
