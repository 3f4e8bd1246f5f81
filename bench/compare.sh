#!/usr/bin/env bash
# Runs the same `wshub-bench` against wshub, the two peers (Node ws, tokio +
# axum) and the floor, RUNS times each, interleaved, and prints the medians
# and each server's ratio to wshub (and to the floor for CPU per delivery).
#
#   bench/compare.sh                      # 10,000 subscribers, 3 runs each
#   SUBSCRIBERS=1000 RATE=10 bench/compare.sh
#   SERVERS="wshub floor" RUNS=5 bench/compare.sh
#   SERVERS="wshub wshub-sse" SUBSCRIBERS=1000 RATE=50 bench/compare.sh   # WebSocket against SSE
#
# Settings (environment): SUBSCRIBERS (10000), PUBLISHES (60), RATE (2 per
# second), PAYLOAD (128 bytes), FLOOD_TIME (5s), RUNS (3), SERVERS (wshub
# node-ws axum floor; `wshub-sse` is wshub with its subscribers on
# `/sse`, `--transport sse`, and `wshub-sse3` the same with two quiet rooms
# more per stream, so every delivery writes a stream's own `id:` line), OUT (a new temporary directory: one JSON report per
# run is kept there), EXTRA (more flags for every bench run).
# Needs cargo, node/npm and python3. Everything runs on loopback; every run
# is bounded by the bench's own limits.
set -euo pipefail
cd "$(dirname "$0")/.."

SUBSCRIBERS=${SUBSCRIBERS:-10000}
PUBLISHES=${PUBLISHES:-60}
RATE=${RATE:-2}
PAYLOAD=${PAYLOAD:-128}
FLOOD_TIME=${FLOOD_TIME:-5s}
RUNS=${RUNS:-3}
SERVERS=${SERVERS:-wshub node-ws axum floor}
OUT=${OUT:-$(mktemp -d -t wshub-compare.XXXXXX)}
EXTRA=${EXTRA:-}
mkdir -p "$OUT"

say() { printf '=== %s\n' "$*" >&2; }

say "building wshub, the peers and the floor"
cargo build --release --workspace --quiet
wants() { case " $SERVERS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
if wants axum; then (cd bench/peers/axum && cargo build --release --quiet); fi
if wants floor; then (cd bench/floor && cargo build --release --quiet); fi
if wants node-ws; then (cd bench/peers/node-ws && npm ci --silent --no-audit --no-fund); fi

command_for() {
    case "$1" in
        wshub | wshub-sse | wshub-sse3) echo "" ;;
        node-ws) echo "node bench/peers/node-ws/server.js" ;;
        axum) echo "bench/peers/axum/target/release/wshub-bench-peer-axum" ;;
        floor) echo "bench/floor/target/release/wshub-bench-floor" ;;
        *) echo "unknown server $1" >&2; exit 2 ;;
    esac
}

for run in $(seq 1 "$RUNS"); do
    for server in $SERVERS; do
        cmd=$(command_for "$server")
        say "run $run/$RUNS: $server, $SUBSCRIBERS subscribers"
        args=(--json -n "$SUBSCRIBERS" --publishes "$PUBLISHES" --rate "$RATE"
              --payload-bytes "$PAYLOAD" --flood --flood-time "$FLOOD_TIME")
        if [ -n "$cmd" ]; then args+=(--hub-cmd "$cmd"); fi
        case "$server" in
            wshub-sse) args+=(--transport sse) ;;
            wshub-sse3) args+=(--transport sse --quiet-rooms 2) ;;
        esac
        # shellcheck disable=SC2086 # EXTRA is a list of flags
        if ! target/release/wshub-bench "${args[@]}" $EXTRA >"$OUT/$server-$run.json"; then
            say "$server run $run reported a failure (kept in $OUT/$server-$run.json)"
        fi
        sleep 2 # let sockets of the last run leave TIME_WAIT pressure behind
    done
done

say "reports in $OUT"
python3 - "$OUT" $SERVERS <<'PY'
import json, os, re, statistics, sys

out, servers = sys.argv[1], sys.argv[2:]
rows = {
    "connects per s": lambda r: r["connect"]["per_second"],
    "KiB per connection": lambda r: r["memory"]["kib_per_connection"],
    "publish → all p50 ms": lambda r: r["latency"]["publish_to_all"]["p50_ms"],
    "publish → all p99 ms": lambda r: r["latency"]["publish_to_all"]["p99_ms"],
    "reply → all p50 ms": lambda r: r["latency"]["reply_to_all"]["p50_ms"],
    "reply → all p99 ms": lambda r: r["latency"]["reply_to_all"]["p99_ms"],
    "delivery p50 ms": lambda r: r["latency"]["per_delivery"]["p50_ms"],
    "delivery p99 ms": lambda r: r["latency"]["per_delivery"]["p99_ms"],
    "server µs/delivery (paced)": lambda r: r["latency"]["cpu"]["server_us_per_delivery"],
    "bench µs/delivery (paced)": lambda r: r["latency"]["cpu"]["bench_us_per_delivery"],
    "flood deliveries per s": lambda r: r["flood"]["deliveries_per_s"],
    "server µs/delivery (flood)": lambda r: r["flood"]["cpu"]["server_us_per_delivery"],
    "lost + duplicated": lambda r: r["integrity"]["lost"] + r["integrity"]["duplicated"],
}

def load(server):
    reports = []
    for name in sorted(os.listdir(out)):
        # `server-N.json` exactly: `wshub-3.json` is not `wshub-sse-3.json`.
        if re.fullmatch(re.escape(server) + r"-\d+\.json", name):
            try:
                with open(os.path.join(out, name)) as f:
                    reports.append(json.load(f))
            except (OSError, ValueError):
                pass
    return reports

def median(server, get):
    values = []
    for r in load(server):
        try:
            v = get(r)
        except (KeyError, TypeError):
            continue
        if v is not None:
            values.append(v)
    return statistics.median(values) if values else None

table = {s: {row: median(s, get) for row, get in rows.items()} for s in servers}
runs = {s: len(load(s)) for s in servers}
width = max(len(r) for r in rows)
print(f"\nmedians over runs ({', '.join(f'{s}: {runs[s]}' for s in servers)})")
print(f"{'':<{width}}  " + "  ".join(f"{s:>14}" for s in servers))
for row in rows:
    cells = []
    for s in servers:
        v = table[s][row]
        cells.append(f"{'-' if v is None else f'{v:.3f}' if v < 100 else f'{v:.0f}':>14}")
    print(f"{row:<{width}}  " + "  ".join(cells))

def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "-"

if "wshub" in servers:
    print("\nratios: other server / wshub (below 1 means the other is smaller or faster)")
    for row in rows:
        if row == "lost + duplicated":
            continue
        cells = "  ".join(f"{s}={ratio(table[s][row], table['wshub'][row])}" for s in servers if s != "wshub")
        print(f"  {row:<{width}}  {cells}")
if "floor" in servers:
    print("\nCPU per delivery against the floor (server / floor)")
    for row in ("server µs/delivery (paced)", "server µs/delivery (flood)"):
        cells = "  ".join(f"{s}={ratio(table[s][row], table['floor'][row])}" for s in servers if s != "floor")
        print(f"  {row:<{width}}  {cells}")
PY
