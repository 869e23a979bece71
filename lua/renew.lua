-- renew: extends the concurrency leases of one request that is still running (a long stream),
-- so its slots are not freed under it. A lease that already expired is not brought back.
--
-- KEYS[1..]  the in-flight sets the request holds a lease in
-- ARGV[1] request id   ARGV[2] lease (µs)
--
-- Returns how many leases were renewed.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local lease = tonumber(ARGV[2])
local expiry = string.format('%.0f', now + lease)
local renewed = 0
for i = 1, #KEYS do
  local current = redis.call('ZSCORE', KEYS[i], ARGV[1])
  if current and tonumber(current) > now then
    redis.call('ZADD', KEYS[i], 'XX', expiry, ARGV[1])
    -- Every lease has the same length, so this one now expires last: the set lives as long as it.
    redis.call('PEXPIRE', KEYS[i], math.ceil(lease / 1000) + 1000)
    renewed = renewed + 1
  end
end
return renewed
