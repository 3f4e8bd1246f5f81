#!/usr/bin/env bash
# Issue 12 point 6, interleaved: one hub on the memory engine against a
# cluster of hubs on one Redis (started here on a free loopback port),
# RUNS times each, and the medians.
#
#   bench/cluster.sh                 # 1,000 subscribers, 50 publishes/s, 3 runs
#   RUNS=5 HUBS=3 bench/cluster.sh
#
# Each round runs, in this order: (a) one hub, SUBSCRIBERS subscribers in
# one room, PUBLISHES publishes at RATE/s; (b) HUBS hubs on Redis with the
# same subscribers spread over them; (c) one hub, PUBLISHERS publishers
# flooding one room for FLOOD_TIME with no subscriber; (d) the same
# against the cluster. Every report is kept as
# JSON in OUT. Needs redis-server, cargo and python3; loopback only, every
# run bounded by the bench's own limits.
set -euo pipefail
cd "$(dirname "$0")/.."

SUBSCRIBERS=${SUBSCRIBERS:-1000}
PUBLISHES=${PUBLISHES:-1000}
RATE=${RATE:-50}
PUBLISHERS=${PUBLISHERS:-16}
FLOOD_TIME=${FLOOD_TIME:-8s}
RUNS=${RUNS:-3}
HUBS=${HUBS:-2}
OUT=${OUT:-$(mktemp -d -t wshub-cluster.XXXXXX)}
mkdir -p "$OUT"

say() { printf '=== %s\n' "$*" >&2; }

command -v redis-server >/dev/null || { echo "redis-server is needed" >&2; exit 2; }
[ -x target/release/wshub-bench ] || cargo build --release --workspace --quiet
BENCH=target/release/wshub-bench

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REDIS_DIR=$(mktemp -d -t wshub-cluster-redis.XXXXXX)
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$REDIS_DIR" --daemonize yes --pidfile "$REDIS_DIR/redis.pid" >/dev/null
for _ in $(seq 100); do [ -s "$REDIS_DIR/redis.pid" ] && break; sleep 0.05; done
REDIS_PID=$(cat "$REDIS_DIR/redis.pid")
cleanup() { kill "$REDIS_PID" 2>/dev/null || true; rm -rf "$REDIS_DIR"; }
trap cleanup EXIT
URL="redis://127.0.0.1:$PORT"
say "Redis $(redis-server --version | awk '{print $3}') on $URL (pid $REDIS_PID); reports in $OUT"

CLUSTER=(--hubs "$HUBS" --hub-arg=--redis-url="$URL" --redis-pid "$REDIS_PID")
for run in $(seq "$RUNS"); do
    say "round $run: one hub, latency"
    "$BENCH" -n "$SUBSCRIBERS" --publishes "$PUBLISHES" --rate "$RATE" --json \
        >"$OUT/single-latency-$run.json" || say "round $run: single-latency FAILED (kept in $OUT/single-latency-$run.json)"
    say "round $run: $HUBS hubs on Redis, latency"
    "$BENCH" "${CLUSTER[@]}" -n "$SUBSCRIBERS" --publishes "$PUBLISHES" --rate "$RATE" --json \
        >"$OUT/cluster-latency-$run.json" || say "round $run: cluster-latency FAILED (kept in $OUT/cluster-latency-$run.json)"
    say "round $run: one hub, flood"
    "$BENCH" -n 0 --publishes 10 --publishers "$PUBLISHERS" --flood --flood-time "$FLOOD_TIME" \
        --flood-publishes 1000000 --json >"$OUT/single-flood-$run.json" || say "round $run: single-flood FAILED (kept in $OUT/single-flood-$run.json)"
    say "round $run: $HUBS hubs on Redis, flood"
    "$BENCH" "${CLUSTER[@]}" -n 0 --publishes 10 --publishers "$PUBLISHERS" --flood \
        --flood-time "$FLOOD_TIME" --flood-publishes 1000000 --json >"$OUT/cluster-flood-$run.json" || say "round $run: cluster-flood FAILED (kept in $OUT/cluster-flood-$run.json)"
done

python3 - "$OUT" "$RUNS" <<'EOF'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
def load(kind, run):
    with open(f"{out}/{kind}-{run}.json") as f:
        return json.load(f)
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
rows = {}
for kind in ["single-latency", "cluster-latency", "single-flood", "cluster-flood"]:
    reports = [load(kind, r) for r in range(1, runs + 1)]
    lat = [r.get("latency") or {} for r in reports]
    fl = [r.get("flood") or {} for r in reports]
    rows[kind] = {
        "p50_ms": med([(l.get("publish_to_all") or {}).get("p50_ms") for l in lat]),
        "p99_ms": med([(l.get("publish_to_all") or {}).get("p99_ms") for l in lat]),
        "rss_connected_kib": med([r["memory"].get("rss_connected_kib") for r in reports]),
        "kib_per_connection": med([r["memory"].get("kib_per_connection") for r in reports]),
        "server_us_per_delivery": med([(l.get("cpu") or {}).get("server_us_per_delivery") for l in lat]),
        "redis_us_per_delivery": med([(l.get("cpu") or {}).get("redis_us_per_delivery") for l in lat]),
        "flood_per_s": med([f.get("publishes_per_s") for f in fl]),
        "flood_server_us_per_publish": med([
            ((f.get("cpu") or {}).get("server_ms") or 0) * 1000 / max((f.get("publish") or {}).get("accepted") or 1, 1)
            for f in fl]),
        "flood_redis_us_per_publish": med([
            ((f.get("cpu") or {}).get("redis_ms") or 0) * 1000 / max((f.get("publish") or {}).get("accepted") or 1, 1)
            for f in fl]),
        "flood_bench_us_per_publish": med([
            ((f.get("cpu") or {}).get("bench_ms") or 0) * 1000 / max((f.get("publish") or {}).get("accepted") or 1, 1)
            for f in fl]),
    }
print(json.dumps(rows, indent=2))
EOF
