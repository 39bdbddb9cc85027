"""The gateway's HTTP/1.1 client to its workers' vLLM: one POST at a time per connection,
connections kept alive in a pool.

Why not aiohttp's ClientSession: per request it builds a ClientRequest, its headers
multidict, a cookie-jar pass, trace hooks and timers, and that was the largest share
of the gateway's own CPU per request (27 %, issue 13's profile). A worker is vLLM's
uvicorn, which answers with a Content-Length or a chunked body, so a protocol over
asyncio with llhttp (httptools) parsing the answers is all the gateway needs.

Every failure to reach or read a worker is a WorkerConnectionError (a ConnectionError,
so an OSError): refused or timed-out connects, a connection closed before the answer
ended, bytes that are not HTTP. A pooled connection the worker closed while it sat idle
(uvicorn closes idle ones after 5 s) is retried once on a fresh connection when nothing
came back on it.
"""

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

CONNECT_TIMEOUT_S = 5.0
# Idle connections are closed before uvicorn closes them (its keep-alive is 5 s).
IDLE_KEEPALIVE_S = 4.0
# Unread answer bytes past which the worker's socket is no longer read (a slow client
# holds the stream back instead of growing the gateway's memory).
HIGH_WATER = 256 * 1024


class WorkerConnectionError(ConnectionError):
    """A worker could not be reached, closed the connection early, or did not speak HTTP."""


class _StaleConnection(WorkerConnectionError):
    """A pooled connection had been closed by the worker: nothing came back on it."""


@dataclass(frozen=True, slots=True)
class _Target:
    host: str
    port: int
    tls: bool
    host_header: str
    path_prefix: str  # a base URL's own path, without its last "/"


def request_head(path: str, host_header: str, headers: dict[str, str], length: int) -> bytes:
    """The request line and headers of a POST; a value with a line break is refused
    (it would split the request)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host_header}"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value:
            raise WorkerConnectionError(f"header {name} holds a line break")
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {length}")
    try:
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError as err:
        raise WorkerConnectionError(f"a header cannot be sent: {err}") from None


class WorkerResponse:
    """One answer: `status` once the headers came; the body whole (`read`) or as it
    arrives (`readany`). Used as `async with`: leaving it returns a finished connection
    to the pool and closes an unfinished one (vLLM then aborts the request)."""

    def __init__(self, conn: "_Connection") -> None:
        self._conn: _Connection | None = conn
        self.status = 0
        self._parser = httptools.HttpResponseParser(self)
        self._headers_seen = conn.loop.create_future()
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._waiter: asyncio.Future | None = None
        self._complete = False
        self._keep_alive = False
        self._framed = False  # Content-Length or chunked: the end is known without a close
        self._error: WorkerConnectionError | None = None
        self.got_bytes = False

    # --- llhttp's callbacks -------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if not self._headers_seen.done():
            self._headers_seen.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        conn = self._conn
        if self._buffered > HIGH_WATER and conn is not None:
            conn.pause()
        self._wake()

    def on_message_complete(self) -> None:
        self._keep_alive = self._parser.should_keep_alive()  # reset once the call returns
        self._complete = True
        self._wake()

    # --- from the connection ----------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as err:
            self.fail(WorkerConnectionError(f"the worker's answer is not HTTP: {err}"))
            if self._conn is not None:
                self._conn.close()

    def connection_lost(self, exc: Exception | None, *, reused: bool) -> None:
        if self._complete or self._error is not None:
            return
        if self.status and not self._framed:  # a body that ends with the connection
            self._complete = True
            self._wake()
            return
        why = f": {exc}" if exc else ""
        if reused and not self.got_bytes:
            self.fail(_StaleConnection(f"the worker closed an idle connection{why}"))
        else:
            self.fail(WorkerConnectionError(f"the worker closed the connection before its answer ended{why}"))

    def fail(self, error: WorkerConnectionError) -> None:
        if self._error is None:
            self._error = error
        if not self._headers_seen.done():
            self._headers_seen.set_result(None)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- the caller's side ----------------------------------------------------------------

    async def headers(self) -> None:
        await self._headers_seen
        if not self.status:
            raise self._error or WorkerConnectionError("no answer from the worker")

    async def readany(self) -> bytes:
        """The body bytes that came since the last call, waiting for some; b"" at the end."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._complete:
                return b""
            conn = self._conn
            if conn is None:
                raise WorkerConnectionError("the answer was released")
            self._waiter = conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._buffered = 0
        if self._conn is not None:
            self._conn.resume()
        return data

    async def read(self) -> bytes:
        parts = []
        while data := await self.readany():
            parts.append(data)
        return b"".join(parts)

    async def __aenter__(self) -> "WorkerResponse":
        return self

    async def __aexit__(self, *exc_info) -> None:
        self.release()

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._complete and self._error is None and self._keep_alive:
            conn.done()
        else:
            conn.close()


