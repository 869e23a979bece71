-- admit: checks every limit that applies to one request and writes only if all pass.
--
-- KEYS[1]  pending       sl:{t:<tenant>}:pending (zset: one member per admitted, unsettled
--                        request, "<id>|<key id>|<prompt estimate>|<reserved tokens>|<reserved
--                        cost>|<model>", scored with the time sweep.lua bills it at its reservation)
-- KEYS[2]  spend         sl:{t:<tenant>}:spend   (hash: m = YYYYMM, u = micro-USD spent in m)
-- KEYS[3 .. 2+nr]        GCRA keys, one per rate limit (string: theoretical arrival time, µs)
-- KEYS[3+nr .. ]         in-flight sets, one per concurrency limit (zset: request id -> lease expiry, µs)
--
-- ARGV[1] request id   ARGV[2] tokens to reserve   ARGV[3] lease (µs)
-- ARGV[4] billing deadline (µs from now: unsettled by then, the reservation is billed)
-- ARGV[5] monthly budget (micro-USD, -1 = none)   ARGV[6] nr   ARGV[7] nc
-- ARGV[8] pending member   ARGV[9] pending set TTL (ms)
-- then per rate limit: kind ('r' requests | 't' tokens), emission interval (µs per unit),
--   burst (units), limit per minute (for headers), name
-- then per concurrency limit: max, name
--
-- Returns {decision, limit name, retry after µs,
--          request limit, remaining, reset µs, token limit, remaining, reset µs}
-- decision: 1 admitted, 0 denied by a rate or concurrency limit, 2 denied by the budget,
--           -1 can never fit (cost above the burst). Limits absent from the request give -1 headers.
-- Time is Redis's own clock (TIME), never a replica's. shared.lua is prepended when embedded.
-- Numbers go to redis.call as numbers (Redis formats them exactly, in C): string.format in Lua
-- cost more than the commands themselves.
-- Each redis.call costs about a microsecond of Redis CPU, so reads are batched (MGET).
-- The request id is the server's own, unique per request: there is no "admitted before" case
-- (a client-chosen id must never turn a request into a free repeat of an earlier one).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local reserve = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
local budget = tonumber(ARGV[5])
local nr = tonumber(ARGV[6])
local nc = tonumber(ARGV[7])

local decision, denied_by, retry = 1, '', 0
local function deny(kind, name, wait)
  if decision == 1 or wait > retry then decision, denied_by, retry = kind, name, wait end
end

-- Rate limits (GCRA). A request of cost c is allowed when now >= max(tat, now) + c*T - burst*T.
local tats = {}
if nr > 0 then tats = redis.call('MGET', unpack(KEYS, 3, 2 + nr)) end
local new_tats = {}
local hdr = {r = {-1, -1, -1}, t = {-1, -1, -1}}
local a = 10
for i = 1, nr do
  local kind, interval, burst = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local per_minute, name = tonumber(ARGV[a + 3]), ARGV[a + 4]
  a = a + 5
  local cost = kind == 't' and reserve or 1
  if cost > burst then
    return {-1, name, 0, -1, -1, -1, -1, -1, -1}
  end
  local tat = tonumber(tats[i]) or now
  if tat < now then tat = now end
  local new_tat = tat + cost * interval
  local allow_at = new_tat - burst * interval
  local after = new_tat
  if allow_at > now then
    deny(0, name, allow_at - now)
    after = tat
  end
  new_tats[i] = new_tat
  -- Headers describe the tightest limit of each kind.
  local remaining = math.floor((burst * interval - (after - now)) / interval)
  if remaining < 0 then remaining = 0 end
  local h = hdr[kind]
  if h[2] == -1 or remaining < h[2] then
    hdr[kind] = {per_minute, remaining, after - now}
  end
end

-- Concurrency: live leases only (expired ones are ignored here and swept when admitting).
for i = 1, nc do
  local key = KEYS[2 + nr + i]
  local max, name = tonumber(ARGV[a]), ARGV[a + 1]
  a = a + 2
  if redis.call('ZCOUNT', key, now + 1, '+inf') >= max then
    -- A slot frees when any request ends; the earliest lease expiry is the latest that can be.
    local first = redis.call('ZRANGEBYSCORE', key, now + 1, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    deny(0, name, math.min(tonumber(first[2]) - now, 1000000))
  end
end

-- Monthly budget.
if budget >= 0 and decision == 1 then
  local year, month = year_month(math.floor(now / 1000000))
  local spend = redis.call('HMGET', KEYS[2], 'm', 'u')
  if tonumber(spend[1]) == year * 100 + month and tonumber(spend[2] or 0) >= budget then
    local ny, nm = year, month + 1
    if nm == 13 then ny, nm = year + 1, 1 end
    decision, denied_by, retry = 2, 'monthly_budget_usd', days_from_civil(ny, nm, 1) * 86400000000 - now
  end
end

local headers = {hdr.r[1], hdr.r[2], hdr.r[3], hdr.t[1], hdr.t[2], hdr.t[3]}
if decision ~= 1 then
  return {decision, denied_by, retry, headers[1], headers[2], headers[3], headers[4], headers[5], headers[6]}
end

-- Every limit passed: write.
for i = 1, nr do
  local ttl_ms = math.ceil((new_tats[i] - now) / 1000) + 1
  redis.call('SET', KEYS[2 + i], new_tats[i], 'PX', ttl_ms)
end
local expiry = now + lease
local lease_ms = math.ceil(lease / 1000) + 1000
local sweep = now % 16 == 0  -- expired leases only cost memory: sweep on about one admit in 16
for i = 1, nc do
  local key = KEYS[2 + nr + i]
  if sweep then redis.call('ZREMRANGEBYSCORE', key, '-inf', now) end
  redis.call('ZADD', key, expiry, ARGV[1])
  -- Every lease has the same length, so this one expires last: the set lives as long as it.
  redis.call('PEXPIRE', key, lease_ms)
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[8])
redis.call('PEXPIRE', KEYS[1], ARGV[9])
return {1, '', 0, headers[1], headers[2], headers[3], headers[4], headers[5], headers[6]}
