#!/usr/bin/env bash
# What the disabled per-recipient debug line of the fan-out costs (issue 10).
#
# `Trace::queued` in src/hub/publish.rs is a `tracing::debug!` run once per
# recipient of every event; at the hub's default level (info) it is off.
# This script builds the hub as it is and a variant with that one call
# deleted (by sed, in a scratch copy of the tracked files: nothing in this
# tree changes), then runs the same two benches against each binary in
# turn, RUNS times, interleaved (the order alternates from run to run), and
# prints the medians and the ratio variant / as-is:
#
#   paced: wshub-bench -n 1000 --rate 50 --publishes 250      -> hub µs per delivery
#   flood: wshub-bench -n 1000 --flood --flood-time 5s --publishers 16
#                                                             -> deliveries per s, hub µs per delivery
#
#   bench/log-overhead.sh
#   RUNS=3 OUT=bench/results/log-overhead bench/log-overhead.sh
#
# Settings (environment): RUNS (5), SUBSCRIBERS (1000), FLOOD_TIME (5s),
# LOG (the hub's WSHUB_LOG: info, its default; the bench alone would use
# warn), OUT (a new temporary directory: one JSON report per run, and the
# load average before each), SCRATCH (target/log-overhead: the copy and its
# target directory, kept so a second run builds incrementally), EXTRA (more
# flags for every bench run). Everything runs on loopback and is bounded by
# the bench's own limits.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
SUBSCRIBERS=${SUBSCRIBERS:-1000}
FLOOD_TIME=${FLOOD_TIME:-5s}
LOG=${LOG:-info}
OUT=${OUT:-$(mktemp -d -t wshub-log-overhead.XXXXXX)}
SCRATCH=${SCRATCH:-target/log-overhead}
EXTRA=${EXTRA:-}
mkdir -p "$OUT" "$SCRATCH"
SCRATCH=$(cd "$SCRATCH" && pwd)

say() { printf '=== %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

say "building the hub as it is"
cargo build --release --workspace --quiet

say "copying the tracked files to $SCRATCH/src and deleting the debug line of Trace::queued"
rm -rf "$SCRATCH/src"
mkdir -p "$SCRATCH/src"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -C "$SCRATCH/src" -xf -
variant_src="$SCRATCH/src/src/hub/publish.rs"
# Within `fn queued … }`: delete `tracing::debug!( … );`; the connection
# argument is then unused, hence `_conn` (the compiler still warns that
# Trace's fields are never read: expected, they only fed that line).
sed -i -e '/fn queued(&self, conn: ConnId)/,/^    }$/{
  /tracing::debug!(/,/^        );$/d
  s/conn: ConnId/_conn: ConnId/
}' "$variant_src"
if grep -q '"event queued"' "$variant_src" || ! grep -q '_conn: ConnId' "$variant_src"; then
    die "the sed did not remove the call (has Trace::queued changed shape?); nothing measured"
fi
diff -u src/hub/publish.rs "$variant_src" >&2 || true

say "building the variant (target dir $SCRATCH/target)"
if [ ! -d "$SCRATCH/target/release/deps" ]; then
    # Seeded from this tree's build so only wshub itself compiles.
    mkdir -p "$SCRATCH/target"
    cp -a target/release "$SCRATCH/target/"
fi
(cd "$SCRATCH/src" && CARGO_TARGET_DIR="$SCRATCH/target" cargo build --release --quiet -p wshub --bin wshub)

as_is=$(pwd)/target/release/wshub
variant=$SCRATCH/target/release/wshub
# The message text is in the binary that has the call, and only there.
if ! grep -aq 'event queued' "$as_is" || grep -aq 'event queued' "$variant"; then
    die "the binaries do not differ by the debug line as expected"
fi
{
    echo "as-is:   $as_is ($(git rev-parse --short HEAD)$(git diff --quiet || echo ', with uncommitted changes'))"
    echo "variant: $variant (the same, the tracing::debug! of Trace::queued deleted)"
    echo "WSHUB_LOG=$LOG; $(nproc) CPUs"
} | tee "$OUT/binaries.txt" >&2

bench() { # name binary kind run
    local name=$1 bin=$2 kind=$3 run=$4 args
    if [ "$kind" = paced ]; then
        args=(-n "$SUBSCRIBERS" --rate 50 --publishes 250)
    else
        args=(-n "$SUBSCRIBERS" --flood --flood-time "$FLOOD_TIME" --publishers 16)
    fi
    echo "$kind-$name-$run $(cat /proc/loadavg)" >>"$OUT/loadavg.txt"
    say "run $run/$RUNS: $kind, $name"
    # shellcheck disable=SC2086 # EXTRA is a list of flags
    if ! WSHUB_BIN=$bin WSHUB_LOG=$LOG target/release/wshub-bench --json "${args[@]}" $EXTRA \
        >"$OUT/$kind-$name-$run.json"; then
        say "$kind $name run $run reported a failure (kept in $OUT/$kind-$name-$run.json)"
    fi
    sleep 2
}

for run in $(seq 1 "$RUNS"); do
    if [ $((run % 2)) = 1 ]; then order="as-is variant"; else order="variant as-is"; fi
    for kind in paced flood; do
        for name in $order; do
            if [ "$name" = as-is ]; then bench as-is "$as_is" "$kind" "$run"; else bench variant "$variant" "$kind" "$run"; fi
        done
    done
done

say "reports in $OUT"
python3 - "$OUT" <<'PY'
import json, os, statistics, sys

out = sys.argv[1]
rows = [
    ("paced", "hub µs per delivery, paced", lambda r: r["latency"]["cpu"]["server_us_per_delivery"]),
    ("paced", "publish → all p99 ms, paced", lambda r: r["latency"]["publish_to_all"]["p99_ms"]),
    ("flood", "flood deliveries per s", lambda r: r["flood"]["deliveries_per_s"]),
    ("flood", "hub µs per delivery, flood", lambda r: r["flood"]["cpu"]["server_us_per_delivery"]),
]

def values(kind, name, get):
    found = []
    for file in sorted(os.listdir(out)):
        if file.startswith(f"{kind}-{name}-") and file.endswith(".json"):
            try:
                with open(os.path.join(out, file)) as f:
                    r = json.load(f)
                found.append((get(r), r["integrity"]["lost"] + r["integrity"]["duplicated"]))
            except (OSError, ValueError, KeyError, TypeError):
                pass
    return found

def fmt(v):
    return f"{v:,.0f}" if v >= 1000 else f"{v:.2f}"

print("\nmedians (every run in brackets); ratio = variant / as-is")
print(f"| | as-is (debug line) | variant (no line) | ratio |")
print("|---|---:|---:|---:|")
bad = 0
for kind, label, get in rows:
    a, b = values(kind, "as-is", get), values(kind, "variant", get)
    bad += sum(l for _, l in a + b)
    if not a or not b:
        print(f"| {label} | - | - | - |")
        continue
    ma, mb = statistics.median(v for v, _ in a), statistics.median(v for v, _ in b)
    runs = lambda xs: ", ".join(fmt(v) for v, _ in xs)
    print(f"| {label} | {fmt(ma)} [{runs(a)}] | {fmt(mb)} [{runs(b)}] | {mb / ma:.3f} |")
print(f"\nlost + duplicated over all runs: {bad}")
with open(os.path.join(out, "loadavg.txt")) as f:
    loads = [float(line.split()[1]) for line in f if line.strip()]
print(f"1-minute load average before the runs: {min(loads):.2f} to {max(loads):.2f} "
      f"(median {statistics.median(loads):.2f})")
PY
