-- admit: decides a batch of requests of one tenant, in order, each all-or-nothing: a request is
-- admitted only if every limit that applies to it passes, counting the requests admitted before
-- it in the batch, and a denied request writes nothing. Replicas batch their admits per tenant
-- (one call in flight; the admits that arrive meanwhile go together in the next), so the
-- script's fixed cost (TIME, reads, one write per key) is paid once per batch, not per request.
--
-- KEYS[1]  pending       sl:{t:<tenant>}:pending (zset: one member per admitted, unsettled
--                        request (see parse_member in shared.lua), scored with the time sweep.lua
--                        bills it at its reservation)
-- KEYS[2]  spent         the tenant's spend hash (see shared.lua)
-- KEYS[3 .. 2+nr]        GCRA keys of the batch's rate limits, each once (string: theoretical
--                        arrival time, µs)
-- KEYS[3+nr .. 2+nr+nc]  in-flight sets of the batch's concurrency limits, each once
--                        (zset: request id -> lease expiry, µs)
--
-- ARGV[1] n (requests)   ARGV[2] nr   ARGV[3] nc   ARGV[4] lease (µs)   ARGV[5] pending set TTL (ms)
-- ARGV[6] nb (budgets)
-- then per rate limit key: kind ('r' requests | 't' tokens), emission interval (µs per unit),
--   burst (units), limit per minute (for headers), name
-- then per concurrency key: max, name
-- then per budget: period ('m' | 'd'), spend field (t | k:<key id> | m:<model>), limit (micro-USD), name
-- then per request: request id, tokens to reserve, billing deadline (µs from now: unsettled by
--   then, the reservation is billed), reserved cost (micro-USD), day (YYYYMMDD by the replica's
--   clock), pending member, key id, model,
--   kr, kr rate key indexes (1..nr), kc, kc concurrency key indexes (1..nc), kb, kb budget indexes (1..nb)
--
-- Returns {1, month, day, nb budget spends after the batch, then 11 values per request:
--          decision, limit name, retry after µs, request limit, remaining, reset µs,
--          token limit, remaining, reset µs, spent (budget denials), budget limit}
-- decision: 1 admitted, 0 denied by a rate or concurrency limit, 2 denied by a budget (its spend
--           plus this request's reserved cost would pass it), 3 the replica's day is not
--           Redis's (retry), -1 can never fit (cost above the burst). Absent limits give -1 headers.
-- Or {0, month, day}, writing nothing, when a budget's period is unseeded: the replica
-- rebuilds it from the ledger (seed.lua) and calls again.
-- Time is Redis's own clock (TIME), never a replica's. shared.lua is prepended when embedded.
-- Numbers go to redis.call as numbers (Redis formats them exactly, in C): string.format in Lua
-- costs more than the commands themselves. Each redis.call costs about a microsecond of Redis
-- CPU, so reads are batched (MGET) and every key is written once per batch.
-- Request ids are the server's own, unique per request: there is no "admitted before" case
-- (a client-chosen id must never turn a request into a free repeat of an earlier one).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local n, nr, nc, nb = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[6])
local lease = tonumber(ARGV[4])
local R = 2  -- KEYS before the rate keys

-- The limits, and their state as the batch goes.
local rates, tat, changed = {}, {}, {}
local a = 7
local stored = {}
if nr > 0 then stored = redis.call('MGET', unpack(KEYS, R + 1, R + nr)) end
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
  count[c] = redis.call('ZCOUNT', KEYS[R + nr + c], now + 1, '+inf')
  added[c] = {}
end

