#!/usr/bin/env python3
"""A companion process with wshub as its sidecar.

It starts `wshub --stdin-events --bind 127.0.0.1:0`, learns the hub's port
from the first line the hub prints, and publishes a `job_progress` event to
room `jobs` by writing one JSON line to the hub's stdin. When this process
exits or is killed, the hub's stdin closes and the hub shuts down with it.

    python3 examples/companion/companion.py --wshub target/release/wshub
    # then open http://127.0.0.1:PORT/ and join room `jobs`
"""

import argparse
import json
import subprocess
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wshub", default="wshub", help="path of the wshub binary")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between events")
    parser.add_argument("--count", type=int, default=0, help="events to publish (0: forever)")
    args = parser.parse_args()

    hub = subprocess.Popen(
        [args.wshub, "--stdin-events", "--bind", "127.0.0.1:0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    listening = json.loads(hub.stdout.readline())
    print(json.dumps({"hub_pid": hub.pid, "addr": listening["addr"]}), flush=True)

    n = 0
    while args.count == 0 or n < args.count:
        n += 1
        event = {"room": "jobs", "type": "job_progress", "payload": {"n": n}}
        hub.stdin.write(json.dumps(event) + "\n")
        hub.stdin.flush()
        time.sleep(args.interval)

    hub.stdin.close()  # the hub drains and exits
    return hub.wait()


if __name__ == "__main__":
    sys.exit(main())
