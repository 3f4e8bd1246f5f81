"""wshub.AsyncClient against real hubs: events, calls, refusals, and the
resume across cuts, restarts and a slow consumer."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

import wshub
from conftest import Proxy, free_port, run, take


def test_iterates_events_of_its_rooms_in_order(wshub_hub: wshub.Sidecar) -> None:
    publisher = wshub_hub.publisher()

    async def scenario() -> list[dict]:
        async with wshub.AsyncClient(wshub_hub.ws_url, rooms=["scans"]) as client:
            assert client.rooms == ["scans"] and client.state == "open"
            for n in range(5):
                publisher.publish("scan_progress", {"n": n}, room="scans")
            publisher.publish("elsewhere", {}, room="other")
            got = []
            async for event in client:
                got.append(event)
                if len(got) == 5:
                    break
            assert client.positions == {"scans": 5}
            got.append(await anext_(client, publisher))
            return got

    events = run(scenario())
    assert [e["payload"]["n"] for e in events[:5]] == [0, 1, 2, 3, 4]
    assert [e["seq"] for e in events[:5]] == [1, 2, 3, 4, 5]
    assert events[5]["type"] == "health_status"


async def anext_(client: wshub.AsyncClient, publisher: wshub.Publisher) -> dict:
    """A health change reaches every connection, whatever its rooms."""
    publisher.set_health("scanner", "degraded", "disk 91% full")
    if sys.version_info >= (3, 10):
        return await asyncio.wait_for(anext(client), 5)  # noqa: F821 (a builtin since 3.10)
    return await asyncio.wait_for(client.__anext__(), 5)


def test_subscribe_unsubscribe_publish_presence(wshub_hub: wshub.Sidecar) -> None:
    async def scenario() -> None:
        async with wshub.AsyncClient(wshub_hub.ws_url) as a, wshub.AsyncClient(wshub_hub.ws_url) as b:
            joined = await a.subscribe("chat", "lobby")
            assert joined is not None and sorted(joined["rooms"]) == ["chat", "lobby"]
            assert joined["positions"] == {"chat": 0, "lobby": 0}
            await b.subscribe("chat")
            sent = await b.publish("chat", "message", {"text": "hi"})
            assert sent["seq"] == 1 and sent["recipients"] == 1
            event = await a.next(5)
            assert (event["type"], event["payload"], event["seq"]) == ("message", {"text": "hi"}, 1)
            members = await a.presence("chat")
            assert {m["connection_id"] for m in members} == {a.connection_id, b.connection_id}
            left = await a.unsubscribe("chat")
            assert left == {"rooms": ["chat"]}
            assert a.rooms == ["lobby"]
            await b.publish("chat", "message", {"text": "gone"})
            await b.publish("lobby", "message", {"text": "lobby"})
            assert (await a.next(5))["payload"] == {"text": "lobby"}
            # The sender never gets its own event back.
            await b.ping()
            assert b.pending_events == 0

    run(scenario())


def test_refusals_raise_hub_errors(wshub_hub_factory) -> None:
    hub = wshub_hub_factory(jwt_secret="s3cret")

    async def scenario() -> None:
        token = hub.token("alice", rooms=["project:*"], publish=["project:1"])
        async with wshub.AsyncClient(hub.ws_url, token=token) as client:
            assert client.welcome is not None and client.welcome["payload"]["user"] == "alice"
            with pytest.raises(wshub.HubError) as forbidden:
                await client.subscribe("secret")
            assert forbidden.value.code == "forbidden" and forbidden.value.from_hub
            assert forbidden.value.details["room"] == "secret"
            assert client.rooms == []
            with pytest.raises(wshub.HubError) as reserved:
                await client.publish("project:1", "welcome", {})
            assert reserved.value.code == "reserved_type"
            with pytest.raises(wshub.HubError) as no_hook:
                await client.rpc("cart.add", {"sku": 1})
            assert no_hook.value.code == "hook_unavailable"
        # A refused upgrade is raised by `async with`, with the hub's code.
        with pytest.raises(wshub.HubError) as anonymous:
            async with wshub.AsyncClient(hub.ws_url):
                pass
        assert anonymous.value.code == "unauthenticated"
        expired = wshub.mint_token("s3cret", "bob", ttl=-10)
        with pytest.raises(wshub.HubError) as late:
            async with wshub.AsyncClient(hub.ws_url, token=expired):
                pass
        assert late.value.code == "token_expired"
        # A subscribe refused at connect time is raised too.
        with pytest.raises(wshub.HubError) as room:
            async with wshub.AsyncClient(hub.ws_url, token=token, rooms=["secret"]):
                pass
        assert room.value.code == "forbidden"

    run(scenario())


def test_a_hub_that_is_not_there_is_connect_failed() -> None:
    async def scenario() -> None:
        with pytest.raises(wshub.HubError) as failed:
            async with wshub.AsyncClient(f"ws://127.0.0.1:{free_port()}/ws"):
                pass
        assert failed.value.code == "connect_failed" and not failed.value.from_hub

    run(scenario())


def test_a_token_function_is_called_for_every_attempt(wshub_hub_factory, proxy_to) -> None:
    hub = wshub_hub_factory(jwt_secret="s")
    proxy: Proxy = proxy_to(hub.port)
    calls: list[int] = []

    async def token() -> str:
        calls.append(1)
        return hub.token("carol", ttl=60)

    async def scenario() -> None:
        async with wshub.AsyncClient(proxy.ws_url, token=token, rooms=["r"], backoff=0.05) as client:
            proxy.cut()
            hub.publish("after", {}, room="r")
            assert (await client.next(10))["type"] == "after"
            assert client.connections == 2

    run(scenario())
    assert len(calls) == 2


def test_resumes_every_room_across_a_cut_connection(wshub_hub: wshub.Sidecar, proxy_to) -> None:
    """The proxy resets the TCP connection (no close frame); events published
    meanwhile arrive once, in order, and the client's own publish is not
    replayed to it."""
    proxy: Proxy = proxy_to(wshub_hub.port)
    publisher = wshub_hub.publisher()
    statuses: list[dict] = []

    async def scenario() -> list[dict]:
        async with wshub.AsyncClient(
            proxy.ws_url, rooms=["a", "b"], backoff=0.2, on_status=statuses.append
        ) as client:
            for n in range(1, 4):
                publisher.publish("tick", {"n": n}, room="a")
            publisher.publish("tock", {"n": 1}, room="b")
            got = await take(client, 2)  # a:1, a:2 delivered; a:3 and b:1 still queued
            own = await client.publish("a", "mine", {})
            assert own["seq"] == 4
            proxy.cut()
            for n in range(5, 9):
                publisher.publish("tick", {"n": n}, room="a")
            publisher.publish("tock", {"n": 2}, room="b")
            got += await take(client, 2 + 4 + 1)
            await client.ping()
            assert client.pending_events == 0
            assert client.connections == 2
            return got

    events = run(scenario())
    assert [(e["room"], e["seq"]) for e in events] == [
        ("a", 1), ("a", 2), ("a", 3), ("b", 1),
        ("a", 5), ("a", 6), ("a", 7), ("a", 8), ("b", 2),
    ]  # fmt: skip
    assert [s["state"] for s in statuses].count("open") >= 2


def test_resumes_across_a_hub_restart_with_a_store(wshub_hub_factory, tmp_path) -> None:
    port = free_port()
    settings = {"store": tmp_path / "store", "bind": f"127.0.0.1:{port}", "shutdown_grace": "1s"}
    first = wshub_hub_factory(**settings)
    statuses: list[dict] = []

    async def scenario() -> list[dict]:
        async with wshub.AsyncClient(
            first.ws_url, rooms=["jobs"], backoff=0.2, max_backoff=0.5, on_status=statuses.append
        ) as client:
            for n in range(1, 4):
                first.publish("job", {"n": n}, room="jobs")
            got = await take(client, 1)
            await asyncio.get_running_loop().run_in_executor(None, first.stop)
            second = wshub_hub_factory(**settings)
            assert second.epoch == first.epoch and second.port == port
            for n in range(4, 7):
                second.publish("job", {"n": n}, room="jobs")
            got += await take(client, 5)
            return got

    events = run(scenario())
    assert [e["payload"]["n"] for e in events] == [1, 2, 3, 4, 5, 6]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5, 6]
    opened = [s for s in statuses if s["state"] == "open" and "epoch" in s]
    assert len(opened) >= 2 and not any(s["epoch_changed"] for s in opened)


def test_a_new_epoch_starts_the_rooms_again(wshub_hub_factory) -> None:
    port = free_port()
    first = wshub_hub_factory(bind=f"127.0.0.1:{port}", shutdown_grace="1s")
    statuses: list[dict] = []

    async def scenario() -> list[dict]:
        async with wshub.AsyncClient(
            first.ws_url, rooms=["r"], backoff=0.2, max_backoff=0.5, on_status=statuses.append
        ) as client:
            first.publish("old", {}, room="r")
            first.publish("old", {}, room="r")
            got = await take(client, 2)
            await asyncio.get_running_loop().run_in_executor(None, first.stop)
            second = wshub_hub_factory(bind=f"127.0.0.1:{port}")
            # Wait for the rejoin, then publish: seq 1 of the new epoch arrives.
            while client.epoch != second.epoch or client.positions.get("r") != 0:
                await asyncio.sleep(0.02)
            second.publish("new", {}, room="r")
            got += await take(client, 1)
            return got

    events = run(scenario())
    assert [(e["type"], e["seq"]) for e in events] == [("old", 1), ("old", 2), ("new", 1)]
    assert any(s.get("epoch_changed") for s in statuses)


@pytest.mark.wshub(history_size=500)
def test_a_slow_consumer_misses_nothing_and_never_stalls_replies(wshub_hub: wshub.Sidecar) -> None:
    """A queue of 8 and 120 events: the reader keeps answering pings at once,
    and the events still come out once each, in order (the hub's history
    holds what the queue cannot)."""
    publisher = wshub_hub.publisher()

    async def scenario() -> list[int]:
        async with wshub.AsyncClient(wshub_hub.ws_url, rooms=["flood"], queue_size=8) as client:
            for n in range(1, 61):
                publisher.publish("e", {"n": n}, room="flood")
            start = time.monotonic()
            await client.ping()  # nothing consumed yet: the reader still reads
            assert time.monotonic() - start < 2
            seqs = []
            for n in range(61, 121):
                publisher.publish("e", {"n": n}, room="flood")
            while len(seqs) < 120:
                event = await client.next(10)
                seqs.append(event["seq"])
                if len(seqs) % 10 == 0:
                    await asyncio.sleep(0.05)  # slow
            assert client.pending_events <= 8
            return seqs

    assert run(scenario()) == list(range(1, 121))


def test_an_admin_disconnect_is_final(wshub_hub: wshub.Sidecar) -> None:
    async def scenario() -> None:
        async with wshub.AsyncClient(wshub_hub.ws_url, rooms=["r"], backoff=0.05) as client:
            publisher = wshub_hub.publisher()
            # Over HTTP: its 202 comes once the event is queued to the client
            # (a stdin line has no such order with the DELETE below).
            publisher.publish("before", {}, room="r")
            publisher.disconnect(str(client.connection_id))
            got = [event async for event in client]  # drains, then ends
            assert [e["type"] for e in got] == ["before"]
            assert client.close_code == 4003
            with pytest.raises(wshub.HubError) as closed:
                await client.ping()
            assert closed.value.code == "closed"

    run(scenario())


def test_calls_wait_for_a_reconnect_within_their_timeout(wshub_hub: wshub.Sidecar, proxy_to) -> None:
    proxy: Proxy = proxy_to(wshub_hub.port)

    async def scenario() -> None:
        async with wshub.AsyncClient(proxy.ws_url, backoff=0.3, request_timeout=5) as client:
            proxy.cut()
            await asyncio.sleep(0.05)
            members = await client.presence("nobody")
            assert members == []
            with pytest.raises(wshub.HubError) as timeout:
                await client.rpc("x", timeout=0.0001)
            assert timeout.value.code == "timeout" and not timeout.value.from_hub

    run(scenario())


@pytest.mark.wshub(history_size=10)
def test_a_consumer_slower_than_the_history_is_told_of_the_gap(wshub_hub: wshub.Sidecar) -> None:
    publisher = wshub_hub.publisher()
    statuses: list[dict] = []

    async def scenario() -> list[int]:
        async with wshub.AsyncClient(
            wshub_hub.ws_url, rooms=["r"], queue_size=4, on_status=statuses.append
        ) as client:
            for n in range(1, 41):
                publisher.publish("e", {"n": n}, room="r")
            await client.ping()
            seqs = [(await client.next(5))["seq"] for _ in range(4)]  # the queue's four
            await client.ping()  # the rejoin's answer is in
            publisher.publish("e", {"n": 41}, room="r")
            while seqs[-1] != 41:
                seqs.append((await client.next(5))["seq"])
            return seqs

    seqs = run(scenario())
    assert seqs[:4] == [1, 2, 3, 4] and seqs[-1] == 41
    assert seqs == sorted(set(seqs))  # in order, no repeats
    assert any(s.get("history_unavailable") == ["r"] for s in statuses)
