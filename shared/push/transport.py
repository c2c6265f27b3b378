"""A lean asyncio HTTP/2 client on ``h2`` for the HTTP/2 push providers (FCM, APNs).

Why hand-written: httpx/httpcore's HTTP/2 path costs ~1 ms of client CPU per request here (anyio locks and events
per stream, per-request pool bookkeeping, header normalisation, HPACK never-indexing and Huffman-coding the ~200-byte
bearer token every time), which made our client slower than firebase-admin's thread pool on loopback. aioapns ships
its own h2 protocol for the same reason. This module keeps only what a push sender needs:

* one ``asyncio.Protocol`` per connection feeding ``h2.H2Connection``; writes are coalesced once per loop iteration;
* h2c with prior knowledge for ``http://`` (the fakes), TLS with ALPN ``h2`` for ``https://`` (default SSL context);
* the server's ``SETTINGS_MAX_CONCURRENT_STREAMS`` is respected (FCM: 100; APNs lowers it to 1 after a rejected
  token) on top of our own per-connection cap; we wait for the server's first SETTINGS before opening streams;
* flow control: received data is acknowledged, our initial windows are raised to 16 MiB, request bodies larger than
  the peer's window wait for WINDOW_UPDATE;
* a small pool: a new connection (up to ``connections``) only opens when the others are full, and connections are
  reused across calls until ``aclose``;
* GOAWAY: streams above ``last_stream_id`` were never processed and are retried at once on another connection
  (likewise RST_STREAM REFUSED_STREAM); streams at or below it may still be answered (h2 closes its state machine on
  GOAWAY, so we reopen it for receiving only) for ``goaway_grace`` seconds, then fail as ``ConnectionTerminated``;
* every connection-level failure raises a ``TransportError`` subclass; ``RequestNotSent`` (connect failures, refused
  or unprocessed streams) says nothing of the request left, so the providers resend only those (a timeout or reset
  after sending may have been delivered).

Headers are passed as bytes, unnormalised and unvalidated (we build them), and HPACK-encoded without Huffman coding:
repeated headers (``:authority``, ``:path`` for FCM, the bearer token, content-type) are indexed by h2's encoder
after the first request, so each request's header block is a few bytes. Indexing the authorization header is the one
deliberate departure from h2's defaults: a connection only ever carries one tenant's credential, so there is no
cross-secret compression oracle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

Header = tuple[bytes, bytes]

DEFAULT_WINDOW = 16 * 1024 * 1024  # our receive window (stream and connection); h2's default is 64 KiB
_DEFAULT_PEER_WINDOW = 65_535

_H2_CONFIG = h2.config.H2Configuration(
    client_side=True,
    header_encoding=None,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
    validate_inbound_headers=False,
    normalize_inbound_headers=False,
)


def _table_state(table: Any) -> tuple[object, int, int]:
    """Identity of an HPACK dynamic table's contents: any insertion puts a new tuple at the front (we hold a reference
    to the old front, so its id can't be reused), eviction changes the length, a size update changes ``maxsize``."""
    entries = table.dynamic_entries
    return (entries[0] if entries else None, len(entries), table.maxsize)


def _same_state(a: tuple[object, int, int] | None, b: tuple[object, int, int]) -> bool:
    return a is not None and a[0] is b[0] and a[1] == b[1] and a[2] == b[2]


class _MemoEncoder(hpack.Encoder):
    """HPACK encoder that (1) never Huffman-codes: pure-Python Huffman costs more CPU than the bytes it saves on the
    unindexed values (apns-id, device-token paths), and the server decodes plain literals faster too; (2) reuses the
    previous header block when the header list is the same and the dynamic table has not changed since: once FCM's
    headers are all indexed, every request's block is the same few index bytes."""

    def __init__(self) -> None:
        super().__init__()
        self._memo: tuple[list[Any], bytes, tuple[object, int, int]] | None = None

    def encode(self, headers: Any, huffman: bool = False) -> bytes:
        memo = self._memo
        if (
            memo is not None
            and not self.table_size_changes
            and headers == memo[0]
            and _same_state(memo[2], _table_state(self.header_table))
        ):
            return memo[1]
        before = _table_state(self.header_table)
        pending_resize = bool(self.table_size_changes)
        block = super().encode(headers, huffman=False)
        after = _table_state(self.header_table)
        # Reusable only if encoding added nothing to the table (all fields were already indexed).
        self._memo = (headers, block, after) if not pending_resize and _same_state(before, after) else None
        return block


