-- wrk script for the benchmark (python -m bench): unique usernames, JSON summary.
--
--   wrk -t1 -c64 -d5s -s bench/login.lua http://127.0.0.1:PORT -- login RUNTAG
--   wrk -t1 -c64 -d5s -s bench/login.lua http://127.0.0.1:PORT -- root  RUNTAG
--   wrk -t1 -c64 -d5s -s bench/login.lua http://127.0.0.1:PORT -- bare  RUNTAG
--
-- "login" requests /login/?username=<tag>-<thread>-<n>, a name used once in the
-- whole run, so no cache or dedup could flatter the logging. "root" requests
-- /?username=... the same way: the same request line to a route that logs
-- nothing, so the comparison is the logging, not the length of the request.
-- "bare" requests "/" alone.
-- done() prints one line "WRK_JSON {...}" that bench/load.py parses: sturdier
-- than scraping wrk's human-readable --latency table.

local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("id", next_id)
end

local mode = "login"
local tag = "run"
local counter = 0

function init(args)
  mode = args[1] or "login"
  tag = args[2] or "run"
end

function request()
  counter = counter + 1
  if mode == "bare" then
    return wrk.format("GET", "/")
  end
  local query = "?username=" .. tag .. "-" .. id .. "-" .. counter
  if mode == "root" then
    return wrk.format("GET", "/" .. query)
  end
  return wrk.format("GET", "/login/" .. query)
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  local p = function(q) return latency:percentile(q) / 1000.0 end
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_s": %.6f, "rps": %.3f, "bytes": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_ms": {"mean": %.4f, "stdev": %.4f, "p50": %.4f, "p90": %.4f, '
      .. '"p99": %.4f, "p999": %.4f, "max": %.4f}}\n',
    summary.requests, seconds, summary.requests / seconds, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean / 1000.0, latency.stdev / 1000.0, p(50), p(90), p(99), p(99.9),
    latency.max / 1000.0))
end
