#!/usr/bin/env bash
# The scaling curve: the same paced bench at several subscriber counts, for
# wshub and the peers, one JSON report per run, then bench/plot.py draws
# time-to-last-subscriber against subscriber count (BENCHMARKS.md).
#
#   bench/sweep.sh                         # wshub, node-ws and axum; 10 .. 19000
#   SERVERS=wshub COUNTS="1000 2000 5000 10000 19000" bench/sweep.sh
#
# Settings (environment): SERVERS (wshub node-ws axum), COUNTS (10 100 1000
# 2000 5000 10000 19000), RATE (5 publishes per second), PUBLISHES (50),
# OUT (bench/results/sweep), PLOT (bench/results/time-to-last.svg).
set -euo pipefail
cd "$(dirname "$0")/.."

SERVERS=${SERVERS:-wshub node-ws axum}
COUNTS=${COUNTS:-10 100 1000 2000 5000 10000 19000}
RATE=${RATE:-5}
PUBLISHES=${PUBLISHES:-50}
OUT=${OUT:-bench/results/sweep}
PLOT=${PLOT:-bench/results/time-to-last.svg}
mkdir -p "$OUT"

say() { printf '=== %s\n' "$*" >&2; }

say "building"
cargo build --release --workspace --quiet
case " $SERVERS " in *" axum "*) (cd bench/peers/axum && cargo build --release --quiet) ;; esac
case " $SERVERS " in *" node-ws "*) (cd bench/peers/node-ws && npm ci --silent --no-audit --no-fund) ;; esac

command_for() {
    case "$1" in
        wshub) echo "" ;;
        node-ws) echo "node bench/peers/node-ws/server.js" ;;
        axum) echo "bench/peers/axum/target/release/wshub-bench-peer-axum" ;;
        floor) (cd bench/floor && cargo build --release --quiet) >&2; echo "bench/floor/target/release/wshub-bench-floor" ;;
        *) echo "unknown server $1" >&2; exit 2 ;;
    esac
}

for n in $COUNTS; do
    for server in $SERVERS; do
        cmd=$(command_for "$server")
        say "$server, $n subscribers"
        args=(--json -n "$n" --publishes "$PUBLISHES" --rate "$RATE")
        if [ -n "$cmd" ]; then args+=(--hub-cmd "$cmd"); fi
        if ! target/release/wshub-bench "${args[@]}" >"$OUT/$server-$n.json"; then
            say "$server at $n reported a failure (kept in $OUT/$server-$n.json)"
        fi
        sleep 2
    done
done
python3 bench/plot.py "$OUT" "$PLOT"
say "plot: $PLOT"
