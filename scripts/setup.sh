#!/usr/bin/env bash
# Installs everything building and testing the worker needs, skipping what is already
# there at the right version. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

WORKER_BUILD_VERSION=0.8.7
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '==> %s\n' "$*"; }

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

if [ "$(worker-build --version 2>/dev/null | awk '{print $NF}')" != "$WORKER_BUILD_VERSION" ]; then
  say "installing worker-build $WORKER_BUILD_VERSION (a few minutes)"
  cargo install worker-build --version "$WORKER_BUILD_VERSION" --force
fi

# wasm-bindgen's CLI must match the library version in Cargo.lock exactly.
bindgen_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$bindgen_version" ]; then
  say "installing wasm-bindgen-cli $bindgen_version (a few minutes)"
  # --locked fails for this crate (a yanked transitive dependency), so it is left out.
  cargo install wasm-bindgen-cli --version "$bindgen_version" --force
fi

# npm packages: reinstall only when package-lock.json changed since the last install.
stamp=node_modules/.package-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing npm packages (wrangler, miniflare, binaryen, esbuild, puppeteer-core)"
  npm ci --no-audit --no-fund
  echo "$want" > "$stamp"
fi

# A browser for the dashboard's end-to-end test (tests/e2e/dashboard.test.mjs): Debian's
# chromium, driven by puppeteer-core from npm (which downloads no browser of its own).
if ! command -v chromium >/dev/null 2>&1; then
  say "installing chromium (apt-get)"
  as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi

# A development secret for wrangler dev; never a production one.
if [ ! -f .dev.vars ]; then
  say "writing .dev.vars with a random development JWT_SECRET"
  printf 'JWT_SECRET=%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" > .dev.vars
fi
# Locally no request runs long and KV is strongly consistent: phase moves settle 6 s
# apart instead of 95 s.
grep -q '^PHASE_SETTLE_MARGIN_SECONDS=' .dev.vars || echo 'PHASE_SETTLE_MARGIN_SECONDS=1' >> .dev.vars
grep -q '^KV_CONSISTENCY_WINDOW_SECONDS=' .dev.vars || echo 'KV_CONSISTENCY_WINDOW_SECONDS=0' >> .dev.vars
# Locally the phase-4 verification period lasts a minute instead of a week.
grep -q '^VERIFICATION_PERIOD_SECONDS=' .dev.vars || echo 'VERIFICATION_PERIOD_SECONDS=60' >> .dev.vars
