-- wrk script: POST {"input":[a, b, c, d]} (doubles) to the URL's path, e.g. /bench/predict.
--
--   wrk -t1 -c64 -d10s --latency -s benchmarks/wrk/predict.lua \
--       http://127.0.0.1:8080/bench/predict -- unique 42
--
-- Arguments after "--":
--   mode  "unique" (default): every request carries a different input, so the
--         prediction cache never hits; the input is (seed, thread id, counter, ...).
--         "cache": every request carries the same input, to measure cache hits.
--   seed  an integer that differs between runs (warm-up vs. measured run), so a
--         later run never repeats an input of an earlier one. Default 0.
--
-- No response() callback on purpose: it slows wrk down. Default answers are
-- counted from the server's /metrics instead.

-- Globals (not locals): setup() sets "tid" in each thread's own Lua state.
tid = 0
counter = 0
mode = "unique"
seed = 0

local headers = { ["Content-Type"] = "application/json" }
local fixed = nil
local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("tid", #threads)
end

function init(args)
   mode = args[1] or "unique"
   seed = tonumber(args[2] or "0")
   if mode ~= "unique" and mode ~= "cache" then
      error("predict.lua: mode must be 'unique' or 'cache', got " .. tostring(mode))
   end
   fixed = wrk.format("POST", nil, headers, '{"input":[1.0,2.0,3.0,4.0]}')
end

function request()
   if mode == "cache" then
      return fixed
   end
   counter = counter + 1
   local body = string.format('{"input":[%d.0,%d.0,%d.0,%d.5]}',
                              seed, tid, counter, counter % 1000)
   return wrk.format("POST", nil, headers, body)
end
