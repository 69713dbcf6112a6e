-- wrk script for a BentoML batchable API, e.g. /predict: POST {"inputs":[[a,b,c,d]]}
-- (a batch of one input; the server merges concurrent requests into one call).
-- Arguments after "--": "unique" and a seed, as benchmarks/wrk/predict.lua; every input is
-- (seed, thread id, counter, ...), so no two requests of a run or of two runs repeat one.

tid = 0
counter = 0
seed = 0

local headers = { ["Content-Type"] = "application/json" }
local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("tid", #threads)
end

function init(args)
   seed = tonumber(args[2] or "0")
end

function request()
   counter = counter + 1
   local body = string.format('{"inputs":[[%d.0,%d.0,%d.0,%d.5]]}', seed, tid, counter, counter % 1000)
   return wrk.format("POST", nil, headers, body)
end
