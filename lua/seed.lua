-- seed: rebuilds a tenant's spend hashes (see shared.lua) from the ledger, after Redis lost
-- them (a restart without persistence, a failover, a flush) or when a period begins. The
-- replica sums the ledger; the reservations of requests admitted in the period and not settled
-- yet (the pending set) are added here, so their settles balance. A hash that another replica
-- seeded meanwhile is left as it is: seeding twice has the effect of once.
--
-- KEYS[1] pending   KEYS[2] spend:m   KEYS[3] spend:d
-- ARGV[1] month (YYYYMM)   ARGV[2] day (YYYYMMDD): the periods the sums are for
-- ARGV[3] nm, then nm field/amount pairs for the month   then nd, then nd pairs for the day
--
-- Returns 1 when the hashes count the current periods, 0 when the periods changed meanwhile
-- (the replica sums again). shared.lua is prepended when embedded.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local this_month, this_day = spend_periods(now)
if tonumber(ARGV[1]) ~= this_month or tonumber(ARGV[2]) ~= this_day then return 0 end

local nm = tonumber(ARGV[3])
local hashes = {
  {key = KEYS[2], period = this_month, from = 4, count = nm, ttl = SPEND_MONTH_TTL_MS,
   holds = function(day) return math.floor(day / 100) == this_month end},
  {key = KEYS[3], period = this_day, from = 5 + 2 * nm, count = tonumber(ARGV[4 + 2 * nm]), ttl = SPEND_DAY_TTL_MS,
   holds = function(day) return day == this_day end},
}
local pending
for _, hash in ipairs(hashes) do
  if tonumber(redis.call('HGET', hash.key, 'p')) ~= hash.period then
    local sums = {}
    for i = hash.from, hash.from + 2 * hash.count - 1, 2 do sums[ARGV[i]] = tonumber(ARGV[i + 1]) end
    pending = pending or redis.call('ZRANGE', KEYS[1], 0, -1)
    for _, member in ipairs(pending) do
      local req = parse_member(member)
      if req and hash.holds(req.day) then add_to(sums, req.key, req.model, req.cost) end
    end
    redis.call('DEL', hash.key)
    local write = {'HSET', hash.key, 'p', hash.period}
    for field, amount in pairs(sums) do
      write[#write + 1] = field
      write[#write + 1] = amount
    end
    redis.call(unpack(write))
    redis.call('PEXPIRE', hash.key, hash.ttl)
  end
end
return 1
