"""An asyncio WebSocket client that stays subscribed: it reconnects with
backoff and jitter and resumes every room from the last seq it delivered,
as ``client.js`` does in a browser (PROTOCOL.md sections 3 and 4)."""

from __future__ import annotations

import asyncio
import collections
import inspect
import json
import logging
import random
from typing import Any, Awaitable, Callable, Deque, Dict, Iterable, Mapping, Optional, Union, cast

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from .errors import HubError
from .resume import Resume

logger = logging.getLogger("wshub")

#: Close codes after which the client does not reconnect (PROTOCOL.md section 6):
#: 4003 (disconnected by an admin) and 1008 (rate-limit abuse).
FINAL_CLOSE_CODES = frozenset({1008, 4003})

Token = Union[str, None, Callable[[], Union[str, None, Awaitable[Optional[str]]]]]
#: A message from the hub (PROTOCOL.md section 3), decoded.
Message = Dict[str, Any]
#: An event: a hub message with an ``id`` (``type``, ``payload``, ``room``, ``seq``, …).
Event = Message


def _rooms(rooms: Union[str, Iterable[str]]) -> list[str]:
    return [rooms] if isinstance(rooms, str) else [str(r) for r in rooms]


class AsyncClient:
    """A connection to a hub's ``/ws`` that keeps itself alive, and an async
    iterator of its events.

    ``async with AsyncClient(url, rooms=["scans"]) as client`` connects, reads
    the welcome and, with rooms, waits for the ``subscribed`` reply, so any
    event published afterwards reaches the client. ``async for event in
    client`` (or ``await anext(client)``, or ``await client.next(timeout)``)
    yields every event: each hub message with an ``id`` (``health_status``
    included), each once, in seq order per room, across reconnects.

    After any close but 4003 and 1008 it reconnects with capped exponential
    backoff (``backoff`` seconds at first, doubled per failed attempt up to
    ``max_backoff``, jittered to between half and all of it; a connection
    that lasted ``stable_after`` seconds resets it) and rejoins its rooms
    with ``since`` set to the last seq it delivered in each, so the hub
    replays exactly what was missed while it still holds it. A connection
    silent for the hub's advertised ``heartbeat_timeout_ms`` is given up
    and reopened. After 4003 or 1008 the iterator ends once drained, and
    :attr:`close_code` says why.

    A reader task takes every message off the socket at once, so pings,
    heartbeats and replies flow however slowly events are consumed. Events
    wait in a queue of at most ``queue_size``; when a slow consumer lets it
    fill, the client leaves its rooms (dropping nothing it has delivered
    or will deliver), and once the consumer has taken half the queue it
    rejoins them with ``since``, so the hub replays what came meanwhile.
    Events to a user or to everyone (no seq) that arrive while the queue is
    full cannot be replayed; they are counted in :attr:`dropped`.

    ``token`` is a JWT, or a function (plain or async) called before every
    attempt, sent as ``Authorization: Bearer``; ``headers`` are added to
    every upgrade request (a ``Cookie`` for an app's ``connect_hook``, say). ``on_status`` is called
    with a dict ``{"state": "connecting"|"open"|"closed", "code",
    "reason", "attempt", …}`` on every change and notice (``epoch_changed``,
    ``history_unavailable``, ``error``, ``dropped``), as ``client.js``'s
    ``onStatus``.
    """

    def __init__(
        self,
        ws_url: str,
        *,
        rooms: Union[str, Iterable[str]] = (),
        token: Token = None,
        headers: Optional[Mapping[str, str]] = None,
        queue_size: int = 1024,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        stable_after: float = 10.0,
        open_timeout: float = 10.0,
        request_timeout: float = 10.0,
        on_status: Optional[Callable[[Message], None]] = None,
    ) -> None:
        if queue_size < 2:
            raise ValueError("queue_size must be at least 2")
        self.url = ws_url
        self.token = token
        self.headers = dict(headers or {})
        self.queue_size = queue_size
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self.open_timeout = open_timeout
        self.request_timeout = request_timeout
        self.on_status = on_status

        #: The rooms wanted, kept across reconnects (insertion-ordered).
        self._rooms: dict[str, None] = dict.fromkeys(_rooms(rooms))
        self._resume = Resume()
        self._queue: Deque[Event] = collections.deque()
        self._readable: Optional[asyncio.Event] = None
        self._paused = False

        self.connection_id: Optional[str] = None
        self.welcome: Optional[Message] = None
        self.state = "closed"
        self.attempt = 0
        #: Connections opened so far (1 after the first).
        self.connections = 0
        #: Events without a seq that arrived while the queue was full.
        self.dropped = 0
        #: The close code that ended the client for good (4003, 1008), if any.
        self.close_code: Optional[int] = None

        self._ws: Optional[ClientConnection] = None
        self._outbox: Optional[asyncio.Queue[str]] = None
        self._writer: Optional[asyncio.Task[None]] = None
        self._connected: Optional[asyncio.Event] = None
        self._stopping: Optional[asyncio.Event] = None
        self._ready: Optional[asyncio.Future[None]] = None
        self._task: Optional[asyncio.Task[None]] = None
        self._pending: dict[str, tuple[asyncio.Future[Any], Message, bool]] = {}
        self._next_ref = 0
        self._done = False

    # ---- lifecycle -----------------------------------------------------

    async def __aenter__(self) -> "AsyncClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<wshub.AsyncClient {self.url} {self.state} rooms={list(self._rooms)}>"

    async def connect(self) -> None:
        """Opens the first connection and waits (up to ``open_timeout``) for
        the welcome and the ``subscribed`` reply. Raises :class:`HubError`:
        the hub's code for a refused upgrade (``invalid_token``,
        ``forbidden``, ``host_not_allowed``, …) or a refused subscribe,
        ``connect_failed`` when no connection could be opened, ``timeout``."""
        if self._task is not None:
            raise HubError("closed", "this client was connected already")
        loop = asyncio.get_running_loop()
        self._readable = asyncio.Event()
        self._connected = asyncio.Event()
        self._stopping = asyncio.Event()
        self._ready = loop.create_future()
        self._task = loop.create_task(self._run(), name=f"wshub-client {self.url}")
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self.open_timeout)
        except asyncio.TimeoutError:
            await self.close()
            raise HubError("timeout", f"no welcome and subscribed within {self.open_timeout} s") from None
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Closes the connection for good: no reconnect, pending calls fail
        with ``closed``, and iteration ends."""
        self._done = True
        if self._stopping is not None:
            self._stopping.set()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass  # the task's own errors were reported while it ran
        self._settle_all(HubError("closed", "the client was closed"))
        self._queue.clear()
        if self._readable is not None:
            self._readable.set()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(HubError("closed", "the client was closed"))
            self._ready.exception()  # retrieved: nobody else waits for it
        self.state = "closed"

    # ---- events ----------------------------------------------------------

    def __aiter__(self) -> "AsyncClient":
        return self

    async def __anext__(self) -> Event:
        assert self._readable is not None, "use `async with` (or await connect()) first"
        while not self._queue:
            if self._done:
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()
        event = self._queue.popleft()
        if self._paused and len(self._queue) <= self.queue_size // 2:
            self._paused = False
            if self._ws is not None and self.state == "open":
                self._rejoin()
        return event

    async def next(self, timeout: Optional[float] = None) -> Event:
        """The next event, waiting at most ``timeout`` seconds
        (``asyncio.TimeoutError`` after); ``StopAsyncIteration`` once the
        client has ended."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    @property
    def epoch(self) -> Optional[str]:
        """The hub's epoch from the latest welcome (or ``subscribed``)."""
        return self._resume.epoch

    @property
    def rooms(self) -> list[str]:
        """The rooms joined (or to join on the next connection)."""
        return list(self._rooms)

    @property
    def positions(self) -> dict[str, int]:
        """The last seq delivered per room: the ``since`` of the next resume."""
        return dict(self._resume.last)

    @property
    def pending_events(self) -> int:
        """Events received and not yet taken by the consumer."""
        return len(self._queue)

    # ---- calls -----------------------------------------------------------

    async def subscribe(self, *rooms: str) -> Optional[Message]:
        """Joins rooms, now and on every reconnect, and returns the
        ``subscribed`` payload (``rooms``, ``epoch``, ``positions``); None
        when the rooms will be joined later (the queue is full, or the
        connection closed first). A refusal (``forbidden``,
        ``invalid_message``, ``too_many_rooms``, an app's code) raises
        :class:`HubError` and the rooms are not kept."""
        added = [r for r in rooms if r not in self._rooms]
        for room in rooms:
            self._rooms[room] = None
        if self._paused:
            return None
        try:
            reply = await self._call({"type": "subscribe", "rooms": list(rooms)}, keep=True)
        except HubError as e:
            if e.from_hub:
                for room in added:
                    self._forget(room)
            raise
        return reply["payload"] if reply else None

    async def unsubscribe(self, *rooms: str) -> Optional[Message]:
        """Leaves rooms and returns the ``unsubscribed`` payload (None when
        not connected: there is nothing to leave)."""
        for room in rooms:
            self._forget(room)
        if self.state != "open" or self._paused:
            return None
        reply = await self._call({"type": "unsubscribe", "rooms": list(rooms)}, keep=True)
        return reply["payload"] if reply else None

    async def publish(self, room: str, type: str, payload: Optional[Mapping[str, Any]] = None) -> Message:
        """Publishes an event to ``room``'s other subscribers (never back to
        this client) and returns the ``published`` payload, ``{"id", "seq",
        "recipients"}``."""
        message = {"type": "publish", "room": room, "event": type, "payload": dict(payload or {})}
        return cast("Message", (await self._call(message))["payload"])

    async def rpc(self, method: str, params: Any = None, *, timeout: Optional[float] = None) -> Any:
        """Asks the app behind the hub (its ``rpc_hook``) and returns its
        ``result``; a refusal raises :class:`HubError` with the app's code,
        ``hook_unavailable`` when it cannot answer."""
        reply = await self._call({"type": "rpc", "method": method, "params": params}, timeout=timeout)
        return reply["payload"].get("result")

    async def presence(self, room: str) -> list[Message]:
        """Who is in ``room``: ``[{"connection_id", "user"}]``."""
        return cast("list[Message]", (await self._call({"type": "presence", "room": room}))["payload"]["members"])

    async def ping(self) -> None:
        """A ``ping`` answered with ``pong``: everything the hub queued to this
        client before it has been received once this returns."""
        await self._call({"type": "ping"})

    async def request(self, message: Mapping[str, Any], *, timeout: Optional[float] = None) -> Message:
        """Sends any client message (PROTOCOL.md section 4) and returns the
        reply with the same ``ref`` (one is made if the message has none)."""
        return cast("Message", await self._call(dict(message), timeout=timeout))

    async def _call(self, message: Message, *, timeout: Optional[float] = None, keep: bool = False) -> Any:
        """Waits for a connection, sends, and waits for the reply, all within
        ``timeout`` (default ``request_timeout``)."""
        if self._done or self._connected is None:
            raise HubError("closed", "the client is not connected (use `async with`)")
        timeout = self.request_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except asyncio.TimeoutError:
            raise HubError("timeout", f"not connected within {timeout} s") from None
        if self._done:
            raise HubError("closed", "the client was closed")
        ref, future = self._send_request(message, keep=keep)
        try:
            return await asyncio.wait_for(future, max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            self._pending.pop(ref, None)
            raise HubError("timeout", f"no reply to `{message.get('type')}` within {timeout} s") from None

    def _send_request(self, message: Message, *, keep: bool = False) -> tuple[str, asyncio.Future[Any]]:
        ref = str(message["ref"]) if message.get("ref") is not None else f"py-{self._next_ref + 1}"
        self._next_ref += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ref] = (future, message, keep)
        self._send({**message, "ref": ref})
        return ref, future

    def _send(self, message: Message) -> None:
        # One writer task per connection sends in the order queued.
        if self._outbox is not None:
            self._outbox.put_nowait(json.dumps(message, separators=(",", ":")))

    # ---- the connection loop ----------------------------------------------

    async def _token(self) -> Optional[str]:
        token = self.token() if callable(self.token) else self.token
        if inspect.isawaitable(token):
            token = await token
        return None if token in (None, "") else str(token)

    async def _run(self) -> None:
        assert self._stopping is not None and self._ready is not None
        loop = asyncio.get_running_loop()
        delay_base = self.backoff
        while not self._stopping.is_set():
            self.attempt += 1
            self._report("connecting")
            code, reason = 1006, "connection failed"
            opened_at: Optional[float] = None
            try:
                headers = dict(self.headers)
                token = await asyncio.wait_for(self._token(), self.open_timeout)
                if token is not None:
                    headers["Authorization"] = f"Bearer {token}"
                ws = await connect(
                    self.url,
                    additional_headers=headers,
                    subprotocols=["wshub.json"],  # type: ignore[list-item]
                    compression=None,
                    ping_interval=None,  # the hub's heartbeats are watched instead
                    open_timeout=self.open_timeout,
                    close_timeout=2,
                    max_size=32 << 20,
                )
                try:
                    raw = await asyncio.wait_for(ws.recv(), self.open_timeout)
                    opened_at = loop.time()
                    silence = self._welcomed(ws, raw)
                    while True:
                        self._receive(await asyncio.wait_for(ws.recv(), silence))
                finally:
                    await self._detach(ws)
            except ConnectionClosed as e:
                if e.rcvd is not None:
                    code, reason = e.rcvd.code, e.rcvd.reason
                else:
                    code, reason = 1006, "the connection was cut"
            except (asyncio.TimeoutError, TimeoutError):
                code, reason = 4000, "heartbeat timeout" if opened_at else "connect timeout"
            except InvalidStatus as e:
                status = e.response.status_code
                hub_code, message = _refusal(bytes(e.response.body or b""))
                reason = f"{status} {hub_code}: {message}"
                if not self._ready.done():
                    self._ready.set_exception(HubError(hub_code, message, {"status": status}))
                    return
            except (OSError, InvalidHandshake, InvalidURI, ValueError) as e:
                reason = f"{type(e).__name__}: {e}"
            except Exception as e:  # a bug here must not end the client silently
                logger.exception("wshub client connection failed")
                reason = f"{type(e).__name__}: {e}"
            self._settle_all(HubError("disconnected", f"the connection closed ({code}) before the reply"))
            if self._stopping.is_set():
                return
            if not self._ready.done():
                self._ready.set_exception(HubError("connect_failed", f"{self.url}: {reason}"))
                return
            if code in FINAL_CLOSE_CODES:
                self.close_code = code
                self._done = True
                assert self._readable is not None
                self._readable.set()
                self._report("closed", code=code, reason=reason, final=True)
                return
            if opened_at is not None and loop.time() - opened_at >= self.stable_after:
                self.attempt, delay_base = 0, self.backoff
            cap = min(self.max_backoff, delay_base * 2 ** min(self.attempt - 1, 30))
            delay = cap / 2 + random.random() * cap / 2
            self._report("closed", code=code, reason=reason, final=False, retry_in=delay)
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
            except asyncio.TimeoutError:
                pass  # time for the next attempt

    def _welcomed(self, ws: ClientConnection, raw: Union[str, bytes]) -> float:
        """Takes the welcome: starts the writer, rejoins the rooms. Returns the
        silence after which the connection is given up, in seconds."""
        welcome = json.loads(raw)
        if not isinstance(welcome, dict) or welcome.get("type") != "welcome":
            raise ValueError("the first message was not a welcome")
        payload = welcome.get("payload") or {}
        epoch = payload.get("epoch")
        epoch_changed = self._resume.welcome(epoch)
        self.connection_id = payload.get("connection_id")
        self.welcome = welcome
        self.connections += 1
        self._ws = ws
        self._outbox = asyncio.Queue()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(ws, self._outbox))
        assert self._connected is not None and self._ready is not None
        self._connected.set()
        self._report("open", connection_id=self.connection_id, epoch=epoch, epoch_changed=epoch_changed)
        if self._rooms and not self._paused:
            self._rejoin()
        elif not self._ready.done():
            self._ready.set_result(None)
        timeout_ms = payload.get("heartbeat_timeout_ms")
        return timeout_ms / 1000 + 1 if isinstance(timeout_ms, (int, float)) and timeout_ms > 0 else 90.0

    async def _write_loop(self, ws: ClientConnection, outbox: "asyncio.Queue[str]") -> None:
        try:
            while True:
                await ws.send(await outbox.get())
        except (ConnectionClosed, asyncio.CancelledError):
            pass  # the reader sees the close and reconnects

    async def _detach(self, ws: ClientConnection) -> None:
        """Forgets the connection (late replies are ignored) and closes it."""
        assert self._connected is not None
        self._connected.clear()
        self._ws = None
        self._outbox = None
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
        if self.state == "open":
            self.state = "closed"
        try:
            await asyncio.wait_for(ws.close(), 3)
        except (asyncio.TimeoutError, OSError, ConnectionClosed):
            pass  # closing a broken connection: the socket is gone either way

    def _rejoin(self) -> None:
        """Joins every wanted room, resuming from the last seq delivered where there is one."""
        if not self._rooms:
            return
        _, future = self._send_request(self._resume.subscribe_message(self._rooms), keep=True)
        future.add_done_callback(self._rejoined)

    def _rejoined(self, future: "asyncio.Future[Any]") -> None:
        assert self._ready is not None
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            if not self._ready.done():
                self._ready.set_exception(error)
            else:
                self._notice(error=error)
            return
        reply = future.result()
        if reply is None:
            return  # the connection closed first; the next one rejoins
        if not self._ready.done():
            self._ready.set_result(None)
        recovered = reply.get("payload", {}).get("recovered") or {}
        lost = [room for room, ok in recovered.items() if ok is False]
        if lost:
            self._notice(history_unavailable=lost)

    # ---- messages --------------------------------------------------------

    def _receive(self, raw: Union[str, bytes]) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            return  # the hub sends only JSON objects on wshub.json
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        payload = message.get("payload") or {}
        if kind == "subscribed":
            self._resume.subscribed(payload, self._rooms)
        if kind == "error" and payload.get("code") == "history_unavailable":
            return  # the `subscribed` that follows says the same in `recovered`
        ref = message.get("ref")
        if ref is not None and ref in self._pending:
            self._settle(str(ref), message)
            return
        if kind == "error":
            self._notice(error=_hub_error(message))
            return
        if "id" in message:
            self._event(message)

    def _event(self, message: Message) -> None:
        room, seq = message.get("room"), message.get("seq")
        sequenced: Optional[tuple[str, int]] = None
        if isinstance(room, str) and isinstance(seq, int):
            sequenced = (room, seq)
            if self._resume.seen(room, seq):
                return  # delivered before a reconnect, or our own, replayed
        full = len(self._queue) >= self.queue_size
        if sequenced is not None and sequenced[0] in self._rooms and (full or self._paused):
            # Not delivered and not counted as seen: the rejoin replays it.
            self._pause()
            return
        if full:
            self.dropped += 1
            self._notice(dropped=self.dropped)
            return
        self._queue.append(message)
        assert self._readable is not None
        self._readable.set()
        if sequenced is not None:
            room_name, room_seq = sequenced
            if self._resume.tracked(room_name) or room_name in self._rooms:
                self._resume.delivered(room_name, room_seq)

    def _pause(self) -> None:
        """The queue is full: leave the rooms until the consumer catches up."""
        if self._paused:
            return
        self._paused = True
        if self._ws is not None and self._rooms:
            self._send_request({"type": "unsubscribe", "rooms": list(self._rooms)}, keep=True)

    def _settle(self, ref: str, message: Message) -> None:
        future, request, _ = self._pending.pop(ref)
        if message.get("type") == "error":
            if not future.done():
                future.set_exception(_hub_error(message))
            return
        seq = (message.get("payload") or {}).get("seq")
        if message.get("type") == "published" and isinstance(seq, int):
            self._resume.published(str(request.get("room")), seq)
        if not future.done():
            future.set_result(message)

    def _settle_all(self, error: HubError) -> None:
        """Ends every pending call: ``keep`` ones (rooms stay wanted) with None."""
        pending, self._pending = self._pending, {}
        for future, _, keep in pending.values():
            if future.done():
                continue
            if keep:
                future.set_result(None)
            else:
                future.set_exception(error)

    def _forget(self, room: str) -> None:
        self._rooms.pop(room, None)
        self._resume.forget(room)

    def _report(self, state: str, **fields: Any) -> None:
        self.state = state
        self._call_status({"state": state, "code": None, "reason": "", "attempt": self.attempt, **fields})

    def _notice(self, **fields: Any) -> None:
        if self.state == "open":
            self._call_status({"state": "open", "code": None, "reason": "", "attempt": self.attempt, **fields})

    def _call_status(self, status: Message) -> None:
        if self.on_status is None:
            return
        try:
            self.on_status(status)
        except Exception:
            logger.exception("wshub on_status callback failed")


def _hub_error(message: Message) -> HubError:
    payload = dict(message.get("payload") or {})
    code = str(payload.pop("code", "error"))
    text = str(payload.pop("message", code))
    payload["ref"] = message.get("ref")
    payload["correlation_id"] = message.get("correlation_id")
    return HubError(code, text, payload)


def _refusal(body: Optional[bytes]) -> tuple[str, str]:
    """The ``error.code`` and ``message`` of a refused upgrade's JSON body."""
    try:
        error = json.loads(body or b"{}").get("error", {})
        return str(error.get("code", "refused")), str(error.get("message", ""))
    except (ValueError, AttributeError):
        return "refused", (body or b"").decode("utf-8", "replace")[:200]
