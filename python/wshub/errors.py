"""The exceptions of the package: one base class, one per way a call fails."""

from __future__ import annotations

from typing import Any, Mapping, Optional


class WshubError(Exception):
    """Base class of every exception this package raises."""


class HubStartError(WshubError):
    """The hub did not start: it exited, or printed no listening line in time.

    ``exit_code`` is the hub's exit status (2 for a bad setting, 1 for an
    address that cannot be bound) or None if it was still running;
    ``stderr`` holds the hub's last log lines, which name the cause.
    """

    def __init__(self, message: str, *, exit_code: Optional[int] = None, stderr: str = "") -> None:
        super().__init__(message if not stderr else f"{message}\n{stderr}")
        self.exit_code = exit_code
        self.stderr = stderr


class PublishError(WshubError):
    """An HTTP route refused a call (or could not be reached).

    ``status`` is the HTTP status (0 when no answer came), ``code`` the
    hub's ``error.code`` (``unauthenticated``, ``reserved_type``,
    ``invalid_message``, …; ``unreachable`` when no answer came) and
    ``message`` its explanation.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class HubError(WshubError):
    """An ``error`` reply on a WebSocket, or a request the client could not finish.

    ``code`` is the hub's ``error.code`` (``forbidden``, ``invalid_message``,
    an app's code from a hook refusal, ``hook_unavailable``, …) or one of
    the client's own: ``timeout`` (no reply in time), ``disconnected`` (the
    connection closed before the reply), ``closed`` (the client was
    closed) and ``connect_failed`` (the first connection could not be
    opened). ``details`` holds the rest of the hub's error payload (such as
    ``room`` or ``oldest_seq``) and the reply's ``ref`` and
    ``correlation_id``.
    """

    LOCAL_CODES = frozenset({"timeout", "disconnected", "closed", "connect_failed"})

    def __init__(self, code: str, message: str, details: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    @property
    def from_hub(self) -> bool:
        """Whether the hub sent this error (rather than the client making it)."""
        return self.code not in self.LOCAL_CODES


class HookError(WshubError):
    """Raised by a hook handler to refuse: the client gets ``code`` and ``message``.

    ``code`` is 1 to 64 characters of ``a-z 0-9 _`` (the hub turns any other
    into ``forbidden``); ``status`` is the HTTP status of the refusal, a
    4xx (default 403), as a hook served over HTTP would answer.
    """

    def __init__(self, code: str, message: str = "", *, status: int = 403) -> None:
        if not 400 <= status <= 499:
            raise ValueError(f"a hook refusal is a 4xx status, not {status}")
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message or code
        self.status = status

    def body(self) -> dict[str, Any]:
        """The refusal as the hook protocol carries it."""
        return {"error": {"code": self.code, "message": self.message}}
