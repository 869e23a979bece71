-- sweep: bills, at their reservation, the requests of one tenant whose settle never came (the
-- replica died between the answer and its settle): once the deadline admit gave them passes.
-- A settle arriving later finds them gone and books nothing, so each request is billed once.
--
-- KEYS[1] pending (zset, see admit.lua)   KEYS[2] spend   KEYS[3] usage stream
-- ARGV[1] tenant id   ARGV[2] at most this many requests   ARGV[3] stream TTL (ms)
-- ARGV[4] stream max length (approximate)
--
-- Returns how many requests were billed. shared.lua is prepended when embedded.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
if #due == 0 then return 0 end
local spend = 0
for _, member in ipairs(due) do
  local id, key, prompt, reserved, cost, model = string.match(member, '^([^|]+)|([^|]*)|(%d+)|(%d+)|(%d+)|(.*)$')
  if id then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'request_id', id, 'tokens', reserved,
      'cost_micro_usd', cost, 'reserved', reserved, 'ts_us', now, 'tenant_id', ARGV[1], 'key_id', key,
      'model', model, 'prompt_tokens', prompt, 'completion_tokens', tonumber(reserved) - tonumber(prompt),
      'status', 'lease_expired', 'usage_source', 'estimated')
    spend = spend + tonumber(cost)
  end
end
redis.call('ZREM', KEYS[1], unpack(due))
add_spend(KEYS[2], now, spend)
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return #due
