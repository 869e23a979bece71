-- settle: books the real usage of one admitted request, atomically.
--
-- KEYS[1] reservation   KEYS[2] settled mark   KEYS[3] spend   KEYS[4] usage stream
-- KEYS[5 .. 4+nt]   the GCRA keys of the request's token limits
-- KEYS[5+nt .. ]    the in-flight sets the request holds a lease in
--
-- ARGV[1] request id   ARGV[2] tokens really used   ARGV[3] cost (micro-USD)
-- ARGV[4] settled-mark TTL (ms)   ARGV[5] stream TTL (ms)   ARGV[6] stream max length (approximate)
-- ARGV[7] nt   ARGV[8] nc   then nt emission intervals (µs per token), then the usage event as
-- field/value pairs.
--
-- calendar.lua is prepended when embedded.
--
-- Returns {1, reserved tokens (-1 when the reservation had expired), tokens refunded (negative: debt)}
-- or {0, 0, 0} when the request was settled before (settling twice has the effect of once).

if redis.call('EXISTS', KEYS[2]) == 1 then
  return {0, 0, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local used = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local nt = tonumber(ARGV[7])
local nc = tonumber(ARGV[8])

-- Refund the unused reservation, or book the shortfall as debt that delays later requests.
-- An expired reservation adjusts nothing: its tokens stay spent, its usage is still recorded.
local reserved, delta = -1, 0
local raw = redis.call('GET', KEYS[1])
if raw then
  reserved = cjson.decode(raw).tokens
  delta = reserved - used
  for i = 1, nt do
    local key = KEYS[4 + i]
    local interval = tonumber(ARGV[8 + i])
    local tat = tonumber(redis.call('GET', key) or now)
    if tat < now then tat = now end
    local new_tat = tat - delta * interval
    if new_tat <= now then
      redis.call('DEL', key)  -- an absent key is a full bucket
    else
      redis.call('SET', key, string.format('%.17g', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
    end
  end
  redis.call('DEL', KEYS[1])
end

for i = 1, nc do
  redis.call('ZREM', KEYS[4 + nt + i], ARGV[1])
end

-- Spend for the calendar month (by Redis's clock): the hash restarts when the month changes.
local year, month = year_month(math.floor(now / 1000000))
local this_month = year * 100 + month
if tonumber(redis.call('HGET', KEYS[3], 'm')) ~= this_month then
  redis.call('HSET', KEYS[3], 'm', this_month, 'u', 0)
end
if cost > 0 then redis.call('HINCRBY', KEYS[3], 'u', cost) end
redis.call('PEXPIRE', KEYS[3], 40 * 86400 * 1000)

local event = {'XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'request_id', ARGV[1],
  'tokens', used, 'cost_micro_usd', cost, 'reserved', reserved, 'ts_us', string.format('%.0f', now)}
for i = 9 + nt, #ARGV, 2 do
  event[#event + 1] = ARGV[i]
  event[#event + 1] = ARGV[i + 1]
end
redis.call(unpack(event))
redis.call('PEXPIRE', KEYS[4], tonumber(ARGV[5]))
redis.call('SET', KEYS[2], 1, 'PX', tonumber(ARGV[4]))
return {1, reserved, delta}