class _Connection(asyncio.Protocol):
    """One keep-alive connection to a worker; at most one request on it at a time."""

    def __init__(self, client: "WorkerClient", target: _Target) -> None:
        self.client = client
        self.target = target
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.response: WorkerResponse | None = None
        self.lost = False
        self.requests = 0
        self._paused = False
        self._idle_timer: asyncio.TimerHandle | None = None

    # --- asyncio's callbacks --------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # bytes nobody asked for: the connection is not to be trusted
            self.close()
            return
        self.response.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._cancel_idle()
        if self.response is not None:
            self.response.connection_lost(exc, reused=self.requests > 1)
        else:
            self.client.forget(self)

    # --- the client's side ----------------------------------------------------------

    @property
    def usable(self) -> bool:
        return not self.lost and self.transport is not None and not self.transport.is_closing()

    async def send(self, head: bytes, payload: bytes) -> WorkerResponse:
        self._cancel_idle()
        transport = self.transport
        if transport is None or transport.is_closing():
            raise _StaleConnection("the connection closed before the request")
        self.requests += 1
        response = self.response = WorkerResponse(self)
        try:
            transport.write(head + payload)
            await response.headers()
        except BaseException:
            response.release()
            raise
        return response

    def done(self) -> None:
        """The answer was read whole: the connection waits in the pool for the next one."""
        self.response = None
        self.resume()
        if self.usable and self.client.park(self):
            self._idle_timer = self.loop.call_later(self.client.keepalive_s, self.close)
        else:
            self.close()

    def close(self) -> None:
        self._cancel_idle()
        self.client.forget(self)
        if self.transport is not None:
            self.transport.close()

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def _cancel_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None


class WorkerClient:
    """POSTs to workers over pooled keep-alive connections (see the module's doc)."""

    def __init__(self, *, keepalive_s: float = IDLE_KEEPALIVE_S, connect_timeout_s: float = CONNECT_TIMEOUT_S):
        self.keepalive_s = keepalive_s
        self.connect_timeout_s = connect_timeout_s
        self._idle: dict[_Target, list[_Connection]] = {}
        self._targets: dict[str, _Target] = {}
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    async def post(self, base_url: str, path: str, headers: dict[str, str], payload: bytes) -> WorkerResponse:
        """POST `payload` to base_url + path; the answer once its headers came."""
        if self._closed:
            raise WorkerConnectionError("the gateway's worker client is closed")
        target = self._target(base_url)
        head = request_head(target.path_prefix + path, target.host_header, headers, len(payload))
        conn = self._pooled(target)
        if conn is not None:
            try:
                return await conn.send(head, payload)
            except _StaleConnection:
                pass
        conn = await self._connect(target)
        return await conn.send(head, payload)

    async def close(self) -> None:
        self._closed = True
        for conns in list(self._idle.values()):
            for conn in list(conns):
                conn.close()
        self._idle.clear()

    def idle_connections(self) -> int:
        return sum(len(conns) for conns in self._idle.values())

    # --- the pool -------------------------------------------------------------------

    def park(self, conn: _Connection) -> bool:
        if self._closed:
            return False
        self._idle.setdefault(conn.target, []).append(conn)
        return True

    def forget(self, conn: _Connection) -> None:
        conns = self._idle.get(conn.target)
        if conns and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._idle[conn.target]

    def _pooled(self, target: _Target) -> _Connection | None:
        conns = self._idle.get(target)
        while conns:
            conn = conns.pop()  # the most recently used: the least likely to be stale
            if not conns:
                del self._idle[target]
            if conn.usable:
                return conn
            conn.close()
            conns = self._idle.get(target)
        return None

    async def _connect(self, target: _Target) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = None
        if target.tls:
            tls = self._tls = self._tls or ssl.create_default_context()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, target), target.host, target.port, ssl=tls
                )
        except TimeoutError:
            raise WorkerConnectionError(
                f"connecting to {target.host}:{target.port} took over {self.connect_timeout_s:g} s"
            ) from None
        return conn

    def _target(self, base_url: str) -> _Target:
        target = self._targets.get(base_url)
        if target is None:
            parts = urlsplit(base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise WorkerConnectionError(f"the worker's url {base_url!r} is not an http(s) URL")
            tls = parts.scheme == "https"
            try:
                port = parts.port or (443 if tls else 80)
            except ValueError:
                raise WorkerConnectionError(f"the worker's url {base_url!r} has a bad port") from None
            target = _Target(parts.hostname, port, tls, parts.netloc.rpartition("@")[2], parts.path.rstrip("/"))
            if len(self._targets) > 4096:  # workers come and go: never an unbounded cache
                self._targets.clear()
            self._targets[base_url] = target
        return target
