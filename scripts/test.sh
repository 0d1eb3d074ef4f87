#!/usr/bin/env bash
# Sets up what is missing, then runs every test: native `cargo test` (the logic against
# in-memory stores) and the end-to-end suite (the compiled worker in workerd over real
# local KV). Exits non-zero if any test fails.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh || exit 1

failed=0
# --nocapture shows what the tests report as they go: the KV cost table, the backfill
# figures and the simulation's "N histories, M faults injected, 0 violations" line.
echo "==> native tests (cargo test), with the deterministic simulation (10,000 histories)"
cargo test --all-targets -- --nocapture || failed=1

echo "==> building the worker and the command-line client"
if bash scripts/build.sh && cargo build --bin kv-migrate; then
  echo "==> end-to-end tests (workerd through Miniflare)"
  npm run --silent test:e2e || failed=1
else
  echo "the worker did not build: end-to-end tests not run"
  failed=1
fi

if [ "$failed" -ne 0 ]; then
  echo "==> FAILED: see the runners' output above"
fi
exit "$failed"