-- Budgets: one read of the spend hash (its periods and the batch's fields).
local budgets, fields = {}, {'pm', 'pd'}
for b = 1, nb do
  local budget = {period = ARGV[a], field = ARGV[a] .. '|' .. ARGV[a + 1], limit = tonumber(ARGV[a + 2]), name = ARGV[a + 3]}
  a = a + 4
  budgets[b] = budget
  fields[#fields + 1] = budget.field
  budget.at = #fields
end
local values = redis.call('HMGET', KEYS[2], unpack(fields))
-- The periods are worked out only when they matter: a budget, or a spend hash to count into.
local this_month, this_day, month_left, day_left = 0, 0, 0, 0
if nb > 0 or values[1] or values[2] then this_month, this_day, month_left, day_left = spend_periods(now) end
local seeded = {m = tonumber(values[1]) == this_month, d = tonumber(values[2]) == this_day}
local left = {m = month_left, d = day_left}
for b = 1, nb do
  if not seeded[budgets[b].period] then return {0, this_month, this_day} end
  budgets[b].spent = tonumber(values[budgets[b].at]) or 0
end
local deltas = {}

local out, pending_args = {1, this_month, this_day}, {}
local head = 3 + nb  -- the batch's budget spends go after these, once known
-- The rate keys a request moves and their new times: reused, as is every per-request value (a
-- table per request cost more than the arithmetic).
local moved_keys, moved_tats = {}, {}
for r = 1, n do
  local id, reserve, deadline, cost, day, member = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]),
    tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), ARGV[a + 5]
  local key_id, model = ARGV[a + 6], ARGV[a + 7]
  a = a + 8
  local kr = tonumber(ARGV[a])
  local rk_from = a + 1
  a = a + 1 + kr
  local kc = tonumber(ARGV[a])
  local ck_from = a + 1
  a = a + 1 + kc
  local kb = tonumber(ARGV[a])
  local bk_from = a + 1
  a = a + 1 + kb

  local decision, denied_by, retry, spent, limit = 1, '', 0, -1, -1
  -- Headers describe the tightest limit of each kind: request and token limit, remaining, reset.
  local rl, rr, rt, tl, tr, tt = -1, -1, -1, -1, -1, -1
  local moved = 0
  for i = rk_from, rk_from + kr - 1 do
    local k = tonumber(ARGV[i])
    local rate = rates[k]
    local units = rate.kind == 't' and reserve or 1
    if units > rate.burst then
      decision, denied_by, retry = -1, rate.name, 0
      break
    end
    local new_tat = tat[k] + units * rate.interval
    local allow_at = new_tat - rate.burst * rate.interval
    local after = new_tat
    if allow_at > now then
      if decision == 1 or allow_at - now > retry then decision, denied_by, retry = 0, rate.name, allow_at - now end
      after = tat[k]
    end
    moved = moved + 1
    moved_keys[moved], moved_tats[moved] = k, new_tat
    local remaining = math.floor((rate.burst * rate.interval - (after - now)) / rate.interval)
    if remaining < 0 then remaining = 0 end
    if rate.kind == 'r' then
      if rr == -1 or remaining < rr then rl, rr, rt = rate.per_minute, remaining, after - now end
    elseif tr == -1 or remaining < tr then tl, tr, tt = rate.per_minute, remaining, after - now end
  end

  if decision ~= -1 then
    for i = ck_from, ck_from + kc - 1 do
      local c = tonumber(ARGV[i])
      if count[c] >= flights[c].max then
        -- A slot frees when any request ends; the earliest lease expiry is the latest that can be.
        local first = redis.call('ZRANGEBYSCORE', KEYS[R + nr + c], now + 1, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
        local wait = first[2] and math.min(tonumber(first[2]) - now, 1000000) or 1000000
        if decision == 1 or wait > retry then decision, denied_by, retry = 0, flights[c].name, wait end
      end
    end
  end

  -- Budgets reserve the request's largest cost, so concurrent requests cannot overshoot them.
  -- Spent in full: retry when the period ends; otherwise when reservations may have come back.
  if decision == 1 then
    for i = bk_from, bk_from + kb - 1 do
      local budget = budgets[tonumber(ARGV[i])]
      if budget.spent + cost > budget.limit then
        local wait = budget.spent >= budget.limit and left[budget.period] or 1000000
        if decision == 1 or wait > retry then
          decision, denied_by, retry, spent, limit = 2, budget.name, wait, budget.spent, budget.limit
        end
      end
    end
  end
  -- A reservation is counted in a spend hash only for the period its member names (settle and
  -- seed.lua go by the member): a replica whose clock is on the other side of midnight retries.
  if decision == 1 and ((seeded.d and day ~= this_day) or (seeded.m and math.floor(day / 100) ~= this_month)) then
    decision, retry = 3, 0
  end

  if decision == 1 then
    for m = 1, moved do
      local k = moved_keys[m]
      tat[k] = moved_tats[m]
      changed[k] = true
    end
    for i = ck_from, ck_from + kc - 1 do
      local c = tonumber(ARGV[i])
      count[c] = count[c] + 1
      local list = added[c]
      list[#list + 1] = now + lease
      list[#list + 1] = id
    end
    for b = 1, nb do
      local budget = budgets[b]
      local p = budget.period .. '|'
      if budget.field == p .. 't' or budget.field == p .. 'k:' .. key_id or budget.field == p .. 'm:' .. model then
        budget.spent = budget.spent + cost
      end
    end
    if seeded.m then add_to(deltas, 'm|', key_id, model, cost) end
    if seeded.d then add_to(deltas, 'd|', key_id, model, cost) end
    pending_args[#pending_args + 1] = now + deadline
    pending_args[#pending_args + 1] = member
  end
  if decision == -1 then rl, rr, rt, tl, tr, tt = -1, -1, -1, -1, -1, -1 end
  local o = (r - 1) * 11 + head
  out[o + 1], out[o + 2], out[o + 3] = decision, denied_by, retry
  out[o + 4], out[o + 5], out[o + 6] = rl, rr, rt
  out[o + 7], out[o + 8], out[o + 9] = tl, tr, tt
  out[o + 10], out[o + 11] = spent, limit
end

-- Write what the admitted requests changed: each key once.
for k = 1, nr do
  if changed[k] then
    redis.call('SET', KEYS[R + k], tat[k], 'PX', math.ceil((tat[k] - now) / 1000) + 1)
  end
end
local lease_ms = math.ceil(lease / 1000) + 1000
local sweep = now % 16 == 0  -- expired leases only cost memory: sweep on about one call in 16
for c = 1, nc do
  local key = KEYS[R + nr + c]
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
  count_spend(KEYS[2], deltas)
end
for b = 1, nb do out[3 + b] = budgets[b].spent end
return out
