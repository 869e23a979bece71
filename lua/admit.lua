-- admit: decides a batch of requests of one tenant, in order, each all-or-nothing: a request is
-- admitted only if every limit that applies to it passes, counting the requests admitted before
-- it in the batch, and a denied request writes nothing. Replicas batch their admits per tenant
-- (one call in flight; the admits that arrive meanwhile go together in the next), so the
-- script's fixed cost (TIME, reads, one write per key) is paid once per batch, not per request.
--
-- KEYS[1]  pending       sl:{t:<tenant>}:pending (zset: one member per admitted, unsettled
--                        request, "<id>|<key id>|<prompt estimate>|<reserved tokens>|<reserved
--                        cost>|<model>", scored with the time sweep.lua bills it at its reservation)
-- KEYS[2]  spend         sl:{t:<tenant>}:spend   (hash: m = YYYYMM, u = micro-USD spent in m)
-- KEYS[3 .. 2+nr]        GCRA keys of the batch's rate limits, each once (string: theoretical
--                        arrival time, µs)
-- KEYS[3+nr .. 2+nr+nc]  in-flight sets of the batch's concurrency limits, each once
--                        (zset: request id -> lease expiry, µs)
--
-- ARGV[1] n (requests)   ARGV[2] nr   ARGV[3] nc   ARGV[4] lease (µs)   ARGV[5] pending set TTL (ms)
-- then per rate limit key: kind ('r' requests | 't' tokens), emission interval (µs per unit),
--   burst (units), limit per minute (for headers), name
-- then per concurrency key: max, name
-- then per request: request id, tokens to reserve, billing deadline (µs from now: unsettled by
--   then, the reservation is billed), monthly budget (micro-USD, -1 = none), pending member,
--   kr, kr rate key indexes (1..nr), kc, kc concurrency key indexes (1..nc)
--
-- Returns 9 values per request: {decision, limit name, retry after µs,
--          request limit, remaining, reset µs, token limit, remaining, reset µs}
-- decision: 1 admitted, 0 denied by a rate or concurrency limit, 2 denied by the budget,
--           -1 can never fit (cost above the burst). Limits absent from the request give -1 headers.
-- Time is Redis's own clock (TIME), never a replica's. shared.lua is prepended when embedded.
-- Numbers go to redis.call as numbers (Redis formats them exactly, in C): string.format in Lua
-- costs more than the commands themselves. Each redis.call costs about a microsecond of Redis
-- CPU, so reads are batched (MGET) and every key is written once per batch.
-- Request ids are the server's own, unique per request: there is no "admitted before" case
-- (a client-chosen id must never turn a request into a free repeat of an earlier one).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local n, nr, nc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local lease = tonumber(ARGV[4])

-- The limits, and their state as the batch goes.
local rates, tat, changed = {}, {}, {}
local a = 6
local stored = {}
if nr > 0 then stored = redis.call('MGET', unpack(KEYS, 3, 2 + nr)) end
for k = 1, nr do
  rates[k] = {kind = ARGV[a], interval = tonumber(ARGV[a + 1]), burst = tonumber(ARGV[a + 2]),
              per_minute = tonumber(ARGV[a + 3]), name = ARGV[a + 4]}
  a = a + 5
  local value = tonumber(stored[k]) or now
  tat[k] = value < now and now or value
end
local flights, count, added = {}, {}, {}
for c = 1, nc do
  flights[c] = {max = tonumber(ARGV[a]), name = ARGV[a + 1]}
  a = a + 2
  -- Live leases only (expired ones are ignored here and swept below now and then).
  count[c] = redis.call('ZCOUNT', KEYS[2 + nr + c], now + 1, '+inf')
  added[c] = {}
end
local spent  -- read once, when the first request with a budget comes

