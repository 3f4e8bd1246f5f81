# wshub developer commands. `just --list` shows them.

# Run the hub with the defaults (127.0.0.1:8000).
run *ARGS:
    cargo run --release -- {{ARGS}}

# The README's test command: unit, integration and doc tests.
test:
    cargo test

# Formatting and lints, as CI runs them.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace
    .ci/check-links

# Everything CI runs, including installs and browser tests.
ci:
    .ci/run

# The benchmark (see BENCHMARKS.md); `just bench --smoke` for a quick check.
bench *ARGS:
    cargo build --release --workspace
    target/release/wshub-bench {{ARGS}}

# wshub against the Node ws and axum peers and the floor program, with ratios.
bench-compare:
    bench/compare.sh

# One hub against two on Redis, interleaved (BENCHMARKS.md, issue 12); needs redis-server.
bench-cluster:
    cargo build --release --workspace
    bench/cluster.sh

# A Redis and three hubs on loopback (README, "Running several hubs"); Ctrl-C stops them.
cluster *ARGS:
    cargo build --release
    examples/cluster.sh {{ARGS}}

# Hostile peers against the hub, RSS and files measured (docs/limits.md); `just attack ping-flood` for one.
attack *KINDS:
    bench/attack.sh {{KINDS}}

# Cycles of 10,000 connections coming and going; files and RSS checked (docs/limits.md).
soak *ARGS:
    cargo build --release --workspace
    target/release/wshub-bench --soak {{ARGS}}

# The Python package: `pip install .` in a fresh venv, then its tests and the FastAPI example's.
test-python *ARGS:
    python/run-tests.sh target/python-venv {{ARGS}}

# Real-browser tests (installs Chromium and npm packages when missing).
test-browser:
    tests/browser/run.sh

# Fuzz targets for SECONDS each, all or the named ones (see fuzz/run.sh).
fuzz SECONDS="600" *TARGETS:
    fuzz/run.sh {{SECONDS}} {{TARGETS}}
