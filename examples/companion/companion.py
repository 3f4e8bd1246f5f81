#!/usr/bin/env python3
"""A companion process with wshub as its sidecar.

It starts `wshub --stdin-events --bind 127.0.0.1:0`, learns the hub's port
from the first line the hub prints, and publishes a `job_progress` event to
room `jobs` by writing one JSON line to the hub's stdin. When this process
exits or is killed, the hub's stdin closes and the hub shuts down with it.

It also answers tabs: the hub runs with `--rpc-hook stdio`, so each `rpc`
a tab sends arrives here as a `{"event":"hook",...}` line on the hub's
stdout, and this process answers with a `{"hook_reply":...}` line on its
stdin. Methods: `jobs.count` (how many events so far) and `echo`; any other
is refused with the code `unknown_method`.

    python3 examples/companion/companion.py --wshub target/release/wshub
    # then open http://127.0.0.1:PORT/ and join room `jobs`
"""

import argparse
import json
import subprocess
import sys
import threading
import time


class Hub:
    """The hub's stdin, shared by the publisher loop and the hook thread."""

    def __init__(self, process):
        self.process = process
        self.lock = threading.Lock()
        self.published = 0

    def write(self, obj):
        with self.lock:
            self.process.stdin.write(json.dumps(obj) + "\n")
            self.process.stdin.flush()


def answer(hub, request):
    """The reply to one rpc hook request: status and body, as over HTTP."""
    method, params = request.get("method"), request.get("params")
    if method == "jobs.count":
        return 200, {"result": {"published": hub.published}}
    if method == "echo":
        return 200, {"result": params}
    return 404, {"error": {"code": "unknown_method", "message": f"no method {method!r}"}}


def serve_hooks(hub):
    """Reads the hub's stdout: hook requests are answered, the rest ignored."""
    for line in hub.process.stdout:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("event") != "hook":
            continue
        if message.get("hook") == "rpc":
            status, body = answer(hub, message)
        else:
            status, body = 200, {}
        try:
            hub.write({"hook_reply": message["id"], "status": status, "body": body})
        except (BrokenPipeError, ValueError):
            return  # the hub has gone


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wshub", default="wshub", help="path of the wshub binary")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between events")
    parser.add_argument("--count", type=int, default=0, help="events to publish (0: forever)")
    args = parser.parse_args()

    process = subprocess.Popen(
        [args.wshub, "--stdin-events", "--bind", "127.0.0.1:0", "--rpc-hook", "stdio"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    listening = json.loads(process.stdout.readline())
    print(json.dumps({"hub_pid": process.pid, "addr": listening["addr"]}), flush=True)
    hub = Hub(process)
    threading.Thread(target=serve_hooks, args=(hub,), daemon=True).start()

    n = 0
    while args.count == 0 or n < args.count:
        n += 1
        hub.write({"room": "jobs", "type": "job_progress", "payload": {"n": n}})
        hub.published = n
        time.sleep(args.interval)

    with hub.lock:
        process.stdin.close()  # the hub drains and exits
    return process.wait()


if __name__ == "__main__":
    sys.exit(main())