local out, pending_args = {}, {}
for r = 1, n do
  local id, reserve, deadline, budget, member = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]),
    tonumber(ARGV[a + 3]), ARGV[a + 4]
  a = a + 5
  local kr = tonumber(ARGV[a])
  local rk_from = a + 1
  a = a + 1 + kr
  local kc = tonumber(ARGV[a])
  local ck_from = a + 1
  a = a + 1 + kc

  local decision, denied_by, retry = 1, '', 0
  local hdr = {r = {-1, -1, -1}, t = {-1, -1, -1}}
  local new_tats = {}
  for i = rk_from, rk_from + kr - 1 do
    local k = tonumber(ARGV[i])
    local rate = rates[k]
    local cost = rate.kind == 't' and reserve or 1
    if cost > rate.burst then
      decision, denied_by, retry = -1, rate.name, 0
      break
    end
    local new_tat = tat[k] + cost * rate.interval
    local allow_at = new_tat - rate.burst * rate.interval
    local after = new_tat
    if allow_at > now then
      if decision == 1 or allow_at - now > retry then decision, denied_by, retry = 0, rate.name, allow_at - now end
      after = tat[k]
    end
    new_tats[k] = new_tat
    -- Headers describe the tightest limit of each kind.
    local remaining = math.floor((rate.burst * rate.interval - (after - now)) / rate.interval)
    if remaining < 0 then remaining = 0 end
    local h = hdr[rate.kind]
    if h[2] == -1 or remaining < h[2] then hdr[rate.kind] = {rate.per_minute, remaining, after - now} end
  end

  if decision ~= -1 then
    for i = ck_from, ck_from + kc - 1 do
      local c = tonumber(ARGV[i])
      if count[c] >= flights[c].max then
        -- A slot frees when any request ends; the earliest lease expiry is the latest that can be.
        local first = redis.call('ZRANGEBYSCORE', KEYS[2 + nr + c], now + 1, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
        local wait = first[2] and math.min(tonumber(first[2]) - now, 1000000) or 1000000
        if decision == 1 or wait > retry then decision, denied_by, retry = 0, flights[c].name, wait end
      end
    end
  end

  if budget >= 0 and decision == 1 then
    local year, month = year_month(math.floor(now / 1000000))
    if spent == nil then
      local spend = redis.call('HMGET', KEYS[2], 'm', 'u')
      spent = tonumber(spend[1]) == year * 100 + month and tonumber(spend[2] or 0) or 0
    end
    if spent >= budget then
      local ny, nm = year, month + 1
      if nm == 13 then ny, nm = year + 1, 1 end
      decision, denied_by, retry = 2, 'monthly_budget_usd', days_from_civil(ny, nm, 1) * 86400000000 - now
    end
  end

  if decision == 1 then
    for k, value in pairs(new_tats) do
      tat[k] = value
      changed[k] = true
    end
    for i = ck_from, ck_from + kc - 1 do
      local c = tonumber(ARGV[i])
      count[c] = count[c] + 1
      local list = added[c]
      list[#list + 1] = now + lease
      list[#list + 1] = id
    end
    pending_args[#pending_args + 1] = now + deadline
    pending_args[#pending_args + 1] = member
  end
  if decision == -1 then hdr = {r = {-1, -1, -1}, t = {-1, -1, -1}} end
  local o = #out
  out[o + 1], out[o + 2], out[o + 3] = decision, denied_by, retry
  out[o + 4], out[o + 5], out[o + 6] = hdr.r[1], hdr.r[2], hdr.r[3]
  out[o + 7], out[o + 8], out[o + 9] = hdr.t[1], hdr.t[2], hdr.t[3]
end

-- Write what the admitted requests changed: each key once.
for k = 1, nr do
  if changed[k] then
    redis.call('SET', KEYS[2 + k], tat[k], 'PX', math.ceil((tat[k] - now) / 1000) + 1)
  end
end
local lease_ms = math.ceil(lease / 1000) + 1000
local sweep = now % 16 == 0  -- expired leases only cost memory: sweep on about one call in 16
for c = 1, nc do
  local key = KEYS[2 + nr + c]
  if #added[c] > 0 then
    if sweep then redis.call('ZREMRANGEBYSCORE', key, '-inf', now) end
    redis.call('ZADD', key, unpack(added[c]))
    -- Every lease has the same length, so the newest expires last: the set lives as long as it.
    redis.call('PEXPIRE', key, lease_ms)
  end
end
if #pending_args > 0 then
  redis.call('ZADD', KEYS[1], unpack(pending_args))
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
return out
