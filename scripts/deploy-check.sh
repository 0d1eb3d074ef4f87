#!/usr/bin/env bash
# Builds and packages the worker for each deployable environment as `wrangler deploy`
# would, without an account (`--dry-run`): wrangler.toml's environments stay deployable.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

failed=0
for env in staging production; do
  out=$(mktemp -d)
  if log=$(CI=true npx --no-install wrangler deploy --dry-run --env "$env" --outdir "$out" 2>&1); then
    echo "$env: $(grep -m1 'Total Upload' <<<"$log"), $(grep -c '^env\.' <<<"$log") bindings"
  else
    echo "$env: wrangler deploy --dry-run failed"
    echo "$log" | tail -40
    failed=1
  fi
  rm -rf "$out"
done
exit "$failed"
