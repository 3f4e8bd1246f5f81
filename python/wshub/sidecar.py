"""A hub as a child process: ``wshub --stdin-events``, its listening line,
events written to its stdin, and its stdio hooks answered (PROTOCOL.md
sections 8 and 10)."""

from __future__ import annotations

import collections
import datetime
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any, Callable, Deque, Dict, Mapping, Optional, Union

from ._binary import bin_path
from .errors import HookError, HubStartError, WshubError
from .publisher import Publisher
from .token import mint_token

if TYPE_CHECKING:
    from .client import AsyncClient

logger = logging.getLogger("wshub")

#: An rpc handler: ``fn(params, *, user, connection_id)`` returns the result
#: (any JSON value) or raises :class:`HookError` to refuse.
RpcHandler = Callable[..., Any]
#: A hook handler: takes the hook's body (a dict) and returns the answer
#: object (or None for ``{}``), or raises :class:`HookError` to refuse.
HookHandler = Callable[[Dict[str, Any]], Optional[Mapping[str, Any]]]

#: Settings passed in the environment rather than as flags, so that other
#: users of the machine cannot read them in ``ps``.
SECRET_SETTINGS = frozenset({"admin_key", "jwt_secret", "hook_secret", "redis_url"})
HOOKS = ("connect", "subscribe", "publish", "rpc", "disconnect")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_LOG_TAIL = 200


class _Stderr:
    """The default log destination: whatever ``sys.stderr`` is when a line
    arrives (so pytest's capture sees the hub's logs)."""

    def __repr__(self) -> str:
        return "sys.stderr"


STDERR: Any = _Stderr()


