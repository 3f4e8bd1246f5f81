#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600), starting from the
# committed seeds. cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP lets
# the stable toolchain provide them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
for target in decode_message parse_head room_name frame_decoder; do
    mkdir -p "fuzz/corpus/$target"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1
done
