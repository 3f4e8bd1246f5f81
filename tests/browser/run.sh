#!/usr/bin/env bash
# Real-browser tests of web/client.js and the live page: Debian's Chromium
# driven by playwright-core under Node's test runner, against the real hub.
#
# Works from scratch: installs Chromium (apt) when /usr/bin/chromium is
# missing, runs `npm ci` here, builds the release hub unless WSHUB_BIN names
# one, then runs every *.test.js here within a global time bound.
#
# Env: WSHUB_BIN (hub binary, default target/release/wshub),
#      WSHUB_BROWSER_TIMEOUT (seconds for the whole test run, default 900),
#      WSHUB_TEST_VERBOSE=1 (echo the hubs' logs).
# Writes target/browser/live-page.png (and -dark.png): CI artifacts.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

say() { printf '[browser-tests] %s\n' "$*"; }

if ! command -v node >/dev/null 2>&1; then
  say "node is missing: Node 20 or newer is needed" >&2
  exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  say "node $(node --version) is too old: Node 20 or newer is needed" >&2
  exit 1
fi

if [ ! -x /usr/bin/chromium ] && [ -z "${CHROMIUM_PATH:-}" ]; then
  say "installing chromium (apt)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 $sudo apt-get update -qq
  timeout 900 $sudo apt-get install -y -qq chromium >/dev/null
fi
"${CHROMIUM_PATH:-/usr/bin/chromium}" --version 2>/dev/null || true

say "npm ci"
(cd "$here" && timeout 300 npm ci --no-audit --no-fund --loglevel=error)

if [ -z "${WSHUB_BIN:-}" ]; then
  say "cargo build --release"
  timeout 1800 cargo build --release --quiet
  export WSHUB_BIN="$repo/target/release/wshub"
fi
if [ ! -x "$WSHUB_BIN" ]; then
  say "no hub binary at $WSHUB_BIN" >&2
  exit 1
fi

mkdir -p "$repo/target/browser"
say "running the tests (bound: ${WSHUB_BROWSER_TIMEOUT:-900} s)"
cd "$here"
start=$SECONDS
status=0
timeout --kill-after=15 "${WSHUB_BROWSER_TIMEOUT:-900}" \
  node --test --test-concurrency=1 --test-timeout=120000 ./*.test.js || status=$?
say "finished in $((SECONDS - start)) s with status $status"
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
  say "the run hit its time bound" >&2
fi
exit "$status"
