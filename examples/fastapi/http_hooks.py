"""A FastAPI app behind a hub it does not run: a login cookie, the five
hook endpoints over HTTP (each checking X-Wshub-Signature), and a page
using the hub's client.js. `app.py` is the same idea with the hub as its
sidecar (`wshub.Sidecar`) and the hooks answered in-process.

    pip install fastapi uvicorn python-multipart
    HOOK_SECRET=dev uvicorn http_hooks:app --port 8001   # in examples/fastapi
    wshub --connect-hook http://127.0.0.1:8001/hooks/connect \\
          --subscribe-hook http://127.0.0.1:8001/hooks/subscribe \\
          --publish-hook http://127.0.0.1:8001/hooks/publish \\
          --rpc-hook http://127.0.0.1:8001/hooks/rpc \\
          --disconnect-hook http://127.0.0.1:8001/hooks/disconnect \\
          --hook-secret dev --allowed-origins http://localhost:8001

Open http://localhost:8001/, log in with any name, and the page connects to
the hub on port 8000 with your session cookie (both on `localhost`, so the
browser sends it to the hub too).
"""

import hashlib
import hmac
import json
import os
import secrets
from http.cookies import SimpleCookie

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

HOOK_SECRET = os.environ.get("HOOK_SECRET", "dev").encode()
HUB = os.environ.get("WSHUB_URL", "localhost:8000")

app = FastAPI()
sessions: dict[str, str] = {}  # session id -> user name
carts: dict[str, list] = {}


def refuse(code: str, message: str, status: int = 403) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def verified(request: Request) -> dict:
    """The hook body, once its X-Wshub-Signature matches."""
    raw = await request.body()
    expected = "sha256=" + hmac.new(HOOK_SECRET, raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(request.headers.get("x-wshub-signature", ""), expected):
        raise PermissionError("bad signature")
    return json.loads(raw)


@app.exception_handler(PermissionError)
async def bad_signature(_request: Request, exc: PermissionError):
    return refuse("bad_signature", str(exc), 401)


@app.post("/hooks/connect")
async def connect(request: Request):
    body = await verified(request)
    cookie = SimpleCookie(body["headers"].get("cookie", ""))
    session = cookie.get("session")
    user = sessions.get(session.value) if session else None
    if user is None:
        return refuse("login_required", "log in first", 401)
    return {"user": user, "subscribe": [f"inbox.{user}"], "publish": ["chat"]}


@app.post("/hooks/subscribe")
async def subscribe(request: Request):
    body = await verified(request)
    room = body["room"]
    if room.startswith("inbox.") and room != f"inbox.{body['user']}":
        return refuse("not_your_inbox", "that inbox is someone else's")
    return {}


@app.post("/hooks/publish")
async def publish(request: Request):
    body = await verified(request)
    text = str(body["payload"].get("text", ""))[:500]
    return {"payload": {"text": text, "from": body["user"]}}


@app.post("/hooks/rpc")
async def rpc(request: Request):
    body = await verified(request)
    user, method, params = body["user"], body["method"], body["params"]
    if method == "cart.add":
        if not isinstance(params, dict) or not isinstance(params.get("sku"), int):
            return refuse("bad_params", "cart.add takes {sku: int}", 422)
        carts.setdefault(user, []).append(params["sku"])
        return {"result": {"items": len(carts[user])}}
    if method == "whoami":
        return {"result": {"user": user}}
    return refuse("unknown_method", f"no method {method!r}", 404)


@app.post("/hooks/disconnect")
async def disconnect(request: Request):
    body = await verified(request)
    print(f"{body['user']} left: {body['reason']} after {body['duration_s']}s")
    return {}


@app.post("/login")
async def login(name: str = Form(...)):
    session = secrets.token_urlsafe(16)
    sessions[session] = name
    response = RedirectResponse("/", status_code=303)
    response.set_cookie("session", session, httponly=True, samesite="lax")
    return response


@app.get("/", response_class=HTMLResponse)
async def page(request: Request):
    user = sessions.get(request.cookies.get("session", ""))
    if user is None:
        return """<form method=post action=/login>
          <input name=name placeholder="your name"><button>Log in</button></form>"""
    return f"""<!doctype html><meta charset=utf-8><title>wshub + FastAPI</title>
<p>Logged in as {user}. <button id=add>Add to cart</button> <span id=cart></span></p>
<input id=text><button id=send>Send to #chat</button><ul id=log></ul>
<script type=module>
import {{ WsHub }} from "http://{HUB}/client.js";
const log = (t) => document.querySelector("#log").insertAdjacentHTML("beforeend", `<li>${{t}}</li>`);
const hub = WsHub.connect("ws://{HUB}/ws", {{
  rooms: ["chat"],
  onEvent: (e) => log(`${{e.payload.from}}: ${{e.payload.text}}`),
}});
document.querySelector("#add").onclick = async () => {{
  const r = await hub.rpc("cart.add", {{ sku: 7 }}).catch((e) => ({{ items: e.code }}));
  document.querySelector("#cart").textContent = `items: ${{r.items}}`;
}};
document.querySelector("#send").onclick = () =>
  hub.publish("chat", "message", {{ text: document.querySelector("#text").value }});
</script>"""
