-- wrk script of bench/bench_ingest.py (read its docstring). Arguments after `--`:
--   <requests file> <interval in microseconds: 0 = closed loop> <warm-up seconds> <threads>
-- The requests file holds pre-signed raw HTTP requests: "<n>\n", then n times "<length>\n<bytes>".
-- Closed loop (interval 0): every connection sends its next request when the answer arrived.
-- Paced (interval > 0, run with as many threads as connections: one connection per thread): the
-- thread's k-th request is due at start + k * interval (threads are offset by interval / threads);
-- latency is measured from the DUE time, not the send time, so a slow answer that delays the next
-- sends is counted against the server (no coordinated omission, as wrk2 does).
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

local reqs, nreq, i = {}, 0, 0
local interval, warmup_until, start, k, due, next_due = 0, 0, 0, 0, nil, nil
-- globals: done() reads them from every thread (thread:get)
ok, bad, measured, hist = 0, 0, 0, {}

local threads = {}
function setup(thread)
  thread:set("idx", #threads)
  table.insert(threads, thread)
end

local function paced_delay()
  k = k + 1
  next_due = start + k * interval
  local d = next_due - now_us()
  if d <= 0 then
    return 0
  end
  return math.ceil(d / 1000) -- wrk's timers are in ms: never send early
end

function init(args)
  local f = assert(io.open(args[1], "rb"))
  local data = f:read("*all")
  f:close()
  local pos = 1
  local nl = data:find("\n", pos, true)
  nreq = tonumber(data:sub(pos, nl - 1))
  pos = nl + 1
  for j = 1, nreq do
    nl = data:find("\n", pos, true)
    local len = tonumber(data:sub(pos, nl - 1))
    pos = nl + 1
    reqs[j] = data:sub(pos, pos + len - 1)
    pos = pos + len
  end
  interval = tonumber(args[2]) or 0
  local t0 = now_us()
  warmup_until = t0 + (tonumber(args[3]) or 0) * 1e6
  local nthreads = tonumber(args[4]) or 1
  start = t0 + (idx or 0) * interval / nthreads
  i = (idx or 0) % nreq
  if interval > 0 then
    delay = paced_delay
  end
end

function request()
  if next_due then
    due = next_due
  else
    due = now_us()
  end
  i = i % nreq + 1
  return reqs[i]
end

function response(status, headers, body)
  local t = now_us()
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    bad = bad + 1
  end
  if due and due >= warmup_until then
    local us = t - due
    local b
    if us < 100000 then
      b = math.floor(us / 10) -- 10 us buckets below 100 ms
    else
      b = 10000 + math.floor((us - 100000) / 1000) -- then 1 ms buckets
    end
    hist[b] = (hist[b] or 0) + 1
    measured = measured + 1
  end
end

function done(summary, latency, requests)
  local o, b, m, h = 0, 0, 0, {}
  for _, t in ipairs(threads) do
    o = o + t:get("ok")
    b = b + t:get("bad")
    m = m + t:get("measured")
    for key, v in pairs(t:get("hist")) do
      h[key] = (h[key] or 0) + v
    end
  end
  local e = summary.errors
  io.write(string.format("BENCH summary %d %d %d %d %d %d %d %d %d\n", summary.requests, summary.duration, o, b, m,
    e.connect, e.read, e.write, e.timeout))
  for key, v in pairs(h) do
    io.write(string.format("BENCH hist %d %d\n", key, v))
  end
end
