"""A FastAPI app that runs its own hub: `wshub.Sidecar` starts it with the
app and stops it with the app, the app's routes publish what they do, and
the hub's hooks are answered in-process over stdio, so the hub knows every
tab by the app's own session cookie.

    pip install wshub fastapi uvicorn python-multipart   # or `pip install .` in the repository
    uvicorn app:app --port 8001                          # in examples/fastapi

Open http://localhost:8001/, log in with any name, create a project and
scan it: the page (which loads the hub's client.js) shows `project_created`,
`scan_started` and `scan_completed` as the routes publish them, and the
`health_status` of the scanner; "My projects" asks the app over `rpc`.
`HUB_BIND=127.0.0.1:8000` fixes the hub's port; any `WSHUB_*` variable
(`WSHUB_STORE=/var/lib/app/hub`, say) reaches the hub too.
"""

from __future__ import annotations

import html
import itertools
import os
import secrets
import threading
from contextlib import asynccontextmanager
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, Callable, Optional

from fastapi import BackgroundTasks, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

import wshub


class State:
    """What the app remembers: sessions, projects, scans. Hook handlers run
    on the Sidecar's threads, so changes take the lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sessions: dict[str, str] = {}  # session id -> user name
        self.projects: dict[int, dict[str, Any]] = {}
        self.ids = itertools.count(1)


def user_of(state: State, cookie_header: str) -> Optional[str]:
    """The logged-in user a `Cookie` header names, if any."""
    session = SimpleCookie(cookie_header).get("session")
    return state.sessions.get(session.value) if session else None


def create_app(hub_factory: Optional[Callable[..., wshub.Sidecar]] = None, **hub_settings: Any) -> FastAPI:
    """The app. Its hub is started with the app by ``hub_factory`` (the
    pytest fixture ``wshub_hub_factory`` in tests) or a ``wshub.Sidecar``."""
    state = State()

    # ---- the hub's hooks, answered over stdio ----------------------------

    def connect(body: dict) -> dict:
        user = user_of(state, body["headers"].get("cookie", ""))
        if user is None:
            raise wshub.HookError("login_required", "log in first", status=401)
        return {"user": user, "subscribe": [f"inbox.{user}"], "publish": ["chat"]}

    def subscribe(body: dict) -> None:
        room = body["room"]
        if room.startswith("inbox.") and room != f"inbox.{body['user']}":
            raise wshub.HookError("not_your_inbox", "that inbox is someone else's")

    def publish(body: dict) -> dict:
        text = str(body["payload"].get("text", ""))[:500]
        return {"payload": {"text": text, "from": body["user"]}}

    def projects_list(params: Any, *, user: Optional[str], connection_id: str) -> list:
        with state.lock:
            return [p for p in state.projects.values() if p["owner"] == user]

    def project_get(params: Any, *, user: Optional[str], connection_id: str) -> dict:
        if not isinstance(params, dict) or not isinstance(params.get("id"), int):
            raise wshub.HookError("bad_params", "project.get takes {id: int}", status=422)
        with state.lock:
            project = state.projects.get(params["id"])
        if project is None:
            raise wshub.HookError("not_found", f"no project {params['id']}", status=404)
        return project

    def whoami(params: Any, *, user: Optional[str], connection_id: str) -> dict:
        return {"user": user, "connection_id": connection_id}

    settings: dict[str, Any] = {"bind": os.environ.get("HUB_BIND", "127.0.0.1:0"), **hub_settings}
    settings.update(
        hooks={"connect": connect, "subscribe": subscribe, "publish": publish},
        rpc_handlers={"projects.list": projects_list, "project.get": project_get, "whoami": whoami},
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if hub_factory is not None:
            hub = hub_factory(**settings)
        else:
            hub = wshub.Sidecar(**settings).start()
        app.state.hub = hub
        app.state.publisher = hub.publisher()
        app.state.publisher.set_health("scanner", "ok", "idle")
        try:
            yield
        finally:
            if hub_factory is None:
                hub.stop()

    app = FastAPI(lifespan=lifespan)
    app.state.data = state

    def hub_of(request: Request) -> wshub.Sidecar:
        return request.app.state.hub

    def logged_in(request: Request) -> str:
        user = state.sessions.get(request.cookies.get("session", ""))
        if user is None:
            raise HTTPException(401, "log in first")
        return user

    # ---- routes: each publishes what it did --------------------------------

    @app.post("/login")
    def login(name: str = Form(...)) -> RedirectResponse:
        session = secrets.token_urlsafe(16)
        with state.lock:
            state.sessions[session] = name
        response = RedirectResponse("/", status_code=303)
        response.set_cookie("session", session, httponly=True, samesite="lax")
        return response

    @app.post("/projects")
    def create_project(request: Request, name: str = Form(...)) -> dict:
        user = logged_in(request)
        with state.lock:
            project = {"id": next(state.ids), "name": name, "owner": user, "scans": 0}
            state.projects[project["id"]] = project
        hub_of(request).publish("project_created", project, room="projects")
        return project

    @app.post("/projects/{project_id}/scans", status_code=202)
    def start_scan(
        request: Request, project_id: int, background: BackgroundTasks, path: str = Form(...)
    ) -> dict:
        logged_in(request)
        with state.lock:
            project = state.projects.get(project_id)
        if project is None:
            raise HTTPException(404, "no such project")
        room = f"project.{project_id}"
        # Over HTTP rather than stdin: the reply carries the event's seq.
        started = request.app.state.publisher.publish("scan_started", {"path": path}, room=room)
        background.add_task(scan, request.app, project, path)
        return {"room": room, "seq": started["seq"]}

    def scan(app: FastAPI, project: dict, path: str) -> None:
        """Counts the files under `path`; a failed scan degrades the scanner."""
        publisher: wshub.Publisher = app.state.publisher
        root = Path(path)
        room = f"project.{project['id']}"
        if not root.is_dir():
            publisher.set_health("scanner", "degraded", f"cannot scan {path}")
            publisher.publish("scan_completed", {"path": path, "error": "not a directory"}, room=room)
            return
        files = sum(1 for p in root.rglob("*") if p.is_file())
        with state.lock:
            project["scans"] += 1
        publisher.publish("scan_completed", {"path": path, "files": files}, room=room)
        publisher.set_health("scanner", "ok", f"last scan: {files} files")

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request) -> str:
        user = state.sessions.get(request.cookies.get("session", ""))
        if user is None:
            return """<!doctype html><meta charset=utf-8><title>wshub + FastAPI</title>
