"""A blocking HTTP client for the publisher and admin routes (PROTOCOL.md section 1)."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from typing import Any, Mapping, Optional, cast

from .errors import PublishError

_STATUSES = ("ok", "degraded", "down")


class Publisher:
    """Publishes events and health changes to a hub over HTTP, on one
    keep-alive connection.

    ``url`` is the hub's ``http://host:port``; ``key`` its ``admin_key``, or
    ``token`` a JWT with ``"admin": true`` (either is sent as
    ``Authorization: Bearer``; neither is needed for a loopback hub without
    ``admin_key`` and ``jwt_secret``); ``timeout`` bounds every call, in
    seconds. A refusal raises :class:`PublishError`. Safe to share between
    threads (calls take turns on the connection).

    >>> with Publisher("http://127.0.0.1:8000") as hub:  # doctest: +SKIP
    ...     hub.publish("scan_started", {"path": "/srv"}, room="scans")
    {'id': '…', 'seq': 1, 'recipients': 0, 'correlation_id': '…'}
    """

    def __init__(
        self,
        url: str,
        *,
        key: Optional[str] = None,
        token: Optional[str] = None,
        timeout: float = 5.0,
    ) -> None:
        if key is not None and token is not None:
            raise ValueError("give key or token, not both")
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"url must be http://host:port, not {url!r}")
        self.url = f"http://{parsed.netloc}"
        self._host = parsed.hostname
        self._port = parsed.port or 80
        self._netloc = parsed.netloc
        self._bearer = key if key is not None else token
        self.timeout = timeout
        self._lock = threading.Lock()
        self._conn: Optional[http.client.HTTPConnection] = None

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Publisher({self.url!r})"

    def close(self) -> None:
        """Closes the keep-alive connection (a later call opens another)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def publish(
        self,
        type: str,
        payload: Optional[Mapping[str, Any]] = None,
        *,
        room: Optional[str] = None,
        user: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        correlation_id: Optional[str] = None,
    ) -> dict[str, Any]:
        """Publishes one event (``POST /api/events``) and returns the 202 body,
        ``{"id", "seq", "recipients", "correlation_id"}``.

        With ``room``, to its subscribers with the room's next seq; with
        ``user``, to that user's connections; with neither, to every
        connection. A repeated ``idempotency_key`` within 5 minutes publishes
        nothing and returns the first reply.
        """
        body: dict[str, Any] = {"type": type, "payload": dict(payload or {})}
        if room is not None:
            body["room"] = room
        if user is not None:
            body["user"] = user
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        return cast("dict[str, Any]", self.request("POST", "/api/events", body, correlation_id=correlation_id))

    def set_health(
        self, component: str, status: str, detail: Optional[str] = None
    ) -> dict[str, Any]:
        """Sets a health component (``PUT /api/health/{component}``) and returns
        its state, ``{"component", "status", "detail", "since"}``; a change is
        broadcast to every connection as ``health_status``. ``status`` is
        ``ok``, ``degraded`` or ``down``."""
        if status not in _STATUSES:
            raise ValueError(f"status must be one of {', '.join(_STATUSES)}, not {status!r}")
        body: dict[str, Any] = {"status": status}
        if detail is not None:
            body["detail"] = detail
        path = "/api/health/" + urllib.parse.quote(component, safe="")
        return cast("dict[str, Any]", self.request("PUT", path, body))

    def health(self) -> dict[str, Any]:
        """``GET /health``: the overall status, components, connections, uptime
        and version (also when the status is ``down``, answered with 503)."""
        return cast("dict[str, Any]", self.request("GET", "/health", ok=(200, 503)))

    def connections(self, *, user: Optional[str] = None) -> list[dict[str, Any]]:
        """``GET /api/connections``: every connection's metadata, oldest first."""
        path = "/api/connections"
        if user is not None:
            path += "?user=" + urllib.parse.quote(user, safe="")
        return cast("list[dict[str, Any]]", self.request("GET", path)["connections"])

    def disconnect(self, connection_id: str) -> None:
        """``DELETE /api/connections/{id}``: closes that connection with 4003
        (final: a client does not reconnect after it)."""
        self.request("DELETE", "/api/connections/" + urllib.parse.quote(connection_id, safe=""))

    def rooms(self) -> list[dict[str, Any]]:
        """``GET /api/rooms``: ``[{"room", "subscribers", "last_seq"}]``, sorted by name."""
        return cast("list[dict[str, Any]]", self.request("GET", "/api/rooms")["rooms"])

    def room(self, room: str) -> dict[str, Any]:
        """``GET /api/rooms/{room}``: the room's object with its ``members``."""
        return cast("dict[str, Any]", self.request("GET", "/api/rooms/" + urllib.parse.quote(room, safe="")))

    def metrics(self) -> str:
        """``GET /metrics``: the Prometheus text."""
        return cast("str", self.request("GET", "/metrics"))

    def request(
        self,
        method: str,
        path: str,
        body: Optional[Mapping[str, Any]] = None,
        *,
        correlation_id: Optional[str] = None,
        ok: tuple[int, ...] = (200, 202, 204),
    ) -> Any:
        """Any route: returns the decoded JSON answer (text for non-JSON, None
        for 204), or raises :class:`PublishError` for a status not in ``ok``."""
        headers = {"Host": self._netloc, "Accept": "application/json"}
        data: Optional[bytes] = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        if self._bearer:
            headers["Authorization"] = f"Bearer {self._bearer}"
        if correlation_id is not None:
            headers["X-Correlation-ID"] = correlation_id
        with self._lock:
            status, content_type, raw = self._exchange(method, path, data, headers)
        answer: Any
        if status == 204 or not raw:
            answer = None
        elif content_type.startswith("application/json"):
            answer = json.loads(raw)
        else:
            answer = raw.decode("utf-8", "replace")
        if status in ok:
            return answer
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        raise PublishError(
            status, str(error.get("code", "http_error")), str(error.get("message", answer or ""))
        )

    def _exchange(
        self, method: str, path: str, data: Optional[bytes], headers: dict[str, str]
    ) -> tuple[int, str, bytes]:
        """One request and its answer. A kept-alive connection the hub has
        closed meanwhile (it closes idle ones after `handshake_timeout`) fails
        before anything is sent to the hub's reader, so it is retried once on
        a fresh connection; a fresh one that fails is an error."""
        for attempt in (1, 2):
            reused = self._conn is not None
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
            conn = self._conn
            try:
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                if response.getheader("Connection", "").lower() == "close" or response.will_close:
                    conn.close()
                    self._conn = None
                return response.status, response.getheader("Content-Type", ""), raw
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                conn.close()
                self._conn = None
                if reused and attempt == 1:
                    continue
                raise PublishError(0, "unreachable", f"{method} {path}: {e}") from e
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                self._conn = None
                raise PublishError(0, "unreachable", f"{method} {path}: {e}") from e
        raise AssertionError("unreachable")
