#!/usr/bin/env python3
"""A companion process with wshub as its sidecar, on the `wshub` package.

`wshub.Sidecar` starts `wshub --stdin-events` on `127.0.0.1:0`, learns the
hub's port from its listening line, and `publish` writes one JSON line to
the hub's stdin: here a `job_progress` event to room `jobs` each interval.
When this process exits or is killed, the hub's stdin closes (and its
parent is gone), so the hub shuts down with it.

It also answers tabs: with `rpc_handlers`, the hub runs with
`--rpc-hook stdio`; each `rpc` a tab sends arrives as a hook line on the
hub's stdout, the Sidecar calls the handler on a thread of its own and
writes the `hook_reply` line. Methods: `jobs.count` (how many events so
far) and `echo`; any other is refused with `unknown_method`.

    pip install .                                  # in the repository: hub and package
    python3 examples/companion/companion.py
    # then open http://127.0.0.1:PORT/ and join room `jobs`

From a checkout without installing, name a built hub; the package is then
imported from `python/`:

    cargo build --release
    python3 examples/companion/companion.py --wshub target/release/wshub
"""

import argparse
import json
import sys
import time
from pathlib import Path

try:
    import wshub
except ImportError:  # a checkout, not installed: the package is beside us
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
    import wshub


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wshub", default=None, help="path of the wshub binary (default: the package's)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between events")
    parser.add_argument("--count", type=int, default=0, help="events to publish (0: forever)")
    args = parser.parse_args()

    published = 0

    def jobs_count(params, *, user, connection_id):
        return {"published": published}

    def echo(params, *, user, connection_id):
        return params

    hub = wshub.Sidecar(binary=args.wshub, rpc_handlers={"jobs.count": jobs_count, "echo": echo})
    with hub:
        print(json.dumps({"hub_pid": hub.pid, "addr": hub.addr}), flush=True)
        while args.count == 0 or published < args.count:
            hub.publish("job_progress", {"n": published + 1}, room="jobs")
            published += 1
            time.sleep(args.interval)
    return hub.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