class _MemoDecoder(hpack.Decoder):
    """HPACK decoder that reuses the previous result for a byte-identical header block when neither that block nor
    anything since changed the dynamic table (responses mostly repeat the same indexed fields)."""

    def __init__(self, max_header_list_size: int) -> None:
        super().__init__(max_header_list_size=max_header_list_size)
        self._memo: tuple[bytes, list[Any], tuple[object, int, int]] | None = None

    def decode(self, data: bytes, raw: bool = False) -> Any:
        memo = self._memo
        if memo is not None and data == memo[0] and _same_state(memo[2], _table_state(self.header_table)):
            return list(memo[1])
        before = _table_state(self.header_table)
        headers = list(super().decode(data, raw=raw))
        after = _table_state(self.header_table)
        self._memo = (bytes(data), list(headers), after) if raw and _same_state(before, after) else None
        return headers


class _ClientH2(h2.connection.H2Connection):
    """h2's ``open_outbound_streams`` walks every stream on each ``send_headers`` (tens of µs per request at 100 open
    streams). The pool already keeps us within the server's limit, so report our own count, and let h2 sweep its
    closed streams (its property's side effect) once every ``SWEEP`` streams."""

    SWEEP = 256

    def __init__(self, streams: dict[int, Any]) -> None:
        super().__init__(config=_H2_CONFIG)
        self.ours = streams
        self._opened = 0

    @property
    def open_outbound_streams(self) -> int:
        self._opened += 1
        if self._opened % self.SWEEP == 0:
            return int(h2.connection.H2Connection.open_outbound_streams.fget(self))  # type: ignore[attr-defined]
        return len(self.ours)


class TransportError(Exception):
    """A connection-level failure (the request may or may not have reached the server); retrying can fix it."""


class RequestNotSent(TransportError):
    """Nothing of this request reached the server (no stream was opened, or the server refused it unprocessed): it
    is safe to send again. Every other ``TransportError`` may come after the server got the request."""


class ConnectError(RequestNotSent):
    """Could not connect, or the server does not speak HTTP/2."""


class ConnectionClosed(TransportError):
    """The connection closed (reset by the server, or by ``aclose``) before the response completed."""


class StreamNotOpened(ConnectionClosed, RequestNotSent):
    """The pool is closed, or the connection could not open another stream: nothing was sent."""


class ConnectionTerminated(TransportError):
    """The server sent GOAWAY and did not answer this stream within the grace period."""


class StreamRefused(RequestNotSent):
    """The server did not process this stream (GOAWAY above it, or REFUSED_STREAM): safe to resend."""


class StreamReset(TransportError):
    """The server reset this stream."""


class RequestTimeout(TransportError):
    """No complete response within the timeout."""


class Response:
    """An HTTP/2 response: the subset of ``httpx.Response`` the providers read."""

    __slots__ = ("_headers", "content", "raw_headers", "status_code")

    def __init__(self, status_code: int, raw_headers: Sequence[Header], content: bytes) -> None:
        self.status_code = status_code
        self.raw_headers = raw_headers
        self.content = content
        self._headers: dict[str, str] | None = None

    @property
    def headers(self) -> dict[str, str]:
        """Lower-case header names (HTTP/2 requires them) to values; built on first use."""
        if self._headers is None:
            self._headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in self.raw_headers}
        return self._headers

    def json(self) -> Any:
        return json.loads(self.content)


