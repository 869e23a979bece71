-- seed: rebuilds a tenant's spend (see shared.lua) from the ledger, after Redis lost it (a
-- restart without persistence, a failover, a flush) or when a period begins. The replica sums
-- the ledger; the reservations of requests admitted in the period and not settled yet (the
-- pending set) are added here, so their settles balance. A period another replica seeded
-- meanwhile is left as it is: seeding twice has the effect of once.
--
-- KEYS[1] pending   KEYS[2] spent
-- ARGV[1] month (YYYYMM)   ARGV[2] day (YYYYMMDD): the periods the sums are for
-- ARGV[3] nm, then nm field/amount pairs for the month   then nd, then nd pairs for the day
--   (fields t, k:<key id>, m:<model>)
--
-- Returns 1 when the hash counts the current periods, 0 when the periods changed meanwhile
-- (the replica sums again). shared.lua is prepended when embedded.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local this_month, this_day = spend_periods(now)
if tonumber(ARGV[1]) ~= this_month or tonumber(ARGV[2]) ~= this_day then return 0 end

local month_seeded, day_seeded = spend_state(KEYS[2], now)
if month_seeded and day_seeded then return 1 end

local nm = tonumber(ARGV[3])
local periods = {
  {prefix = 'm|', field = 'pm', value = this_month, seeded = month_seeded, from = 4, count = nm,
   holds = function(day) return math.floor(day / 100) == this_month end},
  {prefix = 'd|', field = 'pd', value = this_day, seeded = day_seeded, from = 5 + 2 * nm, count = tonumber(ARGV[4 + 2 * nm]),
   holds = function(day) return day == this_day end},
}
local existing = redis.call('HKEYS', KEYS[2])
local pending = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, period in ipairs(periods) do
  if not period.seeded then
    -- What the hash held for an earlier period goes.
    local stale = {}
    for _, field in ipairs(existing) do
      if string.sub(field, 1, 2) == period.prefix then stale[#stale + 1] = field end
    end
    for i = 1, #stale, 500 do redis.call('HDEL', KEYS[2], unpack(stale, i, math.min(i + 499, #stale))) end
    local sums = {}
    for i = period.from, period.from + 2 * period.count - 1, 2 do
      sums[period.prefix .. ARGV[i]] = tonumber(ARGV[i + 1])
    end
    for _, member in ipairs(pending) do
      local req = parse_member(member)
      if req and period.holds(req.day) then add_to(sums, period.prefix, req.key, req.model, req.cost) end
    end
    local write = {'HSET', KEYS[2], period.field, period.value}
    for field, amount in pairs(sums) do
      write[#write + 1] = field
      write[#write + 1] = amount
    end
    redis.call(unpack(write))
  end
end
redis.call('PEXPIRE', KEYS[2], SPEND_TTL_MS)
return 1
