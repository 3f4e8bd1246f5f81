"""Helpers of the package's own tests: every wait is bounded, every hub is
real and on a free loopback port."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from typing import Any, Awaitable, Callable, Optional, TypeVar

import pytest

pytest_plugins = ["pytester"]

T = TypeVar("T")

#: The longest any single test's asyncio part may take.
TEST_TIMEOUT = 60.0


def run(coro: Awaitable[T], timeout: float = TEST_TIMEOUT) -> T:
    """Runs a coroutine to completion, failing the test past ``timeout``."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Polls ``check`` until it is true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not true within {timeout} s")
        time.sleep(0.02)


def gone(pid: int) -> bool:
    """Whether the process has exited (a zombie waiting to be reaped counts)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


async def take(client: Any, n: int, timeout: float = 10.0) -> list[dict]:
    """The next ``n`` events of ``client``, each within ``timeout``."""
    return [await client.next(timeout) for _ in range(n)]


class Proxy:
    """A TCP proxy on a free port to ``target``; :meth:`cut` drops every
    connection through it (as a network failure would: no close frame)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.accepted = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.accepted += 1
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        """Resets every connection through the proxy."""
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture
def proxy_to() -> Any:
    """``proxy_to(port)`` makes a :class:`Proxy`; all are closed at teardown."""
    proxies: list[Proxy] = []

    def make(port: int) -> Proxy:
        proxy = Proxy(port)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


def free_port() -> int:
    """A loopback port nothing listens on (for a hub restarted on the same port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


