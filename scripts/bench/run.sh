#!/usr/bin/env bash
# The benchmark: writes BENCHMARKS.md at the repository root. Installs what it needs
# (scripts/setup.sh, wrk), builds the worker, then measures
#   1. KV operations per request, every endpoint and phase, against the floor (native);
#   2. backfill cost on 10,000 and 100,000 synthetic legacy keys (native count), plus one
#      run of the built worker in workerd;
#   3. throughput and latency under `wrangler dev` with wrk, the product against the
#      minimal JavaScript worker in scripts/bench/minimal-worker/ (with and without a
#      Durable Object for updates), the minimal Rust worker in scripts/bench/minimal-rust/
#      (read hits) and, with --before, the build of another commit, alternating;
#      and where a read hit's CPU goes (V8's sampling profiler, scripts/bench/profile.mjs);
#   4. wasm size and dev-server start-up, for the product and the minimal workers;
#   5. the CPU time of the request hot path (native);
#   6. the cost at list price per million requests: KV, and the Durable Objects' requests,
#      storage and (estimated) duration (scripts/bench/cost.mjs), before and after;
#   7. 100,000 legacy keys backfilled through the queue and through the cron, side by side,
#      every key verified, and what that means for 1M, 10M and 100M keys
#      (scripts/bench/fanout.mjs).
# Not part of the test command: timings are not assertions. Takes about 30 minutes and
# stops by itself (every load run is bounded; the whole workerd part by BENCH_TIME_LIMIT_S).
#
# Options: --quick   short runs (1 round of 3 s, 2,000 keys in workerd) to try the harness
#          --out F   where to write (default BENCHMARKS.md)
#          --before DIR  a git worktree of the commit to compare against (e.g.
#                    `git worktree add --detach ../before-wt a023145`): built there (with
#                    CARGO_TARGET_DIR=$BEFORE_CARGO_TARGET_DIR if set), its KV counts and
#                    its worker measured in the same run, side by side with this build's
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

command_line="bash scripts/bench/run.sh${*:+ $*}"
out=BENCHMARKS.md
quick=0
before=
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1; shift ;;
    --out) out=$2; shift 2 ;;
    --before) before=$(cd "$2" && pwd); shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

say() { printf '==> %s\n' "$*"; }

bash scripts/setup.sh
if ! command -v wrk >/dev/null; then
  say "installing wrk"
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi

say "building the worker"
bash scripts/build.sh >/dev/null 2>&1 || bash scripts/build.sh
say "building the minimal Rust worker (scripts/bench/minimal-rust)"
build_minimal_rust() (
  cd scripts/bench/minimal-rust
  export WASM_BINDGEN_BIN="$HOME/.cargo/bin/wasm-bindgen" CARGO_TARGET_DIR="$OLDPWD/target/bench-minimal-rust"
  export WASM_OPT_BIN="$OLDPWD/node_modules/.bin/wasm-opt" ESBUILD_BIN="$OLDPWD/node_modules/.bin/esbuild"
  worker-build --release && node ../../wasm-names.mjs split build/index_bg.wasm build/index_bg.names.txt
)
build_minimal_rust >/dev/null 2>&1 || build_minimal_rust
if [ -n "$before" ]; then
  say "building the worker in $before ($(git -C "$before" rev-parse --short HEAD))"
  [ -d "$before/node_modules" ] || cp -a node_modules "$before/"
  (
    cd "$before"
    [ -z "${BEFORE_CARGO_TARGET_DIR:-}" ] || export CARGO_TARGET_DIR=$BEFORE_CARGO_TARGET_DIR
    bash scripts/build.sh >/dev/null 2>&1 || bash scripts/build.sh
  )
fi

dir=target/bench
mkdir -p "$dir"

say "native figures (cargo bench --bench native)"
cargo bench --bench native --no-run 2>/dev/null || cargo bench --bench native --no-run
if [ "$quick" = 1 ]; then keys=10000; else keys=10000,100000; fi
kv_before=()
if [ -n "$before" ]; then
  (
    cd "$before"
    [ -z "${BEFORE_CARGO_TARGET_DIR:-}" ] || export CARGO_TARGET_DIR=$BEFORE_CARGO_TARGET_DIR
    cargo bench -q --bench native -- --only kv
  ) > "$dir/kv-before.md"
  kv_before=(--before "$dir/kv-before.md")
  export BENCH_BEFORE_COMMIT=$(git -C "$before" rev-parse --short HEAD)
