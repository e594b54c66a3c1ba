-- Take one request's cost from all of its token buckets, or from none.
--
-- KEYS[i]  bucket key (all in one hash slot: one hash tag per request)
-- ARGV[i]  "capacity rate cost" of bucket i (rate in tokens per second)
-- Stored value: "tokens stamp_us"; a missing key is a full bucket. The key expires when
-- the bucket would be full again, so idle buckets cost no memory.
-- Returns one string "ok t1 t2 ...": ok is 1 when taken, t_i the tokens bucket i held
-- before the request (the client derives remaining, reset and retry-after from them).
-- Time is the server's (TIME), so every replica of the sidecar sees one clock.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local vals = redis.call('MGET', unpack(KEYS))
local n = #KEYS
local caps, rates, costs, tokens = {}, {}, {}, {}
local ok = 1
for i = 1, n do
  local spec = ARGV[i]
  local a = string.find(spec, ' ', 1, true)
  local b = string.find(spec, ' ', a + 1, true)
  local cap = tonumber(string.sub(spec, 1, a - 1))
  local rate = tonumber(string.sub(spec, a + 1, b - 1))
  local cost = tonumber(string.sub(spec, b + 1))
  local x = cap
  local v = vals[i]
  if v then
    local c = string.find(v, ' ', 1, true)
    local elapsed = now - tonumber(string.sub(v, c + 1))
    if elapsed < 0 then elapsed = 0 end
    x = math.min(cap, tonumber(string.sub(v, 1, c - 1)) + elapsed * rate / 1000000)
  end
  caps[i], rates[i], costs[i], tokens[i] = cap, rate, cost, x
  if x < cost then ok = 0 end
end
local out = {tostring(ok)}
for i = 1, n do
  out[i + 1] = string.format('%.17g', tokens[i])
end
if ok == 1 then
  for i = 1, n do
    local left = tokens[i] - costs[i]
    local ttl = math.ceil((caps[i] - left) / rates[i] * 1000)
    if ttl < 1 then ttl = 1 end
    redis.call('SET', KEYS[i], string.format('%.17g %d', left, now),
               'PX', string.format('%d', ttl))
  end
end
return table.concat(out, ' ')
