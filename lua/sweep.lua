-- sweep: bills, at their reservation, the requests of one tenant whose settle never came (the
-- replica died between the answer and its settle): once the deadline admit gave them passes.
-- A settle arriving later finds them gone and books nothing, so each request is billed once.
--
-- KEYS[1] pending (zset, see admit.lua)   KEYS[2] spent (see shared.lua)   KEYS[3] usage stream
-- (each event here is an entry of its own, its fields the entry's: the metering worker reads
-- these beside settle.lua's batched entries; sweeps are rare, and this keeps encoding out of Lua)
-- ARGV[1] tenant id   ARGV[2] at most this many requests   ARGV[3] stream TTL (ms)
-- ARGV[4] stream max length (approximate)
--
-- Returns how many requests were billed. shared.lua is prepended when embedded.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
if #due == 0 then return 0 end
local month_seeded, day_seeded, this_month, this_day = spend_state(KEYS[2], now)
local spend = {}
for _, member in ipairs(due) do
  local req = parse_member(member)
  if req then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'request_id', req.id, 'tokens', req.reserved,
      'cost_micro_usd', req.cost, 'reserved', req.reserved, 'ts_us', now, 'tenant_id', ARGV[1], 'key_id', req.key,
      'model', req.model, 'prompt_tokens', req.prompt, 'completion_tokens', req.reserved - req.prompt,
      'price_id', req.price, 'status', 'lease_expired', 'usage_source', 'estimated')
    -- Its reservation is already counted in the period it was admitted in; an older one's cost
    -- lands in this period, as its ledger row does.
    if month_seeded and math.floor(req.day / 100) ~= this_month then add_to(spend, 'm|', req.key, req.model, req.cost) end
    if day_seeded and req.day ~= this_day then add_to(spend, 'd|', req.key, req.model, req.cost) end
  end
end
redis.call('ZREM', KEYS[1], unpack(due))
count_spend(KEYS[2], spend)
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return #due
