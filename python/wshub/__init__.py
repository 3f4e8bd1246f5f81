"""wshub for Python: the hub's binary, a sidecar that runs it, an HTTP
publisher, an asyncio client that resumes, JWTs, and pytest fixtures.

>>> import wshub
>>> with wshub.Sidecar(history_size=20) as hub:              # doctest: +SKIP
...     hub.publish("scan_started", {"path": "/srv"}, room="scans")
...     wshub.Publisher(hub.url).set_health("scanner", "ok")

The wire contract is the hub's protocol reference (docs/protocol.md in the
repository); every setting name accepted by :class:`Sidecar` is one of its
settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._binary import bin_path
from .errors import HookError, HubError, HubStartError, PublishError, WshubError
from .publisher import Publisher
from .sidecar import Sidecar
from .token import mint_token

if TYPE_CHECKING:
    from .client import AsyncClient


def __getattr__(name: str) -> Any:
    # The asyncio client is the one part that needs `websockets`: imported
    # on first use, so the sidecar, the publisher and the fixtures run on
    # the standard library alone.
    if name == "AsyncClient":
        from .client import AsyncClient

        return AsyncClient
    raise AttributeError(f"module 'wshub' has no attribute {name!r}")


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        return "0+unknown"
    try:
        return version("wshub")
    except PackageNotFoundError:
        return "0+unknown"


#: The package's version, which is the hub's (``wshub --version``).
__version__: str = _version()

__all__ = [
    "AsyncClient",
    "HookError",
    "HubError",
    "HubStartError",
    "Publisher",
    "PublishError",
    "Sidecar",
    "WshubError",
    "__version__",
    "bin_path",
    "mint_token",
]