<form method=post action=/login><input name=name placeholder="your name"><button>Log in</button></form>"""
        # The same host name as this page, so the browser sends the session
        # cookie to the hub (cookies are per host, not per port).
        hub = f"{request.url.hostname}:{hub_of(request).port}"
        return PAGE.replace("{HUB}", hub).replace("{USER}", html.escape(user))

    return app


PAGE = """<!doctype html><meta charset=utf-8><title>wshub + FastAPI</title>
<p>Logged in as {USER}. <span id=health></span></p>
<form id=create><input name=name placeholder="project name"><button>Create project</button></form>
<button id=mine>My projects</button> <span id=list></span>
<ul id=log></ul>
<script type=module>
import { WsHub } from "http://{HUB}/client.js";
const log = (text) => {
  const li = document.createElement("li");
  li.textContent = text;
  document.querySelector("#log").prepend(li);
};
const hub = WsHub.connect("ws://{HUB}/ws", {
  rooms: ["projects"],
  onEvent: (e) => {
    if (e.type === "health_status") {
      document.querySelector("#health").textContent = `scanner: ${e.payload.status} (${e.payload.detail ?? ""})`;
      return;
    }
    log(`${e.room ?? "*"} #${e.seq ?? "-"} ${e.type} ${JSON.stringify(e.payload)}`);
    if (e.type === "project_created") addProject(e.payload);
  },
  onStatus: (s) => s.state !== "open" && log(`hub ${s.state} ${s.code ?? ""}`),
});
function addProject(project) {
  hub.subscribe([`project.${project.id}`]);
  const button = document.createElement("button");
  button.textContent = `Scan ${project.name}`;
  button.onclick = () => fetch(`/projects/${project.id}/scans`, {
    method: "POST", body: new URLSearchParams({ path: prompt("directory to scan", "/tmp") ?? "/tmp" }),
  });
  document.body.append(button);
}
document.querySelector("#create").onsubmit = async (e) => {
  e.preventDefault();
  await fetch("/projects", { method: "POST", body: new FormData(e.target) });
};
document.querySelector("#mine").onclick = async () => {
  const projects = await hub.rpc("projects.list");
  document.querySelector("#list").textContent = projects.map((p) => `${p.name} (${p.scans} scans)`).join(", ");
};
</script>"""

app = create_app()
