#!/usr/bin/env bash
# Sets up what is missing, seeds the local OTP_AUTH_KV with generated legacy customers
# (the messy cases included) and serves the worker with wrangler dev on local KV, with
# the cron trigger testable at /__scheduled. Options:
#   --customers N   legacy customers to seed (default 1000)
#   --no-seed       keep the local stores as they are
#   --port P        port to serve on (default 8787)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

customers=1000
seed=1
port=8787
while [ $# -gt 0 ]; do
  case "$1" in
    --customers) customers=$2; shift 2 ;;
    --no-seed) seed=0; shift ;;
    --port) port=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

bash scripts/setup.sh
state=.wrangler/state
if [ "$seed" = 1 ]; then
  node scripts/seed-legacy.mjs --customers "$customers" --out .seed/legacy.json
  echo "==> loading the legacy data into the local OTP_AUTH_KV"
  npx wrangler kv bulk put .seed/legacy.json --binding OTP_AUTH_KV --local --persist-to "$state"
fi
echo "==> serving on http://localhost:$port (admin token: node scripts/dev-token.mjs)"
exec npx wrangler dev --local --test-scheduled --persist-to "$state" --port "$port"
