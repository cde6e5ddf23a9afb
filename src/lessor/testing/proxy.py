"""A TCP proxy that adds latency or swallows traffic, for tests and benchmarks.

The kernels this project runs on have no ``netem`` queueing discipline, so network latency and
partitions are made in user space: a :class:`FaultProxy` listens on a loopback address,
forwards every connection to its target, and can

* delay every chunk by ``delay`` seconds in each direction (a one-way latency; the order of
  bytes is kept, as TCP would),
* ``blackhole()``: keep connections open but deliver nothing either way, as a cut link does
  (new connections are accepted and then starve), and ``heal()`` again,
* ``reset()``: close every open connection at once.

It runs an asyncio loop in a daemon thread and is a context manager. Only loopback or
namespaced addresses the caller chose are ever contacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine
from types import TracebackType
from typing import TypeVar

__all__ = ["FaultProxy"]

_T = TypeVar("_T")
_CHUNK = 64 * 1024


class FaultProxy:
    """Forwards ``listen`` to ``target`` (both ``host:port``; port 0 listens on a free one)."""

    def __init__(self, target: str, *, listen: str = "127.0.0.1:0", delay: float = 0.0) -> None:
        self._target_host, target_port = target.rsplit(":", 1)
        self._target_port = int(target_port)
        self._listen_host, listen_port = listen.rsplit(":", 1)
        self._listen_port = int(listen_port)
        self._delay = delay
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name=f"FaultProxy->{target}"
        )
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._gate: asyncio.Event | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        self._run(self._start())
        return self

    async def _start(self) -> None:
        self._gate = asyncio.Event()
        self._gate.set()
        self._server = await asyncio.start_server(self._serve, self._listen_host, self._listen_port)
        self.port = self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._run(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def address(self) -> str:
        """Where clients connect: ``host:port``."""
        return f"{self._listen_host}:{self.port}"

    # -- faults ------------------------------------------------------------------------------

    @property
    def delay(self) -> float:
        return self._delay

    def set_delay(self, seconds: float) -> None:
        """One-way latency added to every chunk from now on."""
        self._delay = max(0.0, seconds)

    def blackhole(self) -> None:
        """Stop delivering anything, in both directions, on every connection."""
        self._run(self._set_gate(False))

    def heal(self) -> None:
        """Deliver again (what was held back flows on, as after a healed partition)."""
        self._run(self._set_gate(True))

    def reset(self) -> None:
        """Close every open connection; new ones are still accepted."""
        self._run(self._close_connections())

    async def _set_gate(self, open_: bool) -> None:
        assert self._gate is not None
        if open_:
            self._gate.set()
        else:
            self._gate.clear()

    async def _close_connections(self) -> None:
        for writer in list(self._writers):
            writer.close()

    # -- forwarding --------------------------------------------------------------------------

    async def _serve(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(
                self._target_host, self._target_port
            )
        except OSError:
            client_writer.close()
            return
        self._writers.update((client_writer, server_writer))
        try:
            await asyncio.gather(
                self._pump(client_reader, server_writer),
                self._pump(server_reader, client_writer),
            )
        finally:
            for writer in (client_writer, server_writer):
                self._writers.discard(writer)
                writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._gate is not None
        # Chunks are stamped when they arrive and delivered in order once their delay is up,
        # so latency does not cut throughput, as on a long link.
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            assert self._gate is not None
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._gate.wait()
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.write_eof()

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(_CHUNK)
                await queue.put((time.monotonic() + self._delay, data))
                if not data:
                    break
            await sender
        except (ConnectionError, OSError):
            sender.cancel()
        finally:
            if not sender.done():
                sender.cancel()

    def _run(self, coro: Coroutine[object, object, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)