def format_setting(value: Any) -> str:
    """A setting's value as the hub reads it from a flag or the environment:
    lists comma-separated, durations in seconds, booleans as ``true``/``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.timedelta):
        return repr(value.total_seconds())
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(str(v) for v in value)
    return os.fspath(value) if isinstance(value, os.PathLike) else str(value)


class Sidecar:
    """A hub run by this process: started on ``127.0.0.1:0`` with the given
    settings, stopped on exit, and stopped as well if this process dies
    (its stdin closes, and it watches its parent).

    ``settings`` use the protocol's names (``history_size=20``,
    ``admin_key="k"``, ``store="/var/lib/app/hub"``, ``allowed_origins=[…]``):
    each becomes its flag, except secrets (``admin_key``, ``jwt_secret``,
    ``hook_secret``, ``redis_url``), which go in the child's environment as
    ``WSHUB_<NAME>``. A value of None leaves the setting out; lists are
    comma-separated, a ``timedelta`` is seconds. An unknown name or a bad
    value makes the hub exit 2, raised as :class:`HubStartError` with the
    hub's message.

    ``rpc_handlers`` maps method names to ``fn(params, *, user,
    connection_id)``, served over the stdio hook (``rpc_hook=stdio``): the
    return value is the ``rpc_result``; raising :class:`HookError` refuses
    with its code; an unknown method is refused with ``unknown_method``;
    any other exception is logged and the client gets ``hook_unavailable``.
    ``hooks`` does the same for the other hooks by name (``"connect"``,
    ``"subscribe"``, ``"publish"``, ``"disconnect"``): each handler gets the
    hook's body and returns the answer object. Every handler runs on a
    thread of its own, so a slow one never holds back the others; the hub
    stops waiting for it after ``hook_timeout``.

    Once started, :attr:`addr` (``127.0.0.1:41234``), :attr:`url`,
    :attr:`ws_url`, :attr:`epoch` and :attr:`node` come from the hub's
    listening line (``node`` is None from a hub that does not print one);
    :attr:`pid`, :attr:`running` and :attr:`returncode` describe the process.

    ``binary`` is the hub to run (default: ``$WSHUB_BIN`` or the bundled
    :func:`bin_path`); ``log_level`` sets ``WSHUB_LOG``; the hub's JSON
    log lines go to ``log_file`` (default ``sys.stderr``; None drops them)
    and the last 200 are kept in :attr:`logs`.

    >>> with Sidecar(history_size=20) as hub:  # doctest: +SKIP
    ...     hub.publish("scan_started", {"path": "/srv"}, room="scans")
    ...     print(hub.ws_url)
    ws://127.0.0.1:41234/ws
    """

    def __init__(
        self,
        *,
        binary: Optional[str] = None,
        rpc_handlers: Optional[Mapping[str, RpcHandler]] = None,
        hooks: Optional[Mapping[str, HookHandler]] = None,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        log_level: Optional[str] = None,
        log_file: Optional[IO[str]] = STDERR,
        env: Optional[Mapping[str, str]] = None,
        **settings: Any,
    ) -> None:
        self.binary = binary or os.environ.get("WSHUB_BIN") or bin_path()
        self.rpc_handlers: dict[str, RpcHandler] = dict(rpc_handlers or {})
        self.hooks: dict[str, HookHandler] = dict(hooks or {})
        for name in self.hooks:
            if name not in HOOKS:
                raise ValueError(f"no hook {name!r}; hooks are {', '.join(HOOKS)}")
        if "rpc" in self.hooks and self.rpc_handlers:
            raise ValueError("give rpc_handlers or hooks['rpc'], not both")
        for name in settings:
            if not _NAME.match(name):
                raise ValueError(f"{name!r} is not a setting name (use the protocol's, e.g. history_size)")
        self.settings: dict[str, Any] = {k: v for k, v in settings.items() if v is not None}
        served = set(self.hooks) | ({"rpc"} if self.rpc_handlers else set())
        for hook in served:
            key = f"{hook}_hook"
            if self.settings.get(key, "stdio") != "stdio":
                raise ValueError(f"{key} is {self.settings[key]!r}, but a handler for it was given")
            self.settings[key] = "stdio"
        self.settings.setdefault("bind", "127.0.0.1:0")
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.log_level = log_level
        self.log_file = log_file
        self.extra_env = dict(env or {})

        self.addr: str = ""
        self.epoch: str = ""
        self.node: Optional[str] = None
        self.listening: dict[str, Any] = {}
        self._logs: Deque[str] = collections.deque(maxlen=_LOG_TAIL)
        self._process: Optional[subprocess.Popen[str]] = None
        self._stdin_lock = threading.Lock()
        self._started = threading.Event()
        self._threads: list[threading.Thread] = []
        self._publisher: Optional[Publisher] = None

    # ---- lifecycle -----------------------------------------------------

    def __enter__(self) -> "Sidecar":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid} at {self.addr}" if self.running else "stopped"
        return f"<wshub.Sidecar {state}>"

    def command(self) -> list[str]:
        """The command line the hub is started with (secrets are not on it)."""
        args = [self.binary, "serve", "--stdin-events"]
        for name, value in self.settings.items():
            if name not in SECRET_SETTINGS:
                args += ["--" + name.replace("_", "-"), format_setting(value)]
        return args

    def start(self) -> "Sidecar":
        """Starts the hub and waits (up to ``start_timeout``) for its listening
        line; raises :class:`HubStartError` if it exits or stays silent."""
        if self._process is not None:
            raise WshubError("this Sidecar was started already")
        env = dict(os.environ)
        env.update(self.extra_env)
        for name in SECRET_SETTINGS & set(self.settings):
            env["WSHUB_" + name.upper()] = format_setting(self.settings[name])
        if self.log_level is not None:
            env["WSHUB_LOG"] = self.log_level
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            encoding="utf-8",
            bufsize=1,
            # Terminal signals (Ctrl-C) go to this process, which then stops
            # the hub; the hub's lifetime is this process's business.
            start_new_session=True,
        )
        for target, name in ((self._read_stdout, "stdout"), (self._read_stderr, "stderr")):
            thread = threading.Thread(target=target, name=f"wshub-{name}-{self._process.pid}", daemon=True)
            thread.start()
            self._threads.append(thread)
        deadline = time.monotonic() + self.start_timeout
        while not self._started.wait(0.05):
            code = self._process.poll()
            if code is not None or time.monotonic() > deadline:
                if code is None:
                    self._kill()
                self._threads[1].join(1.0)  # the last log lines name the cause
                raise HubStartError(
                    f"the hub exited with status {code} before listening"
                    if code is not None
                    else f"the hub printed no listening line within {self.start_timeout} s",
                    exit_code=code,
                    stderr="\n".join(self._logs),
                )
        return self

    def stop(self) -> Optional[int]:
        """Stops the hub: closes its stdin, so it drains (close 1001 to every
        connection, at most ``shutdown_grace``) and exits; after
        ``stop_timeout`` it is killed. Returns its exit status. Idempotent."""
        process = self._process
        if process is None:
            return None
        if self._publisher is not None:
            self._publisher.close()
        with self._stdin_lock:
            try:
                if process.stdin and not process.stdin.closed:
                    process.stdin.close()
            except OSError:
                pass  # the hub has gone already: nothing left to tell it
        try:
            process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            self._kill()
        for thread in self._threads:
            thread.join(2.0)
        return process.returncode

    def _kill(self) -> None:
        assert self._process is not None
        self._process.kill()
        try:
            self._process.wait(5.0)
        except subprocess.TimeoutExpired:
            pass  # unkillable (stopped in a debugger?): nothing more to do

    def wait(self, timeout: Optional[float] = None) -> int:
        """Waits for the hub to exit on its own and returns its status."""
        if self._process is None:
            raise WshubError("the hub was not started")
        return self._process.wait(timeout)

    # ---- what the hub said ---------------------------------------------

    @property
    def pid(self) -> Optional[int]:
        """The hub's process ID."""
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        """Whether the hub process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        """The hub's exit status, or None while it runs."""
        return self._process.poll() if self._process else None

    @property
    def host(self) -> str:
        """The host of :attr:`addr`, unbracketed; an unspecified address is loopback."""
        host = self.addr.rsplit(":", 1)[0].strip("[]")
        return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)

    @property
    def port(self) -> int:
        """The port the hub listens on."""
        return int(self.addr.rsplit(":", 1)[1])

    @property
    def url(self) -> str:
        """``http://host:port`` of the hub."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """``ws://host:port/ws`` of the hub."""
        return "ws" + self.url[len("http") :] + "/ws"

    @property
    def logs(self) -> list[str]:
        """The hub's last log lines (JSON objects, one a line), oldest first."""
        return list(self._logs)

    # ---- talking to it ---------------------------------------------------

    def publish(
        self,
        type: str,
        payload: Optional[Mapping[str, Any]] = None,
        *,
        room: Optional[str] = None,
        user: Optional[str] = None,
        idempotency_key: Optional[str] = None,
    ) -> None:
        """Publishes an event by writing one line to the hub's stdin: to
        ``room``'s subscribers, to ``user``'s connections, or (neither) to every
        connection. Returns once the line is written: the hub publishes it
        soon after, in the order written (but in no set order with HTTP or
        WebSocket calls made meanwhile), and logs and skips a line it
        refuses. Use :meth:`publisher` for an answer, with the event's seq,
        that comes once the event is queued to every recipient."""
        if not isinstance(type, str) or not type:
            raise ValueError("type must be a non-empty string")
        if room is not None and user is not None:
            raise ValueError("give room or user, not both")
        line: dict[str, Any] = {"type": type, "payload": dict(payload or {})}
        if room is not None:
            line["room"] = room
        if user is not None:
            line["user"] = user
        if idempotency_key is not None:
            line["idempotency_key"] = idempotency_key
        self._write(line)

    def publisher(self, *, timeout: float = 5.0) -> Publisher:
        """A :class:`Publisher` for this hub, with its ``admin_key`` (or an admin
        token minted with its ``jwt_secret``); closed when the hub stops."""
        if self._publisher is None:
            key = self.settings.get("admin_key")
            token = None
            if key is None and self.settings.get("jwt_secret"):
                token = self.token("wshub-sidecar", admin=True, ttl=86400)
            self._publisher = Publisher(self.url, key=key, token=token, timeout=timeout)
        return self._publisher

    def token(self, sub: str, **claims: Any) -> str:
        """A JWT for this hub's ``jwt_secret``: :func:`mint_token` with it."""
        secret = self.settings.get("jwt_secret")
        if not secret:
            raise WshubError("this hub has no jwt_secret")
        return mint_token(str(secret), sub, **claims)

    def client(self, *, rooms: Any = (), token: Any = None, **options: Any) -> "AsyncClient":
        """An :class:`AsyncClient` of this hub (use it with ``async with``)."""
        from .client import AsyncClient

        return AsyncClient(self.ws_url, rooms=rooms, token=token, **options)

    def _write(self, message: Mapping[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":")) + "\n"
        with self._stdin_lock:
            process = self._process
            if process is None or process.stdin is None or process.stdin.closed:
                raise WshubError("the hub is not running")
            try:
                process.stdin.write(line)
                process.stdin.flush()
            except (BrokenPipeError, ValueError, OSError) as e:
                raise WshubError(f"the hub has stopped (status {process.poll()})") from e

    # ---- reader threads ---------------------------------------------------

    def _read_stdout(self) -> None:
        """The hub's stdout: the listening line first, then stdio hook requests."""
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if "hook" in message and "id" in message:
                # A hook request. Not told by `"event": "hook"` alone: the
                # body's fields follow it on the line, and the publish
                # hook's body has an `event` of its own (the event's type).
                threading.Thread(
                    target=self._answer, args=(message,), name="wshub-hook", daemon=True
                ).start()
            elif message.get("event") == "listening" and not self._started.is_set():
                self.listening = message
                self.addr = str(message.get("addr", ""))
                self.epoch = str(message.get("epoch", ""))
                self.node = message.get("node")
                self._started.set()

    def _read_stderr(self) -> None:
        """The hub's log lines: kept (the last 200) and passed on."""
        assert self._process is not None and self._process.stderr is not None
        for line in self._process.stderr:
            line = line.rstrip("\n")
            self._logs.append(line)
            out = sys.stderr if self.log_file is STDERR else self.log_file
            if out is not None:
                try:
                    out.write(line + "\n")
                except (OSError, ValueError):
                    pass  # the destination is closed; the tail is still kept

    def _answer(self, request: Dict[str, Any]) -> None:
        """Answers one stdio hook request, as an HTTP hook would: a status and a body."""
        status, body = self._handle(request)
        try:
            json.dumps(body)
        except (TypeError, ValueError) as e:
            logger.error("wshub %s hook answer is not JSON: %s", request.get("hook"), e)
            status, body = 500, {}
        try:
            self._write({"hook_reply": request.get("id"), "status": status, "body": body})
        except WshubError:
            pass  # the hub has gone; nobody is waiting for the answer

    def _handle(self, request: Dict[str, Any]) -> tuple[int, Any]:
        hook = request.get("hook")
        try:
            if hook == "rpc" and "rpc" not in self.hooks:
                method = request.get("method")
                handler = self.rpc_handlers.get(method)  # type: ignore[arg-type]
                if handler is None:
                    raise HookError("unknown_method", f"no method {method!r}", status=404)
                result = handler(
                    request.get("params"),
                    user=request.get("user"),
                    connection_id=request.get("connection_id"),
                )
                return 200, {"result": result}
            handler = self.hooks.get(str(hook))
            if handler is None:
                if hook == "disconnect":
                    return 200, {}
                logger.warning("wshub asked the %s hook over stdio, which has no handler", hook)
                return 503, {}
            answer = handler(request)
            return 200, dict(answer or {})
        except HookError as e:
            return e.status, e.body()
        except Exception:
            logger.exception("wshub %s hook handler failed", hook)
            return 500, {}
