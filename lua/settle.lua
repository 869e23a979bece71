-- settle: books the real usage of many admitted requests of one tenant, atomically, in one call
-- (replicas batch their settles per tenant: one EVALSHA for all that finished meanwhile).
--
-- KEYS[1] pending (zset, see admit.lua)   KEYS[2] spent (see shared.lua)   KEYS[3] usage stream
-- KEYS[4 .. 3+nt]       the GCRA keys of the batch's token limits (each once)
-- KEYS[4+nt .. 3+nt+nc] the in-flight sets the batch's requests hold leases in (each once)
--
-- ARGV[1] stream TTL (ms)   ARGV[2] stream max length (approximate)   ARGV[3] n (requests)
-- ARGV[4] nt   ARGV[5] nc   ARGV[6 .. 5+nt] emission intervals of the token keys (µs per token)
-- then per request: pending member, request id, tokens used, cost (micro-USD), tokens reserved,
--   reserved cost (micro-USD), admission day (YYYYMMDD, as in the member), key id, model,
--   kt, kt token-key indexes (1..nt), kc, kc in-flight-set indexes (1..nc),
--   its usage event, encoded by the replica (UsageEventCoding; '' for a void, see below)
--
-- The usage events of the requests settled now go into one stream entry: 'ts_us' (Redis's
-- clock) and one 'usage' field per request. One XADD per batch, with each event one argument,
-- costs a third of an XADD per request with the event's fields as arguments.
--
-- A void ('' event) withdraws an admission whose answer never went out (the replica gave up on
-- Redis during admit, but the script may have run): its whole reservation comes back, its slots
-- are freed, and nothing is billed or streamed.
--
-- Returns 2n integers: per request 1 and the tokens refunded (negative: debt) when settled now,
-- 0 and 0 when it was settled before or billed at its reservation by sweep.lua (either way,
-- settling twice has the effect of once). shared.lua is prepended when embedded.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local K = 3  -- KEYS before the token keys
local n, nt, nc = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])

-- Each request's arguments start at starts[r]; they are read where used, into locals (a table
-- per request costs more than the rest of its work).
local starts, members = {}, {}
local a = 6 + nt
for r = 1, n do
  starts[r], members[r] = a, ARGV[a]
  a = a + 9
  a = a + 1 + tonumber(ARGV[a])  -- token keys
  a = a + 1 + tonumber(ARGV[a])  -- in-flight sets
  a = a + 1                      -- the event
end

-- Still pending = not settled before and not billed at its reservation.
local pending = redis.call('ZMSCORE', KEYS[1], unpack(members))
local out, settled, delta, release = {}, {}, {}, {}
local entry = {'XADD', KEYS[K], 'MAXLEN', '~', ARGV[2], '*', 'ts_us', now}
local month_seeded, day_seeded, this_month, this_day = spend_state(KEYS[2], now)
local spend = {}
for r = 1, n do
  if pending[r] then
    a = starts[r]
    local id, used, reserved = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 4])
    settled[#settled + 1] = members[r]
    -- Refund the unused reservation, or book the shortfall as debt that delays later requests.
    local d = reserved - used
    a = a + 9
    local kt = tonumber(ARGV[a])
    for i = a + 1, a + kt do
      local k = tonumber(ARGV[i])
      delta[k] = (delta[k] or 0) + d
    end
    a = a + 1 + kt
    local kc = tonumber(ARGV[a])
    for i = a + 1, a + kc do
      local k = tonumber(ARGV[i])
      local ids = release[k] or {}
      ids[#ids + 1] = id
      release[k] = ids
    end
    local event = ARGV[a + 1 + kc]
    -- Spend: the reservation counted at admission becomes the real cost (or goes, for a void);
    -- a request admitted in an earlier period adds its cost to this one, where the ledger has it.
    if month_seeded or day_seeded then
      a = starts[r]
      local real = event ~= '' and tonumber(ARGV[a + 3]) or 0
      local reserved_cost, day, key, model = tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6]), ARGV[a + 7], ARGV[a + 8]
      if month_seeded then
        add_to(spend, 'm|', key, model, math.floor(day / 100) == this_month and real - reserved_cost or real)
      end
      if day_seeded then add_to(spend, 'd|', key, model, day == this_day and real - reserved_cost or real) end
    end
    if event ~= '' then
      entry[#entry + 1] = 'usage'
      entry[#entry + 1] = event
    end
    out[2 * r - 1], out[2 * r] = 1, d
  else
    out[2 * r - 1], out[2 * r] = 0, 0
  end
end
if #settled == 0 then return out end

if nt > 0 then
  local tats = redis.call('MGET', unpack(KEYS, K + 1, K + nt))
  for k = 1, nt do
    local d = delta[k]
    if d and d ~= 0 then
      local tat = tonumber(tats[k]) or now
      if tat < now then tat = now end
      local new_tat = tat - d * tonumber(ARGV[5 + k])
      if new_tat <= now then
        redis.call('DEL', KEYS[K + k])  -- an absent key is a full bucket
      else
        redis.call('SET', KEYS[K + k], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
      end
    end
  end
end
for k, ids in pairs(release) do
  redis.call('ZREM', KEYS[K + nt + k], unpack(ids))
end
redis.call('ZREM', KEYS[1], unpack(settled))
count_spend(KEYS[2], spend)
if #entry > 8 then
  redis.call(unpack(entry))
  redis.call('PEXPIRE', KEYS[K], ARGV[1])
end
return out
