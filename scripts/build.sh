#!/usr/bin/env bash
# Builds the worker into build/worker/ with tools installed by scripts/setup.sh, so
# worker-build downloads nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export WASM_BINDGEN_BIN="$HOME/.cargo/bin/wasm-bindgen"
export WASM_OPT_BIN="$PWD/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$PWD/node_modules/.bin/esbuild"
worker-build --release "$@"
# The function names leave the module for a file beside it (scripts/wasm-names.mjs):
# a sixth of the bytes every isolate loads, needed only to read a stack trace.
node scripts/wasm-names.mjs split build/index_bg.wasm build/index_bg.names.txt
