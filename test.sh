#!/usr/bin/env bash
# The project's test command: every test of every crate, including the integration tests
# that start the real `troupe` binary and talk to it over WebSockets; then the web suite
# (node/web): the TypeScript client library's tests and the browser tests, which drive the
# web client in headless Chromium against the real binary.
#
# Arguments go to the Rust test runner (a filter, say). SKIP_WEB_TESTS=1 skips the web suite.
set -euo pipefail
cd "$(dirname "$0")"

status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@" || status=$?
else
  cargo test --workspace --no-fail-fast "$@" || status=$?
fi

if [ "${SKIP_WEB_TESTS:-}" != "1" ]; then
  echo "== web: client library and browser tests (node/web)"
  # The browser tests start the binary the Rust tests just built.
  cargo build -p troupe --quiet
  target_dir=${CARGO_TARGET_DIR:-target}
  case $target_dir in /*) ;; *) target_dir=$PWD/$target_dir ;; esac
  export TEST_TROUPE_BINARY="$target_dir/debug/troupe"
  (cd node/web && npm ci --no-audit --no-fund --loglevel=error && npm test) || status=$?
fi
exit "$status"
