"""The example app against a real hub, started by the `wshub_hub_factory`
fixture: routes publish, tabs are known by their session cookie, rpc is
answered by the app, and the page loads the hub's client.js."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

import wshub
from app import create_app


@pytest.fixture
def app_client(wshub_hub_factory):
    """The app, with its hub, running for one test."""
    with TestClient(create_app(hub_factory=wshub_hub_factory)) as client:
        yield client


def login(client: TestClient, name: str) -> str:
    """Logs in and returns the session cookie."""
    response = client.post("/login", data={"name": name}, follow_redirects=False)
    assert response.status_code == 303
    return response.cookies["session"]


def run(coro, timeout: float = 30):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def test_routes_publish_and_tabs_are_known_by_their_cookie(app_client: TestClient, tmp_path) -> None:
    hub: wshub.Sidecar = app_client.app.state.hub
    session = login(app_client, "alice")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("b")

    async def tab() -> None:
        cookie = {"Cookie": f"session={session}"}
        async with wshub.AsyncClient(hub.ws_url, rooms=["projects"], headers=cookie) as client:
            assert client.welcome is not None
            assert client.welcome["payload"]["user"] == "alice"
            assert client.welcome["payload"]["rooms"] == ["inbox.alice"]

            project = app_client.post("/projects", data={"name": "demo"}).json()
            created = await client.next(5)
            assert (created["type"], created["room"], created["payload"]) == (
                "project_created", "projects", project,
            )  # fmt: skip

            await client.subscribe(f"project.{project['id']}")
            started = app_client.post(f"/projects/{project['id']}/scans", data={"path": str(tmp_path)})
            assert started.status_code == 202
            events = [await client.next(5) for _ in range(3)]
            kinds = [e["type"] for e in events]
            assert kinds.index("scan_started") < kinds.index("scan_completed")
            completed = events[kinds.index("scan_completed")]
            assert completed["payload"] == {"path": str(tmp_path), "files": 2}
            assert completed["seq"] == started.json()["seq"] + 1
            health = events[kinds.index("health_status")]
            assert health["payload"]["component"] == "scanner" and health["payload"]["status"] == "ok"

            app_client.post(f"/projects/{project['id']}/scans", data={"path": str(tmp_path / "nope")})
            events = [await client.next(5) for _ in range(3)]
            degraded = [e for e in events if e["type"] == "health_status"]
            assert degraded and degraded[0]["payload"]["status"] == "degraded"
            assert hub.publisher().health()["status"] == "degraded"

            projects = await client.rpc("projects.list")
            assert [p["name"] for p in projects] == ["demo"] and projects[0]["scans"] == 1
            assert (await client.rpc("whoami"))["user"] == "alice"
            with pytest.raises(wshub.HubError) as missing:
                await client.rpc("project.get", {"id": 99})
            assert missing.value.code == "not_found"

            # The publish hook stamps who said it.
            async with wshub.AsyncClient(hub.ws_url, rooms=["chat"], headers=cookie) as other:
                await client.publish("chat", "message", {"text": "hello", "from": "mallory"})
                said = await other.next(5)
                assert said["payload"] == {"text": "hello", "from": "alice"}
            with pytest.raises(wshub.HubError) as not_yours:
                await client.subscribe("inbox.bob")
            assert not_yours.value.code == "not_your_inbox"

    run(tab())


def test_a_tab_without_a_session_is_refused(app_client: TestClient) -> None:
    hub: wshub.Sidecar = app_client.app.state.hub

    async def anonymous() -> None:
        with pytest.raises(wshub.HubError) as refused:
            async with wshub.AsyncClient(hub.ws_url):
                pass
        assert refused.value.code == "login_required"

    run(anonymous())
    assert app_client.post("/projects", data={"name": "x"}).status_code == 401


def test_the_page_loads_the_hubs_client(app_client: TestClient) -> None:
    hub: wshub.Sidecar = app_client.app.state.hub
    assert "Log in" in app_client.get("/").text
    login(app_client, "bob")
    page = app_client.get("/").text
    assert f'from "http://testserver:{hub.port}/client.js"' in page
    assert "Logged in as bob" in page
    client_js = wshub.Publisher(hub.url).request("GET", "/client.js")
    assert "export class WsHub" in client_js
