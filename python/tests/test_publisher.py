"""wshub.Publisher and wshub.mint_token against a real hub."""

from __future__ import annotations

import base64
import json
import time

import pytest

import wshub
from conftest import run, take


def test_publish_returns_the_202_body_and_reaches_subscribers(wshub_hub: wshub.Sidecar) -> None:
    async def scenario() -> None:
        async with wshub.AsyncClient(wshub_hub.ws_url, rooms=["scans"]) as client:
            with wshub.Publisher(wshub_hub.url) as publisher:
                reply = publisher.publish(
                    "scan_started", {"path": "/srv"}, room="scans", correlation_id="corr-1"
                )
                assert set(reply) == {"id", "seq", "recipients", "correlation_id"}
                assert reply["seq"] == 1 and reply["recipients"] == 1
                assert reply["correlation_id"] == "corr-1"
                event = await client.next(5)
                assert event["id"] == reply["id"] and event["correlation_id"] == "corr-1"
                again = publisher.publish("scan_started", {}, room="scans", idempotency_key="k1")
                assert publisher.publish("scan_started", {}, room="scans", idempotency_key="k1") == again
                everyone = publisher.publish("notice", {})
                assert everyone["seq"] is None
                assert [e["type"] for e in await take(client, 2)] == ["scan_started", "notice"]

    run(scenario())


def test_set_health_broadcasts_and_shows_in_health(wshub_hub: wshub.Sidecar) -> None:
    async def scenario() -> None:
        async with wshub.AsyncClient(wshub_hub.ws_url) as client:
            publisher = wshub_hub.publisher()
            state = publisher.set_health("scanner", "down", "disk full")
            assert (state["component"], state["status"], state["detail"]) == ("scanner", "down", "disk full")
            event = await client.next(5)
            assert event["type"] == "health_status"
            assert event["payload"]["status"] == "down" and event["payload"]["overall"] == "down"
            health = publisher.health()  # 503 while down, still a body
            assert health["status"] == "down" and health["components"]["scanner"]["detail"] == "disk full"
            publisher.set_health("scanner", "ok")
            assert publisher.health()["status"] == "ok"
            with pytest.raises(ValueError):
                publisher.set_health("scanner", "fine")

    run(scenario())


def test_refusals_raise_publish_errors(wshub_hub_factory) -> None:
    hub = wshub_hub_factory(admin_key="k")
    with wshub.Publisher(hub.url) as anonymous:
        with pytest.raises(wshub.PublishError) as e:
            anonymous.publish("x", {}, room="r")
        assert (e.value.status, e.value.code) == (401, "unauthenticated")
    with wshub.Publisher(hub.url, key="wrong") as wrong:
        with pytest.raises(wshub.PublishError) as e:
            wrong.publish("x", {}, room="r")
        assert (e.value.status, e.value.code) == (403, "forbidden")
    with wshub.Publisher(hub.url, key="k") as publisher:
        with pytest.raises(wshub.PublishError) as e:
            publisher.publish("welcome", {}, room="r")
        assert (e.value.status, e.value.code) == (422, "reserved_type")
        with pytest.raises(wshub.PublishError) as e:
            publisher.publish("x", {}, room="not a room")
        assert e.value.status == 422 and e.value.message
        assert publisher.rooms() == []
        assert "wshub_connections_active" in publisher.metrics()
    with pytest.raises(wshub.PublishError) as e:
        wshub.Publisher("http://127.0.0.1:1", timeout=1).publish("x", {})
    assert (e.value.status, e.value.code) == (0, "unreachable")
    with pytest.raises(ValueError):
        wshub.Publisher("ws://127.0.0.1:1/ws")


def test_one_keep_alive_connection_survives_the_hub_closing_it_when_idle(wshub_hub_factory) -> None:
    hub = wshub_hub_factory(handshake_timeout="300ms")
    with wshub.Publisher(hub.url) as publisher:
        publisher.publish("a", {}, room="r")
        sock = publisher._conn.sock  # type: ignore[union-attr]
        assert publisher.publish("b", {}, room="r")["seq"] == 2
        assert publisher._conn.sock is sock  # type: ignore[union-attr]
        time.sleep(0.8)  # the hub closes the idle connection meanwhile
        assert publisher.publish("c", {}, room="r")["seq"] == 3


def test_admin_routes(wshub_hub: wshub.Sidecar) -> None:
    async def scenario() -> None:
        async with wshub.AsyncClient(wshub_hub.ws_url, rooms=["lobby"]) as client:
            publisher = wshub_hub.publisher()
            [meta] = publisher.connections()
            assert meta["connection_id"] == client.connection_id and meta["rooms"] == ["lobby"]
            assert publisher.room("lobby")["members"][0]["connection_id"] == client.connection_id

    run(scenario())


def test_mint_token_makes_the_claims_the_hub_reads(wshub_hub_factory) -> None:
    token = wshub.mint_token("s", "alice", rooms="a,b*", publish=["a"], admin=False, ttl=60)
    header, claims = (json.loads(base64.urlsafe_b64decode(part + "==")) for part in token.split(".")[:2])
    assert header == {"alg": "HS256", "typ": "JWT"}
    assert claims["sub"] == "alice" and claims["rooms"] == ["a", "b*"] and claims["publish"] == ["a"]
    assert "admin" not in claims and abs(claims["exp"] - time.time() - 60) < 5
    hub = wshub_hub_factory(jwt_secret="s")
    admin = wshub.mint_token("s", "ops", admin=True)
    assert wshub.Publisher(hub.url, token=admin).publish("x", {}, room="r")["seq"] == 1
    with pytest.raises(wshub.PublishError) as e:
        wshub.Publisher(hub.url, token=token).publish("x", {}, room="r")
    assert e.value.status == 403

    async def scenario() -> None:
        async with wshub.AsyncClient(hub.ws_url, token=token, rooms=["a", "bee"]) as client:
            assert (await client.publish("a", "hello", {}))["seq"] == 1
            with pytest.raises(wshub.HubError) as refused:
                await client.publish("bee", "hello", {})
            assert refused.value.code == "forbidden"

    run(scenario())
    with pytest.raises(ValueError):
        wshub.mint_token("s", "x", ttl=10**12)
