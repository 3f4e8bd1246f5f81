#!/usr/bin/env bash
# A cluster on loopback: one Redis and three hubs on it (README, "Running
# several hubs"). A tab subscribed on hub 1 receives an event published on
# hub 3; presence on hub 2 lists it; everything stops on Ctrl-C (or at
# once with `--check`, which is what CI-like use wants).
#
#   examples/cluster.sh            # leaves the cluster running until Ctrl-C
#   examples/cluster.sh --check    # runs the demonstration and stops
#
# Needs redis-server and a built wshub (`cargo build --release`; or set
# WSHUB_BIN). Ports: Redis on 6390 and hubs on 8001-8003 unless REDIS_PORT
# and HUB_PORT (the first hub's) say otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

WSHUB=${WSHUB_BIN:-target/release/wshub}
REDIS_PORT=${REDIS_PORT:-6390}
HUB_PORT=${HUB_PORT:-8001}
[ -x "$WSHUB" ] || cargo build --release --quiet
command -v redis-server >/dev/null || { echo "install redis-server first" >&2; exit 2; }

DIR=$(mktemp -d -t wshub-cluster.XXXXXX)
PIDS=()
stop() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap stop EXIT INT TERM

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --dir "$DIR" >"$DIR/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.05
done

URL="redis://127.0.0.1:$REDIS_PORT"
for i in 1 2 3; do
    port=$((HUB_PORT + i - 1))
    "$WSHUB" --bind "127.0.0.1:$port" --redis-url "$URL" --node-id "hub-$i" \
        >"$DIR/hub-$i.out" 2>"$DIR/hub-$i.log" &
    PIDS+=($!)
done
for i in 1 2 3; do
    for _ in $(seq 100); do [ -s "$DIR/hub-$i.out" ] && break; sleep 0.05; done
    echo "hub-$i: $(head -1 "$DIR/hub-$i.out")"
done

HUB1="ws://127.0.0.1:$HUB_PORT/ws"
HUB2="http://127.0.0.1:$((HUB_PORT + 1))"
HUB3="http://127.0.0.1:$((HUB_PORT + 2))"

# A tab on hub 1 (the bundled CLI client), printing what it receives.
"$WSHUB" listen --url "$HUB1" --rooms demo >"$DIR/tab.out" 2>&1 &
PIDS+=($!)
sleep 0.5

echo "publishing on hub 3:"
curl -s -X POST "$HUB3/api/events" -H 'Content-Type: application/json' \
    -d '{"room":"demo","type":"hello","payload":{"from":"hub-3"}}'
echo
sleep 0.3
echo "the room as hub 2 sees it:"
curl -s "$HUB2/api/rooms/demo"
echo
echo "what the tab on hub 1 received:"
grep '"hello"' "$DIR/tab.out" || { echo "nothing arrived" >&2; exit 1; }

if [ "${1:-}" = "--check" ]; then
    exit 0
fi
echo "the cluster is running (hubs on $HUB_PORT-$((HUB_PORT + 2)), Redis on $REDIS_PORT); Ctrl-C stops it"
wait
