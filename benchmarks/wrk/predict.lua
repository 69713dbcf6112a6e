-- wrk script: POST {"input":[a, b, c, d]} (doubles) to the URL's path, e.g. /bench/predict.
--
--   wrk -t1 -c64 -d10s --latency -s benchmarks/wrk/predict.lua \
--       http://127.0.0.1:8080/bench/predict -- unique 42
--
-- Arguments after "--":
--   mode  "unique" (default): every request carries a different input, so the
--         prediction cache never hits; the input is (seed, thread id, counter, ...).
--         "cache": every request carries the same input, to measure cache hits.
--         "body": the body is read from a file (next argument) holding the marker
--         @UNIQUE@ once; each request replaces it with string.format(FORMAT, seed,
--         thread id, counter) (FORMAT: the argument after the file; fixed width), so
--         a large input costs one copy per request and still never hits the cache.
--   seed  an integer that differs between runs (warm-up vs. measured run), so a
--         later run never repeats an input of an earlier one. Default 0.
--   paths=/a/predict,/b/predict  (optional, last) requests rotate over these paths
--         instead of the URL's.
--
--   ... -- body 42 /tmp/body.json '%9d.0,%3d.0,%9d.0'
--   ... -- unique 42 paths=/app0/predict,/app1/predict
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
local head, tail, format = nil, nil, nil
local paths = nil
local starts = {}  -- body mode: request line and headers per path, for a body of the file's length

function setup(thread)
   table.insert(threads, thread)
   thread:set("tid", #threads)
end

function init(args)
   mode = args[1] or "unique"
   seed = tonumber(args[2] or "0")
   if mode ~= "unique" and mode ~= "cache" and mode ~= "body" then
      error("predict.lua: mode must be 'unique', 'cache' or 'body', got " .. tostring(mode))
   end
   local last = args[#args]
   if last and string.sub(last, 1, 6) == "paths=" then
      paths = {}
      for p in string.gmatch(string.sub(last, 7), "[^,]+") do
         table.insert(paths, p)
      end
   end
   if mode == "body" then
      local f = assert(io.open(args[3], "rb"))
      local body = f:read("*a")
      f:close()
      format = args[4]
      local at = string.find(body, "@UNIQUE@", 1, true)
      if at == nil then
         error("predict.lua: no @UNIQUE@ in " .. args[3])
      end
      head, tail = string.sub(body, 1, at - 1), string.sub(body, at + 8)
      -- One concatenation per request (start .. head .. unique .. tail): a large body is copied once.
      local sample = head .. string.format(format, seed, 0, 0) .. tail
      for _, p in ipairs(paths or { false }) do
         local req = wrk.format("POST", p or nil, headers, sample)
         starts[p or 1] = string.sub(req, 1, #req - #sample)
      end
   end
   fixed = wrk.format("POST", nil, headers, '{"input":[1.0,2.0,3.0,4.0]}')
end

function request()
   if mode == "cache" then
      return fixed
   end
   counter = counter + 1
   local path = nil
   if paths then
      path = paths[counter % #paths + 1]
   end
   if mode == "body" then
      return starts[path or 1] .. head .. string.format(format, seed, tid, counter) .. tail
   end
   local body = string.format('{"input":[%d.0,%d.0,%d.0,%d.5]}',
                              seed, tid, counter, counter % 1000)
   return wrk.format("POST", path, headers, body)
end