fi
cargo bench -q --bench native -- --only kv "${kv_before[@]}" --json "$dir/kv.json" > "$dir/kv.md"
cargo bench -q --bench native -- --only backfill --backfill-keys "$keys" > "$dir/backfill-native.md"
cargo bench -q --bench native -- --only hot > "$dir/hot.md"

say "workerd figures (wrangler dev, wrk, Miniflare)"
before_dir=()
[ -z "$before" ] || before_dir=(--before-dir "$before")
if [ "$quick" = 1 ]; then
  BENCH_TIME_LIMIT_S=900 timeout 960 node scripts/bench/workerd.mjs --out-dir "$dir" \
    --rounds 1 --duration 3 --backfill-keys 2000 --starts 1 --sequential 20 "${before_dir[@]}"
else
  BENCH_TIME_LIMIT_S=1800 timeout 1860 node scripts/bench/workerd.mjs --out-dir "$dir" \
    --rounds 3 --duration 10 --backfill-keys 10000 --starts 3 --sequential 100 "${before_dir[@]}"
fi
say "where a read hit's CPU goes (V8's profiler)"
if [ "$quick" = 1 ]; then
  timeout 660 node scripts/bench/profile.mjs --out-dir "$dir" --duration 3 --rounds 1
else
  timeout 660 node scripts/bench/profile.mjs --out-dir "$dir" --duration 8 --rounds 2
fi
node scripts/bench/cost.mjs --out-dir "$dir" > "$dir/cost.md"

say "the backfill through the queue and through the cron (Miniflare)"
if [ "$quick" = 1 ]; then fanout_keys=5000; else fanout_keys=100000; fi
BENCH_FANOUT_LIMIT_S=3000 timeout 3060 node scripts/bench/fanout.mjs --out-dir "$dir" --keys "$fanout_keys"

say "writing $out"
version_of() { node -p "require('./node_modules/$1/package.json').version"; }
{
  echo "# Benchmarks"
  echo
  echo "Produced by \`$command_line\` (see README, \"Benchmarks\"); every figure below"
  echo "comes from that one command. Regenerate rather than edit."
  echo
  echo "## Machine"
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| date | $(date -u +%Y-%m-%dT%H:%MZ) |"
  echo "| commit | $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ' (with local changes)') |"
  [ -z "$before" ] || echo "| compared with (\"before\") | $(git -C "$before" rev-parse --short HEAD)$(git -C "$before" diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ' (with local changes)'), built from its own worktree in this run |"
  echo "| CPU | $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores available |"
  echo "| memory | $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) |"
  echo "| load average at start | $(cut -d' ' -f1-3 /proc/loadavg) |"
  echo "| OS | $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r) |"
  echo "| rustc | $(rustc --version) |"
  echo "| node | $(node --version) |"
  echo "| workerd | $(version_of @cloudflare/workerd-linux-64) (npm \`@cloudflare/workerd-linux-64\`) |"
  echo "| wrangler / miniflare | $(version_of wrangler) / $(version_of miniflare) |"
  echo "| wrk | $(wrk --version 2>&1 | head -1 | awk '{print $2}') |"
  echo
  echo "The machine is shared and small: absolute figures are noisy and far below what the"
  echo "platform gives; the ratios between the workers, measured in the same run and"
  echo "alternating, are the comparable figures."
  echo
  cat "$dir/kv.md"
  echo
  cat "$dir/backfill-native.md"
  cat "$dir/backfill.md"
  cat scripts/bench/notes-backfill.md
  echo
  cat "$dir/load.md"
  cat "$dir/profile.md"
  cat scripts/bench/notes-load.md
  echo
  cat "$dir/size.md"
  cat scripts/bench/notes-size.md
  echo
  cat "$dir/hot.md"
  cat scripts/bench/notes-writes.md
  echo
  cat "$dir/cost.md"
  echo
  cat "$dir/fanout.md"
  cat scripts/bench/notes-fanout.md
} > "$out"
say "wrote $out"
