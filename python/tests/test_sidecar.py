"""wshub.Sidecar: starting, settings, stdin publishes, stopping, and the
hub dying with its parent."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import wshub
from conftest import eventually, gone, run, take


def test_attributes_come_from_the_listening_line(wshub_hub: wshub.Sidecar) -> None:
    host, port = wshub_hub.addr.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    assert wshub_hub.port == int(port)
    assert wshub_hub.url == f"http://127.0.0.1:{port}"
    assert wshub_hub.ws_url == f"ws://127.0.0.1:{port}/ws"
    assert wshub_hub.listening["event"] == "listening"
    assert wshub_hub.node == wshub_hub.listening.get("node")
    assert wshub_hub.running and wshub_hub.pid

    async def welcome() -> dict:
        async with wshub.AsyncClient(wshub_hub.ws_url) as client:
            assert client.welcome is not None
            return client.welcome["payload"]

    payload = run(welcome())
    assert payload["epoch"] == wshub_hub.epoch


def test_publish_writes_a_stdin_line_to_a_room_a_user_and_everyone(wshub_hub: wshub.Sidecar) -> None:
    async def scenario() -> list[dict]:
        async with wshub.AsyncClient(wshub_hub.ws_url, rooms=["scans"]) as client:
            wshub_hub.publish("scan_started", {"path": "/srv"}, room="scans")
            wshub_hub.publish("notice", {"to": "all"})
            wshub_hub.publish("scan_completed", {"files": 3}, room="scans")
            return await take(client, 3)

    events = run(scenario())
    assert [(e["type"], e["room"], e.get("seq")) for e in events] == [
        ("scan_started", "scans", 1),
        ("notice", None, None),
        ("scan_completed", "scans", 2),
    ]
    assert events[0]["payload"] == {"path": "/srv"}
    with pytest.raises(ValueError):
        wshub_hub.publish("x", {}, room="a", user="b")


def test_settings_map_to_the_protocol_names(wshub_hub_factory) -> None:
    hub = wshub_hub_factory(
        max_message_bytes=4096,
        heartbeat_interval=datetime.timedelta(seconds=2),
        heartbeat_timeout="7s",
        allowed_origins=["http://app.localhost:8001", "http://localhost:8001"],
        history_size=3,
        admin_key="sidecar-key",
        shutdown_grace=None,  # None leaves a setting out
    )
    command = hub.command()
    assert "--max-message-bytes" in command and "4096" in command
    assert "--allowed-origins" in command
    assert "http://app.localhost:8001,http://localhost:8001" in command
    assert "--shutdown-grace" not in command
    # Secrets go in the environment, never on the command line (`ps` shows it).
    assert "sidecar-key" not in " ".join(command)

    async def welcome() -> dict:
        async with wshub.AsyncClient(hub.ws_url) as client:
            assert client.welcome is not None
            return client.welcome["payload"]

    payload = run(welcome())
    assert payload["max_message_bytes"] == 4096
    assert payload["heartbeat_interval_ms"] == 2000
    assert payload["heartbeat_timeout_ms"] == 7000
    with pytest.raises(wshub.PublishError) as refused:
        wshub.Publisher(hub.url).publish("x", {}, room="r")
    assert refused.value.status == 401 and refused.value.code == "unauthenticated"
    assert hub.publisher().publish("x", {}, room="r")["seq"] == 1


def test_a_bad_setting_is_a_start_error_naming_it(wshub_hub_factory) -> None:
    with pytest.raises(wshub.HubStartError) as bad:
        wshub_hub_factory(history_size="lots")
    assert bad.value.exit_code == 2
    assert "history_size" in str(bad.value)
    with pytest.raises(wshub.HubStartError) as unknown:
        wshub_hub_factory(no_such_setting=1)
    assert unknown.value.exit_code == 2
    with pytest.raises(ValueError):
        wshub.Sidecar(**{"history-size": 3})


def test_an_address_in_use_is_a_start_error(wshub_hub: wshub.Sidecar, wshub_hub_factory) -> None:
    with pytest.raises(wshub.HubStartError) as taken:
        wshub_hub_factory(bind=wshub_hub.addr)
    assert taken.value.exit_code == 1


def test_stop_drains_and_exits_zero_and_clients_see_1001(wshub_hub_factory) -> None:
    hub = wshub_hub_factory()
    statuses: list[dict] = []

    async def scenario() -> None:
        async with wshub.AsyncClient(hub.ws_url, on_status=statuses.append, backoff=30) as client:
            assert client.state == "open"
            code = await asyncio_to_thread(hub.stop)
            assert code == 0
            while not any(s["state"] == "closed" for s in statuses):
                await asyncio.sleep(0.01)  # the reader takes the close frame (bounded by run())

    run(scenario())
    assert not hub.running and hub.returncode == 0
    closed = [s for s in statuses if s["state"] == "closed"]
    assert closed and closed[0]["code"] == 1001
    assert hub.stop() == 0  # idempotent
    with pytest.raises(wshub.WshubError):
        hub.publish("late", {})


def test_logs_are_kept_and_passed_on(wshub_hub_factory, tmp_path) -> None:
    log = (tmp_path / "hub.log").open("w")
    hub = wshub_hub_factory(log_file=log, log_level="debug")
    hub.stop()
    log.close()
    assert any("hub started" in line for line in hub.logs)
    written = (tmp_path / "hub.log").read_text().splitlines()
    assert written and all(json.loads(line)["level"] for line in written)


PARENT = textwrap.dedent(
    """
    import sys, time, wshub
    hub = wshub.Sidecar(binary=sys.argv[1]).start()
    print(hub.pid, hub.port, flush=True)
    time.sleep(600)
    """
)


@pytest.mark.parametrize("how", ["SIGKILL", "exit without stop"])
def test_the_hub_dies_with_its_parent(how: str) -> None:
    script = PARENT if how == "SIGKILL" else PARENT.replace("time.sleep(600)", "import os; os._exit(0)")
    parent = subprocess.Popen(
        [sys.executable, "-c", script, wshub.bin_path()], stdout=subprocess.PIPE, text=True
    )
    try:
        line = parent.stdout.readline()  # type: ignore[union-attr]
        hub_pid, port = (int(x) for x in line.split())
        assert not gone(hub_pid)
        if how == "SIGKILL":
            os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        eventually(lambda: gone(hub_pid), timeout=10, what="the orphaned hub exiting")
        with pytest.raises(OSError):
            import socket

            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(5)


async def asyncio_to_thread(fn):  # asyncio.to_thread, spelt out
    return await asyncio.get_running_loop().run_in_executor(None, fn)


def test_python_dash_m_runs_the_binary() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "wshub", "--version"], capture_output=True, text=True, timeout=10
    )
    assert out.returncode == 0
    assert out.stdout.strip() == f"wshub {wshub.__version__}"
    assert os.path.isfile(wshub.bin_path()) and os.access(wshub.bin_path(), os.X_OK)
    token = subprocess.run(
        [sys.executable, "-m", "wshub", "token", "--sub", "a", "--secret", "s"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert token.returncode == 0 and token.stdout.count(".") == 2
    start = time.monotonic()
    bad = subprocess.run(
        [sys.executable, "-m", "wshub", "--history-size", "x"], capture_output=True, text=True, timeout=10
    )
    assert bad.returncode == 2 and time.monotonic() - start < 10
