#!/usr/bin/env bash
# The project's test command: every test of every crate, including the integration tests
# that start the real `troupe` binary and talk to it over WebSockets.
# Later suites (browser tests, ScyllaDB contract runs) hook in here.
set -euo pipefail
cd "$(dirname "$0")"

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
