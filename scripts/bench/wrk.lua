-- wrk script of the benchmark (scripts/bench/run.sh). Arguments after `--`:
--   mode   read | fallback | update | update-one (every request PATCHes the pool's first)
--   token  the bearer token (the minimal worker ignores it)
--   first  first customer number of the pool
--   count  pool size: read and update cycle through it; fallback takes each id once
-- Prints one line `BENCH_JSON {...}` with requests, duration, errors and latency
-- percentiles (microseconds).

local mode, token, first, count
local n = 0

function init(args)
  mode = args[1]
  token = args[2]
  first = tonumber(args[3])
  count = tonumber(args[4])
end

local function id(i)
  return string.format("cust_%06d", first + i)
end

function request()
  local i = n
  n = n + 1
  local headers = { ["Authorization"] = "Bearer " .. token }
  if mode == "update" or mode == "update-one" then
    headers["Content-Type"] = "application/json"
    local target = mode == "update" and id(i % count) or id(0)
    return wrk.format("PATCH", "/customer/" .. target, headers,
      '{"name":"Bench ' .. (i % 97) .. '"}')
  elseif mode == "fallback" then
    return wrk.format("GET", "/customer/" .. id(i), headers)
  else
    return wrk.format("GET", "/customer/" .. id(i % count), headers)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
