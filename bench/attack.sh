#!/usr/bin/env bash
# Runs `wshub-bench --attack` for each hostile peer of docs/limits.md, RUNS
# times each (interleaved), one JSON report per run in OUT, and prints the
# medians as a table: hub RSS before / peak / after, open files, the honest
# client's ping round trip during the attack, and (with gdb) what
# malloc_trim(0) would give back.
#
#   bench/attack.sh                       # every attack, as docs/limits.md quotes them
#   bench/attack.sh ping-flood many-rooms # some of them
#   OUT=bench/results/limits-after RUNS=3 bench/attack.sh
#
# Settings (environment): OUT (a new temporary directory), RUNS (1), EXTRA (more
# flags for every run, e.g. "--url http://127.0.0.1:8000 --hub-pid 123"),
# MALLOC_PROBE (1 when gdb is installed: attach it after each run).
# Every run is on loopback and bounded: the attacker stops after its
# --attack-time (10-20 s) or once the hub's RSS passes --rss-cap-mib (2 GiB).
# A run whose hub breaks the bound exits non-zero; the script goes on.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-$(mktemp -d -t wshub-attack.XXXXXX)}
RUNS=${RUNS:-1}
EXTRA=${EXTRA:-}
if [ -z "${MALLOC_PROBE:-}" ]; then
    if command -v gdb >/dev/null; then MALLOC_PROBE=1; else MALLOC_PROBE=0; fi
fi
KINDS=("$@")
if [ ${#KINDS[@]} -eq 0 ]; then KINDS=(ping-flood pipeline history-flood many-rooms); fi
mkdir -p "$OUT"

say() { printf '=== %s\n' "$*" >&2; }

say "building wshub"
cargo build --release --workspace --quiet

# name, then the flags of one run
runs=()
for kind in "${KINDS[@]}"; do
    case "$kind" in
        ping-flood) runs+=("ping-flood|--attack ping-flood --attack-time 10s") ;;
        pipeline) runs+=("pipeline|--attack pipeline --attack-time 15s") ;;
        history-flood)
            runs+=("history-flood|--attack history-flood")
            runs+=("history-flood-16mib|--attack history-flood --hub-arg=--max-history-bytes=16777216")
            ;;
        many-rooms)
            runs+=("many-rooms|--attack many-rooms --attack-time 20s")
            runs+=("many-rooms-200k|--attack many-rooms --attack-time 20s --hub-arg=--max-rooms-per-connection=200000")
            ;;
        *) echo "unknown attack $kind (ping-flood, pipeline, history-flood, many-rooms)" >&2; exit 2 ;;
    esac
done

probe=()
if [ "$MALLOC_PROBE" = 1 ]; then probe=(--malloc-probe); fi
for n in $(seq 1 "$RUNS"); do
    for run in "${runs[@]}"; do
        name=${run%%|*}
        flags=${run#*|}
        say "$name, run $n/$RUNS"
        # shellcheck disable=SC2086 # flags and EXTRA are lists of flags
        if ! target/release/wshub-bench --json $flags "${probe[@]}" $EXTRA >"$OUT/$name-$n.json"; then
            say "$name: the hub broke the bound (report kept in $OUT/$name-$n.json)"
        fi
        sleep 2 # sockets of the last run leave
    done
done

say "reports in $OUT"
python3 - "$OUT" "${runs[@]%%|*}" <<'PY'
import json, os, statistics, sys

out, names = sys.argv[1], sys.argv[2:]

def reports(name):
    found = []
    for file in sorted(os.listdir(out)):
        stem = file[:-5]
        if file.endswith(".json") and stem.rpartition("-")[0] == name:
            try:
                with open(os.path.join(out, file)) as f:
                    found.append(json.load(f))
            except (OSError, ValueError):
                pass
    return found

def med(rs, get, fmt="{:.1f}"):
    values = []
    for r in rs:
        try:
            v = get(r)
        except (KeyError, TypeError):
            continue
        if v is not None:
            values.append(v)
    return fmt.format(statistics.median(values)) if values else "-"

mib = lambda kib: kib / 1024
print("\nmedians over runs; RSS in MiB, times in ms")
print("\n| attack | runs | stopped by | RSS before / peak / after | files before / peak / after "
      "| honest ping p50 / p99 / max, attack | slowest ping after | malloc in use / held, trim returns "
      "| verdicts |")
print("|---|---:|---|---|---|---|---:|---|---|")
for name in names:
    rs = reports(name)
    if not rs:
        print(f"| {name} | 0 | no report | | | | | | |")
        continue
    stopped = sorted({r["work"]["stopped_by"].replace("_", " ") + (
        f" ({r['work']['hub_action']})" if r["work"].get("hub_action") else "") for r in rs})
    rss = " / ".join(med(rs, lambda r, k=k: mib(r["rss_kib"][k])) for k in ("before", "peak", "after"))
    fds = " / ".join(med(rs, lambda r, k=k: r["fds"][k], "{:.0f}") for k in ("before", "peak", "after"))
    ping = " / ".join(med(rs, lambda r, k=k: r["honest_ping_ms"]["attack"][k], "{:.2f}")
                      for k in ("p50_ms", "p99_ms", "max_ms"))
    after = med(rs, lambda r: r["honest_ping_ms"]["after"]["max_ms"], "{:.0f}")
    malloc = " / ".join(med(rs, lambda r, k=k: r["malloc"][k] / 2**20) for k in ("in_use_bytes", "system_bytes"))
    malloc += ", " + med(rs, lambda r: mib(r["malloc"]["returned_kib"]))
    verdicts = ", ".join("PASS" if not r["problems"] else "FAIL" for r in rs)
    ignored = sorted({a for r in rs for a in r["ignored_hub_args"]})
    label = name + (f" (hub lacks {' '.join(ignored)})" if ignored else "")
    print(f"| {label} | {len(rs)} | {'; '.join(stopped)} | {rss} | {fds} | {ping} | {after} | {malloc} | {verdicts} |")
print()
for name in names:
    for r in reports(name)[:1]:
        if r["problems"]:
            print(f"{name}: {'; '.join(r['problems'])}")
PY
