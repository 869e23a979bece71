-- settle: books the real usage of one admitted request, atomically.
--
-- KEYS[1] request (see admit.lua)   KEYS[2] spend   KEYS[3] usage stream
-- KEYS[4 .. 3+nt]   the GCRA keys of the request's token limits
-- KEYS[4+nt .. ]    the in-flight sets the request holds a lease in
--
-- ARGV[1] request id   ARGV[2] tokens really used   ARGV[3] cost (micro-USD)
-- ARGV[4] settled-mark TTL (ms)   ARGV[5] stream TTL (ms)   ARGV[6] stream max length (approximate)
-- ARGV[7] nt   ARGV[8] nc   then nt emission intervals (µs per token), then the usage event as
-- field/value pairs.
-- calendar.lua is prepended when embedded.
--
-- Returns {1, reserved tokens (-1 when the reservation had expired), tokens refunded (negative: debt)}
-- or {0, 0, 0} when the request was settled before (settling twice has the effect of once).

local state = redis.call('GET', KEYS[1])
if state == 'S' then
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
if state and nt > 0 then
  reserved = tonumber(string.match(state, '^R (%d+)'))
  delta = reserved - used
  local tats = redis.call('MGET', unpack(KEYS, 4, 3 + nt))
  for i = 1, nt do
    local tat = tonumber(tats[i]) or now
    if tat < now then tat = now end
    local new_tat = tat - delta * tonumber(ARGV[8 + i])
    if new_tat <= now then
      redis.call('DEL', KEYS[3 + i])  -- an absent key is a full bucket
    else
      redis.call('SET', KEYS[3 + i], string.format('%.17g', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
    end
  end
elseif state then
  reserved = tonumber(string.match(state, '^R (%d+)'))
  delta = reserved - used
end

for i = 1, nc do
  redis.call('ZREM', KEYS[3 + nt + i], ARGV[1])
end

-- Spend for the calendar month (by Redis's clock): the hash restarts when the month changes.
local year, month = year_month(math.floor(now / 1000000))
local this_month = year * 100 + month
if tonumber(redis.call('HGET', KEYS[2], 'm')) ~= this_month then
  redis.call('HSET', KEYS[2], 'm', this_month, 'u', cost)
elseif cost > 0 then
  redis.call('HINCRBY', KEYS[2], 'u', cost)
end
redis.call('PEXPIRE', KEYS[2], 40 * 86400 * 1000)

local event = {'XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'request_id', ARGV[1],
  'tokens', used, 'cost_micro_usd', cost, 'reserved', reserved, 'ts_us', string.format('%.0f', now)}
for i = 9 + nt, #ARGV, 2 do
  event[#event + 1] = ARGV[i]
  event[#event + 1] = ARGV[i + 1]
end
redis.call(unpack(event))
redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[5]))
redis.call('SET', KEYS[1], 'S', 'PX', tonumber(ARGV[4]))
return {1, reserved, delta}
