#!/usr/bin/env bash
# Runs fuzz targets for SECONDS each (default 600), starting from the
# committed seeds (and each target's dictionary in fuzz/dicts, if any), and
# records what each run did as a Markdown table, ready to paste into
# BENCHMARKS.md or docs/limits.md.
#
#   fuzz/run.sh [SECONDS] [TARGET...]    # no TARGET: every target
#   fuzz/run.sh 60 parse_head upgrade_request
#
# FUZZ_FEATURES is passed to `cargo fuzz --features`; FUZZ_RESULTS names
# the results file (default fuzz/results/<UTC time>.md). The table is also
# printed at the end. Exit status is 1 if any target found a crash (its
# input is in fuzz/artifacts/<target>/), 0 otherwise.
#
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP lets the stable
# toolchain provide them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
export RUSTC_BOOTSTRAP=1

features=()
if [[ -n "${FUZZ_FEATURES:-}" ]]; then
    features=(--features "$FUZZ_FEATURES")
fi
if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
known=$(cargo fuzz list)
for target in "${targets[@]}"; do
    grep -qx "$target" <<<"$known" || {
        echo "unknown fuzz target \`$target\`; the targets are: $(echo $known)" >&2
        exit 2
    }
done

dictionary() {
    case $1 in
        parse_head | upgrade_request | stream_request) echo fuzz/dicts/http.dict ;;
        verify_token) echo fuzz/dicts/jwt.dict ;;
    esac
}

# The number after `key:` on libFuzzer's final-stats lines.
stat() { sed -n "s/^stat::$1: *//p" "$2" | tail -1; }

mkdir -p fuzz/results
results=${FUZZ_RESULTS:-fuzz/results/$(date -u +%Y%m%dT%H%M%SZ).md}
cargo fuzz build "${features[@]}"

rows=()
failed=0
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    log=$(mktemp)
    dict=$(dictionary "$target")
    extra=()
    [[ -n "$dict" && -f "$dict" ]] && extra=("-dict=$PWD/$dict")
    set +e
    cargo fuzz run "${features[@]}" "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 "${extra[@]}" 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    set -e
    # The last status line: `#N DONE cov: C ft: F corp: U/S ...`.
    last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$last")
    if ((status == 0)); then
        result=ok
    else
        result="**crash** (exit $status; see fuzz/artifacts/$target)"
        failed=1
    fi
    rows+=("| \`$target\` | $seconds | $(stat number_of_executed_units "$log") | $(stat average_exec_per_sec "$log") | ${cov:-?} | ${ft:-?} | ${corp:-?} | $(stat new_units_added "$log") | $(stat peak_rss_mb "$log") | $result |")
    rm -f "$log"
done

{
    echo "Fuzzing, $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src fuzz || echo ' + local changes'), $(nproc) cores, features: ${FUZZ_FEATURES:-none}."
    echo
    echo "| target | seconds | executions | exec/s | coverage (edges) | features | corpus (units/bytes) | new units | peak RSS (MB) | result |"
    echo "|---|---:|---:|---:|---:|---:|---|---:|---:|---|"
    printf '%s\n' "${rows[@]}"
} >"$results"
echo
cat "$results"
echo
echo "recorded in $results"
exit "$failed"