class _Stream:
    __slots__ = ("body", "chunks", "future", "headers", "offset", "timer")

    def __init__(self, future: asyncio.Future[Response], body: bytes) -> None:
        self.future = future
        self.body = body
        self.offset = 0  # bytes of body sent (flow control may hold the rest)
        self.headers: list[Header] = []
        self.chunks: list[bytes] = []
        self.timer: asyncio.TimerHandle | None = None


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection. ``reserved`` counts slots handed out by the pool (streams open or about to open)."""

    def __init__(self, pool: H2Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.streams: dict[int, _Stream] = {}
        self.h2 = _ClientH2(self.streams)
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: pool.window,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 65_536,
            },
        )
        self.h2.encoder = _MemoEncoder()
        self.h2.decoder = _MemoDecoder(self.h2.decoder.max_header_list_size)
        self.transport: asyncio.Transport | None = None
        self.blocked: dict[int, _Stream] = {}  # streams whose body waits for a window update
        self.reserved = 0
        self.capacity = 0  # min(our cap, server's MAX_CONCURRENT_STREAMS); 0 until the server's SETTINGS arrive
        self.usable = False  # False while connecting, draining after GOAWAY, or closed
        self.closed = False
        self.settings_received: asyncio.Future[None] = self.loop.create_future()
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self._flush_pending = False
        self._grace: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(self.pool.window - _DEFAULT_PEER_WINDOW)
        transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._fail_all(ConnectionClosed(f"protocol error: {exc}"))
            self._close_transport()
            return
        for event in events:
            handler = _HANDLERS.get(type(event))
            if handler is not None:
                handler(self, event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.usable = False
        if not self.settings_received.done():
            self.settings_received.set_exception(ConnectError(f"connection closed during handshake: {exc}"))
            self.settings_received.exception()  # mark retrieved: the pool may already have given up waiting
        self._fail_all(ConnectionClosed(f"connection lost: {exc}" if exc else "connection closed by server"))
        if self._grace is not None:
            self._grace.cancel()
        if not self.lost.done():
            self.lost.set_result(None)
        self.pool._forget(self)

    # --- h2 events ----------------------------------------------------------------------------------------------
    def _on_response(self, event: h2.events.ResponseReceived) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.headers = event.headers

    def _on_data(self, event: h2.events.DataReceived) -> None:
        stream_id: int = event.stream_id
        stream = self.streams.get(stream_id)
        if stream is not None and event.data:
            stream.chunks.append(event.data)
        if event.flow_controlled_length:
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                self.h2.acknowledge_received_data(event.flow_controlled_length, stream_id)

    def _on_end(self, event: h2.events.StreamEnded) -> None:
        stream = self._pop(event.stream_id)
        if stream is None or stream.future.done():
            return
        status = 0
        headers: list[Header] = []
        for name, value in stream.headers:
            if name == b":status":
                status = int(value)
            else:
                headers.append((name, value))
        content = stream.chunks[0] if len(stream.chunks) == 1 else b"".join(stream.chunks)
        stream.future.set_result(Response(status, headers, content))

    def _on_reset(self, event: h2.events.StreamReset) -> None:
        stream = self._pop(event.stream_id)
        if stream is None or stream.future.done():
            return
        if event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM:
            stream.future.set_exception(StreamRefused("stream refused"))
        else:
            stream.future.set_exception(StreamReset(f"stream reset: {event.error_code!r}"))

    def _on_window(self, event: h2.events.WindowUpdated) -> None:
        for stream_id, stream in list(self.blocked.items()):
            self._send_body(stream_id, stream)

    def _on_settings(self, event: h2.events.RemoteSettingsChanged) -> None:
        old = self.capacity
        self.capacity = min(self.pool.max_streams, self.h2.remote_settings.max_concurrent_streams)
        if not self.settings_received.done():
            self.settings_received.set_result(None)
        elif self.capacity > old:
            self.pool._wake(self.capacity - old)
        if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
            self._on_window(None)  # type: ignore[arg-type]

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        self.usable = False
        last: int = event.last_stream_id if event.last_stream_id is not None else 0
        for stream_id in [s for s in self.streams if s > last]:
            stream = self._pop(stream_id)
            if stream is not None and not stream.future.done():
                stream.future.set_exception(StreamRefused("GOAWAY: not processed"))
        self.pool._retire(self)
        if not self.streams:
            self._close_transport()
            return
        if event.error_code != h2.errors.ErrorCodes.NO_ERROR:
            self._fail_all(ConnectionTerminated(f"GOAWAY {event.error_code!r}"))
            self._close_transport()
            return
        # Graceful GOAWAY: the server may still answer streams <= last_stream_id. h2 has moved its state machine to
        # CLOSED (it would reject those frames), so put it back to OPEN for receiving; we never open streams here again.
        self.h2.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        self._grace = self.loop.call_later(self.pool.goaway_grace, self._grace_expired)

    def _grace_expired(self) -> None:
        self._fail_all(ConnectionTerminated("GOAWAY: no response within the grace period"))
        self._close_transport()

    # --- requests -----------------------------------------------------------------------------------------------
    def start(self, headers: list[Header], body: bytes, timeout: float) -> asyncio.Future[Response]:
        """Open a stream (a slot must be reserved); the future resolves with the response or a TransportError."""
        future: asyncio.Future[Response] = self.loop.create_future()
        stream = _Stream(future, body)
        try:
            stream_id = self.h2.get_next_available_stream_id()
            self.h2.send_headers(stream_id, headers, end_stream=not body)
        except h2.exceptions.ProtocolError as exc:
            self.release()
            raise StreamNotOpened(f"cannot open stream: {exc}") from exc
        self.streams[stream_id] = stream
        if body:
            self._send_body(stream_id, stream)
        stream.timer = self.loop.call_later(timeout, self._timeout, stream_id)
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self._flush)
        return future

    def cancel(self, future: asyncio.Future[Response]) -> None:
        """The caller stopped waiting (cancelled): reset its stream so the slot is freed."""
        for stream_id, stream in self.streams.items():
            if stream.future is future:
                self._pop(stream_id)
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
                self._flush()
                return

    def _send_body(self, stream_id: int, stream: _Stream) -> None:
        body = stream.body
        try:
            while stream.offset < len(body):
                window = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
                if window <= 0:
                    self.blocked[stream_id] = stream
                    return
                chunk = body[stream.offset : stream.offset + window]
                stream.offset += len(chunk)
                self.h2.send_data(stream_id, chunk, end_stream=stream.offset >= len(body))
        except h2.exceptions.ProtocolError as exc:
            popped = self._pop(stream_id)
            if popped is not None and not popped.future.done():
                popped.future.set_exception(ConnectionClosed(f"cannot send body: {exc}"))
            return
        self.blocked.pop(stream_id, None)

    def _timeout(self, stream_id: int) -> None:
        stream = self._pop(stream_id, timer=False)
        if stream is None or stream.future.done():
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        self._flush()
        stream.future.set_exception(RequestTimeout("no response within the timeout"))

    def _pop(self, stream_id: int, *, timer: bool = True) -> _Stream | None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return None
        self.blocked.pop(stream_id, None)
        if timer and stream.timer is not None:
            stream.timer.cancel()
        self.release()
        if not self.usable and not self.streams and not self.closed:
            self._close_transport()  # a draining connection that has finished its streams
        return stream

    def release(self) -> None:
        self.reserved -= 1
        if self.usable:
            self.pool._wake(1)

    def _fail_all(self, exc: TransportError) -> None:
        for stream_id in list(self.streams):
            stream = self._pop(stream_id)
            if stream is not None and not stream.future.done():
                stream.future.set_exception(exc)

    def _flush(self) -> None:
        self._flush_pending = False
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def _close_transport(self) -> None:
        self.usable = False
        if self.transport is not None and not self.closed:
            self._flush()
            self.closed = True
            self.transport.close()

    def close(self) -> None:
        """Say GOAWAY and close; in-flight streams fail with ConnectionClosed."""
        self.usable = False
        if not self.closed:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.close_connection()
            self._fail_all(ConnectionClosed("client closed the connection"))
            self._close_transport()


_HANDLERS: dict[type, Callable[[_Connection, Any], None]] = {
    h2.events.ResponseReceived: _Connection._on_response,
    h2.events.DataReceived: _Connection._on_data,
    h2.events.StreamEnded: _Connection._on_end,
    h2.events.StreamReset: _Connection._on_reset,
    h2.events.WindowUpdated: _Connection._on_window,
    h2.events.RemoteSettingsChanged: _Connection._on_settings,
    h2.events.ConnectionTerminated: _Connection._on_goaway,
}


class H2Pool:
    """Up to ``connections`` HTTP/2 connections to one origin, each carrying at most ``max_streams`` streams (and no
    more than the server allows). Create it inside the event loop that will use it; reuse it; ``aclose`` it."""

    def __init__(
        self,
        base_url: str,
        *,
        connections: int = 2,
        max_streams: int = 100,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        goaway_grace: float = 2.0,
        refused_retries: int = 3,
        window: int = DEFAULT_WINDOW,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if connections < 1 or max_streams < 1:
            raise ValueError("connections and max_streams must be >= 1")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported base URL {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = parts.scheme == "https"
        self.size = connections
        self.max_streams = max_streams
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.goaway_grace = goaway_grace
        self.refused_retries = refused_retries
        self.window = window
        self._ssl = ssl_context
        self._prefix: list[Header] = [
            (b":method", b"POST"),
            (b":scheme", parts.scheme.encode()),
            (b":authority", parts.netloc.encode()),
        ]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conns: list[_Connection] = []  # usable or connecting
        self._retired: list[_Connection] = []  # draining after GOAWAY
        self._connecting: asyncio.Task[_Connection] | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        self.connections_opened = 0

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    async def post(
        self, path: bytes, headers: Sequence[Header], body: bytes, *, timeout: float | None = None
    ) -> Response:
        """POST ``body`` to ``path``; ``headers`` are lower-case bytes pairs (reuse the same objects across calls).
        Raises ``TransportError`` for connection-level failures; HTTP error statuses are returned."""
        all_headers = [*self._prefix, (b":path", path), *headers]
        for attempt in range(self.refused_retries + 1):
            conn = await self._acquire()
            future = conn.start(all_headers, body, self.timeout if timeout is None else timeout)
            try:
                return await future
            except StreamRefused:
                if attempt == self.refused_retries:
                    raise
            except asyncio.CancelledError:
                if not future.done():
                    conn.cancel(future)
                raise
        raise AssertionError("unreachable")

    async def _acquire(self) -> _Connection:
        while True:
            best: _Connection | None = None
            for conn in self._conns:
                if conn.usable and conn.reserved < conn.capacity and (best is None or conn.reserved < best.reserved):
                    best = conn
            if best is not None:
                best.reserved += 1
                return best
            if self._closed:
                raise StreamNotOpened("pool is closed")
            if len(self._conns) < self.size or self._connecting is not None:
                if self._connecting is None:
                    self._connecting = self.loop.create_task(self._open())
                await asyncio.shield(self._connecting)
                continue
            waiter: asyncio.Future[None] = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake(1)  # we were handed a free slot but are going away: pass it on
                raise
            finally:
                if not waiter.done():
                    waiter.cancel()

    async def _open(self) -> _Connection:
        conn = _Connection(self)
        self._conns.append(conn)
        try:
            ctx: ssl.SSLContext | None = None
            if self.tls:
                ctx = self._ssl or ssl.create_default_context()
                ctx.set_alpn_protocols(["h2"])
            async with asyncio.timeout(self.connect_timeout):
                transport, _ = await self.loop.create_connection(
                    lambda: conn, self.host, self.port, ssl=ctx, server_hostname=self.host if ctx else None
                )
                if ctx is not None:
                    ssl_object = transport.get_extra_info("ssl_object")
                    if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
                        transport.close()
                        raise ConnectError(f"{self.host}:{self.port} did not negotiate h2 via ALPN")
                await conn.settings_received
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            conn.close()
            self._forget(conn)
            raise ConnectError(f"connect to {self.host}:{self.port}: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            conn.close()
            self._forget(conn)
            raise
        finally:
            self._connecting = None
        if self._closed:
            conn.close()
            raise StreamNotOpened("pool is closed")
        conn.usable = not conn.closed
        self.connections_opened += 1
        self._wake(conn.capacity)
        return conn

    def _wake(self, n: int) -> None:
        while n > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                n -= 1

    def _retire(self, conn: _Connection) -> None:
        """GOAWAY: no new streams on ``conn``; waiters may open a replacement."""
        if conn in self._conns:
            self._conns.remove(conn)
            self._retired.append(conn)
        self._wake(len(self._waiters))

    def _forget(self, conn: _Connection) -> None:
        for group in (self._conns, self._retired):
            if conn in group:
                group.remove(conn)
        self._wake(len(self._waiters))

    async def aclose(self) -> None:
        """Close every connection (GOAWAY, then TCP close) and wait briefly for the transports to go."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        conns = [*self._conns, *self._retired]
        for conn in conns:
            conn.close()
        lost = [c.lost for c in conns if c.transport is not None and not c.lost.done()]
        if lost:
            await asyncio.wait(lost, timeout=1.0)
        self._wake(len(self._waiters))
