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
--   f, then f field/value pairs of its usage event (f = 0: a void, see below)
--
-- A void (f = 0) withdraws an admission whose answer never went out (the replica gave up on
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

local requests, members = {}, {}
local a = 6 + nt
for r = 1, n do
  local req = {member = ARGV[a], id = ARGV[a + 1], used = tonumber(ARGV[a + 2]), cost = tonumber(ARGV[a + 3]),
               reserved = tonumber(ARGV[a + 4]), reserved_cost = tonumber(ARGV[a + 5]), day = tonumber(ARGV[a + 6]),
               key = ARGV[a + 7], model = ARGV[a + 8]}
  a = a + 9
  req.tk_from, req.tk_count = a + 1, tonumber(ARGV[a])
  a = a + 1 + req.tk_count
  req.ck_from, req.ck_count = a + 1, tonumber(ARGV[a])
  a = a + 1 + req.ck_count
  req.f_from, req.f_count = a + 1, tonumber(ARGV[a])
  a = a + 1 + 2 * req.f_count
  requests[r] = req
  members[r] = req.member
end

-- Still pending = not settled before and not billed at its reservation.
local pending = redis.call('ZMSCORE', KEYS[1], unpack(members))
local out, settled, delta, release, billed = {}, {}, {}, {}, 0
local month_seeded, day_seeded, this_month, this_day = spend_state(KEYS[2], now)
local spend = {}
for r = 1, n do
  local req = requests[r]
  if pending[r] then
    settled[#settled + 1] = req.member
    -- Refund the unused reservation, or book the shortfall as debt that delays later requests.
    local d = req.reserved - req.used
    for i = req.tk_from, req.tk_from + req.tk_count - 1 do
      local k = tonumber(ARGV[i])
      delta[k] = (delta[k] or 0) + d
    end
    for i = req.ck_from, req.ck_from + req.ck_count - 1 do
      local k = tonumber(ARGV[i])
      local ids = release[k] or {}
      ids[#ids + 1] = req.id
      release[k] = ids
    end
    -- Spend: the reservation counted at admission becomes the real cost (or goes, for a void);
    -- a request admitted in an earlier period adds its cost to this one, where the ledger has it.
    local real = req.f_count > 0 and req.cost or 0
    if month_seeded then
      add_to(spend, 'm|', req.key, req.model, math.floor(req.day / 100) == this_month and real - req.reserved_cost or real)
    end
    if day_seeded then add_to(spend, 'd|', req.key, req.model, req.day == this_day and real - req.reserved_cost or real) end
    if req.f_count > 0 then
      local event = {'XADD', KEYS[K], 'MAXLEN', '~', ARGV[2], '*', 'request_id', req.id, 'tokens', req.used,
        'cost_micro_usd', req.cost, 'reserved', req.reserved, 'ts_us', now}
      for i = req.f_from, req.f_from + 2 * req.f_count - 1 do event[#event + 1] = ARGV[i] end
      redis.call(unpack(event))
      billed = billed + 1
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
if billed > 0 then redis.call('PEXPIRE', KEYS[K], ARGV[1]) end
return out
