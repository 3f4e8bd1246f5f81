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

# Everything CI runs, including installs and browser tests.
ci:
    .ci/run

# The benchmark (see BENCHMARKS.md).
bench *ARGS:
    cargo run --release -- bench {{ARGS}}
