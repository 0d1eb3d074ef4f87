#!/usr/bin/env bash
# Sets up what is missing, then runs every test: native `cargo test` (the logic against
# in-memory stores) and the end-to-end suite (the compiled worker in workerd over real
# local KV). Exits non-zero if any test fails.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh || exit 1

failed=0
echo "==> native tests (cargo test)"
cargo test --all-targets -- --skip histories_keep_every_acknowledged_write || failed=1

echo "==> deterministic simulation (10,000 seeded histories with injected faults)"
cargo test --test simulation -- --nocapture || failed=1

echo "==> building the worker"
if bash scripts/build.sh; then
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
