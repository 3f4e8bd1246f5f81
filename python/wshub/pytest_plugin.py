"""pytest fixtures for testing an app against real hubs, registered through
the ``pytest11`` entry point (nothing to import or configure).

``wshub_hub`` is a started :class:`~wshub.Sidecar`, one per test, with the
settings of the test's ``@pytest.mark.wshub(...)`` marker if it has one;
``wshub_hub_factory(**settings)`` starts another, as many as a test needs,
all stopped at teardown. ``--wshub-binary PATH`` (or ``$WSHUB_BIN``) runs
another build of the hub.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

import pytest

from .sidecar import Sidecar

HubFactory = Callable[..., Sidecar]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Adds ``--wshub-binary``."""
    parser.addoption(
        "--wshub-binary",
        default=None,
        help="the wshub binary the fixtures run (default: $WSHUB_BIN, or the one installed with the package)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Registers the ``wshub`` marker."""
    config.addinivalue_line(
        "markers", "wshub(**settings): settings of the test's wshub_hub (e.g. history_size=5)"
    )


def _binary(config: pytest.Config) -> Optional[str]:
    value = config.getoption("--wshub-binary", default=None)
    return str(value) if value else None


@pytest.fixture
def wshub_hub_factory(request: pytest.FixtureRequest) -> Iterator[HubFactory]:
    """A function that starts a hub with the given settings (and the
    :class:`~wshub.Sidecar` keywords: ``rpc_handlers``, ``hooks``, …) and
    returns it started; every hub it made is stopped at teardown."""
    hubs: list[Sidecar] = []
    binary = _binary(request.config)

    def start(**settings: Any) -> Sidecar:
        settings.setdefault("binary", binary)
        hub = Sidecar(**settings)
        hub.start()
        hubs.append(hub)
        return hub

    yield start
    for hub in reversed(hubs):
        hub.stop()


@pytest.fixture
def wshub_hub(request: pytest.FixtureRequest, wshub_hub_factory: HubFactory) -> Sidecar:
    """A started hub on a free loopback port, stopped after the test. A
    ``@pytest.mark.wshub(history_size=5, admin_key="k", …)`` marker gives
    its settings."""
    marker = request.node.get_closest_marker("wshub")
    settings = dict(marker.kwargs) if marker else {}
    return wshub_hub_factory(**settings)
