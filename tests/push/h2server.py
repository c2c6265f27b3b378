"""A tiny in-process HTTP/2 server for transport tests: behaviours hypercorn can't be told to show on demand (a small
SETTINGS_MAX_CONCURRENT_STREAMS, a graceful GOAWAY that still answers the streams below it, closing mid-request).

Every request gets 200 with JSON ``{"conn": <connection number>, "stream": <id>, "len": <body bytes>}`` after
``delay`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings
from hyperframe.frame import GoAwayFrame


@dataclass
class Stats:
    connections: int = 0
    requests: int = 0
    answered: int = 0
    max_concurrent: dict[int, int] = field(default_factory=dict)  # per connection number
    goaways: int = 0


class MiniH2Server:
    def __init__(
        self,
        *,
        max_streams: int = 100,
        delay: float = 0.0,
        goaway_after: int | None = None,
        close_on_request: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.max_streams = max_streams
        self.delay = delay
        self.goaway_after = goaway_after
        self.close_on_request = close_on_request
        self.ssl_context = ssl_context
        self.stats = Stats()
        self._server: asyncio.Server | None = None
        self._protocols: list[_ServerConnection] = []

    async def start(self) -> str:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._make, "127.0.0.1", 0, ssl=self.ssl_context)
        port = self._server.sockets[0].getsockname()[1]
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{port}"

    def _make(self) -> _ServerConnection:
        self.stats.connections += 1
        proto = _ServerConnection(self, self.stats.connections)
        self._protocols.append(proto)
        return proto

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for proto in self._protocols:
                if proto.transport is not None:
                    proto.transport.close()
            await self._server.wait_closed()


class _ServerConnection(asyncio.Protocol):
    def __init__(self, server: MiniH2Server, number: int) -> None:
        self.server = server
        self.number = number
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.conn.local_settings = h2.settings.Settings(
            client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: server.max_streams}
        )
        self.transport: asyncio.Transport | None = None
        self.bodies: dict[int, int] = {}
        self.open = 0
        self.requests = 0
        self.last_stream_id: int | None = None  # set once GOAWAY was sent

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self._on_request(event.stream_id)  # type: ignore[arg-type]
            elif isinstance(event, h2.events.DataReceived):
                self.bodies[event.stream_id] = self.bodies.get(event.stream_id, 0) + len(event.data or b"")  # type: ignore[index]
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)  # type: ignore[arg-type]
            elif isinstance(event, h2.events.StreamEnded):
                sid: int = event.stream_id  # type: ignore[assignment]
                if self.last_stream_id is None or sid <= self.last_stream_id:
                    asyncio.get_running_loop().call_later(self.server.delay, self._respond, sid)
        if not self.transport.is_closing():
            self.transport.write(self.conn.data_to_send())

    def _on_request(self, stream_id: int) -> None:
        assert self.transport is not None
        stats = self.server.stats
        stats.requests += 1
        if self.server.close_on_request:
            self.transport.close()
            return
        self.requests += 1
        self.open += 1
        stats.max_concurrent[self.number] = max(stats.max_concurrent.get(self.number, 0), self.open)
        if self.server.goaway_after is not None and self.requests == self.server.goaway_after:
            # A graceful GOAWAY written past h2 (whose state machine would stop us answering streams <= last).
            self.last_stream_id = stream_id
            frame = GoAwayFrame(0)
            frame.last_stream_id = stream_id
            frame.error_code = 0
            self.transport.write(self.conn.data_to_send() + frame.serialize())
            stats.goaways += 1

    def _respond(self, stream_id: int) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        body = json.dumps({"conn": self.number, "stream": stream_id, "len": self.bodies.pop(stream_id, 0)}).encode()
        self.conn.send_headers(stream_id, [(b":status", b"200"), (b"content-length", str(len(body)).encode())])
        self.conn.send_data(stream_id, body, end_stream=True)
        self.open -= 1
        self.server.stats.answered += 1
        self.transport.write(self.conn.data_to_send())
        if self.last_stream_id is not None and self.open == 0:
            self.transport.close()
