-- renew: keeps a request that is still running (a long stream) from being treated as abandoned:
-- extends its concurrency leases, so its slots are not freed under it, and its billing deadline
-- in the pending set, so sweep.lua does not bill it at its reservation. What already expired or
-- was swept is not brought back.
--
-- KEYS[1] pending   KEYS[2..] the in-flight sets the request holds a lease in
-- ARGV[1] request id   ARGV[2] lease (µs)   ARGV[3] pending member   ARGV[4] billing deadline (µs from now)
--
-- Returns how many leases were renewed.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local lease = tonumber(ARGV[2])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[4]), ARGV[3])
end
local renewed = 0
for i = 2, #KEYS do
  local current = redis.call('ZSCORE', KEYS[i], ARGV[1])
  if current and tonumber(current) > now then
    redis.call('ZADD', KEYS[i], 'XX', now + lease, ARGV[1])
    -- Every lease has the same length, so this one now expires last: the set lives as long as it.
    redis.call('PEXPIRE', KEYS[i], math.ceil(lease / 1000) + 1000)
    renewed = renewed + 1
  end
end
return renewed
