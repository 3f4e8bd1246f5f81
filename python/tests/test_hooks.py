"""rpc handlers and other hooks served by a Sidecar over stdio."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import wshub
from conftest import run


def test_rpc_handlers_answer_and_refuse(wshub_hub_factory) -> None:
    seen: list[tuple] = []

    def add(params, *, user, connection_id):
        seen.append((params, user, connection_id))
        if not isinstance(params, dict) or not isinstance(params.get("sku"), int):
            raise wshub.HookError("bad_params", "cart.add takes {sku: int}", status=422)
        return {"items": len(seen)}

    def broken(params, *, user, connection_id):
        raise RuntimeError("a bug in the app")

    def not_json(params, *, user, connection_id):
        return object()

    hub = wshub_hub_factory(rpc_handlers={"cart.add": add, "broken": broken, "not_json": not_json})
    assert hub.settings["rpc_hook"] == "stdio"

    async def scenario() -> None:
        async with wshub.AsyncClient(hub.ws_url) as client:
            assert await client.rpc("cart.add", {"sku": 7}) == {"items": 1}
            with pytest.raises(wshub.HubError) as refused:
                await client.rpc("cart.add", {"sku": "seven"})
            assert refused.value.code == "bad_params"
            assert refused.value.message == "cart.add takes {sku: int}"
            with pytest.raises(wshub.HubError) as unknown:
                await client.rpc("nope")
            assert unknown.value.code == "unknown_method"
            for method in ("broken", "not_json"):
                with pytest.raises(wshub.HubError) as failed:
                    await client.rpc(method)
                assert failed.value.code == "hook_unavailable"
            assert seen[0] == ({"sku": 7}, None, client.connection_id)

    run(scenario())


def test_a_slow_handler_does_not_hold_back_other_connections(wshub_hub_factory) -> None:
    release = threading.Event()

    def slow(params, *, user, connection_id):
        release.wait(10)
        return "slow"

    def fast(params, *, user, connection_id):
        return "fast"

    hub = wshub_hub_factory(rpc_handlers={"slow": slow, "fast": fast})

    async def scenario() -> None:
        async with wshub.AsyncClient(hub.ws_url) as a, wshub.AsyncClient(hub.ws_url) as b:
            slow_call = asyncio.ensure_future(a.rpc("slow"))
            await asyncio.sleep(0.1)
            start = time.monotonic()
            for _ in range(5):
                assert await b.rpc("fast") == "fast"
            assert time.monotonic() - start < 2
            assert not slow_call.done()
            release.set()
            assert await asyncio.wait_for(slow_call, 5) == "slow"

    try:
        run(scenario())
    finally:
        release.set()


def test_a_handler_slower_than_hook_timeout_is_hook_unavailable(wshub_hub_factory) -> None:
    def sleepy(params, *, user, connection_id):
        time.sleep(1.5)
        return "late"

    hub = wshub_hub_factory(rpc_handlers={"sleepy": sleepy}, hook_timeout="500ms")

    async def scenario() -> None:
        async with wshub.AsyncClient(hub.ws_url) as client:
            with pytest.raises(wshub.HubError) as late:
                await client.rpc("sleepy")
            assert late.value.code == "hook_unavailable"

    run(scenario())


def test_connect_and_subscribe_hooks_over_stdio(wshub_hub_factory) -> None:
    gone: list[dict] = []

    def connect(body: dict) -> dict:
        name = body["query"].get("name")
        if not name:
            raise wshub.HookError("login_required", "who are you?", status=401)
        return {"user": name, "subscribe": [f"inbox.{name}"]}

    def subscribe(body: dict) -> None:
        if body["room"].startswith("inbox.") and body["room"] != f"inbox.{body['user']}":
            raise wshub.HookError("not_your_inbox", "someone else's")

    hub = wshub_hub_factory(
        hooks={"connect": connect, "subscribe": subscribe, "disconnect": gone.append},
        rpc_handlers={"whoami": lambda params, *, user, connection_id: user},
    )

    async def scenario() -> None:
        async with wshub.AsyncClient(hub.ws_url + "?name=dana") as client:
            assert client.welcome is not None
            assert client.welcome["payload"]["user"] == "dana"
            assert client.welcome["payload"]["rooms"] == ["inbox.dana"]
            assert await client.rpc("whoami") == "dana"
            with pytest.raises(wshub.HubError) as refused:
                await client.subscribe("inbox.erin")
            assert refused.value.code == "not_your_inbox"
        with pytest.raises(wshub.HubError) as anonymous:
            async with wshub.AsyncClient(hub.ws_url):
                pass
        assert anonymous.value.code == "login_required"
        assert anonymous.value.details["status"] == 403

    run(scenario())
    deadline = time.monotonic() + 5
    while not gone and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gone and gone[0]["user"] == "dana" and gone[0]["hook"] == "disconnect"


def test_handler_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        wshub.Sidecar(hooks={"nope": lambda body: None})
    with pytest.raises(ValueError):
        wshub.Sidecar(rpc_handlers={"a": print}, rpc_hook="http://127.0.0.1:1/rpc")
    with pytest.raises(ValueError):
        wshub.HookError("x", status=500)


def test_a_publish_hook_over_stdio_sees_the_event_type_and_replaces_the_payload(wshub_hub_factory) -> None:
    seen: list[dict] = []

    def publish(body: dict) -> dict:
        seen.append(body)
        if body["event"] == "shout":
            raise wshub.HookError("too_loud", "no shouting")
        return {"payload": {**body["payload"], "stamped": True}}

    hub = wshub_hub_factory(hooks={"publish": publish})

    async def scenario() -> None:
        async with wshub.AsyncClient(hub.ws_url, rooms=["chat"]) as a, wshub.AsyncClient(
            hub.ws_url, rooms=["chat"]
        ) as b:
            await a.publish("chat", "message", {"text": "hi"})
            event = await b.next(5)
            assert event["payload"] == {"text": "hi", "stamped": True}
            with pytest.raises(wshub.HubError) as refused:
                await a.publish("chat", "shout", {})
            assert refused.value.code == "too_loud"

    run(scenario())
    # The line's `event` is the body's (the event's type), not "hook".
    assert seen[0]["hook"] == "publish" and seen[0]["event"] == "message"
