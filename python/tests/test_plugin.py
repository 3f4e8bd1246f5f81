"""The pytest plugin, loaded through its pytest11 entry point."""

from __future__ import annotations

import pytest

from conftest import gone

INNER = '''
import os
import pytest
import wshub

PIDS = os.environ["PIDS_FILE"]


def record(*hubs):
    with open(PIDS, "a") as f:
        for hub in hubs:
            f.write(f"{hub.pid}\\n")


def test_one_hub(wshub_hub):
    assert isinstance(wshub_hub, wshub.Sidecar) and wshub_hub.running
    record(wshub_hub)


@pytest.mark.wshub(history_size=7, admin_key="k")
def test_marked_hub(wshub_hub):
    assert wshub_hub.settings["history_size"] == 7
    with pytest.raises(wshub.PublishError):
        wshub.Publisher(wshub_hub.url).publish("x", {})
    record(wshub_hub)


def test_factory(wshub_hub_factory):
    a = wshub_hub_factory()
    b = wshub_hub_factory(admin_key="other", rpc_handlers={"m": lambda p, **_: p})
    assert a.port != b.port and a.running and b.running
    record(a, b)
'''


def test_fixtures_start_and_stop_real_hubs(pytester: pytest.Pytester, tmp_path, monkeypatch) -> None:
    pids = tmp_path / "pids"
    monkeypatch.setenv("PIDS_FILE", str(pids))
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    started = [int(line) for line in pids.read_text().split()]
    assert len(started) == 4
    assert all(gone(pid) for pid in started)  # stopped at teardown, not left behind


def test_the_marker_is_registered(pytestconfig: pytest.Config) -> None:
    assert any(line.startswith("wshub(") for line in pytestconfig.getini("markers"))
