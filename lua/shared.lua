-- Shared helpers, prepended to admit.lua, settle.lua and sweep.lua when they are embedded:
-- Redis scripts cannot share code, and the month must come from Redis's clock.

-- Calendar month of a Unix time (proleptic Gregorian, H. Hinnant's civil_from_days).
local function year_month(seconds)
  local z = math.floor(seconds / 86400) + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end


-- Adds cost (micro-USD) to the spend hash for the calendar month of `now` (µs, Redis's clock):
-- the hash restarts when the month changes.
local function add_spend(key, now, cost)
  local year, month = year_month(math.floor(now / 1000000))
  local this_month = year * 100 + month
  if tonumber(redis.call('HGET', key, 'm')) ~= this_month then
    redis.call('HSET', key, 'm', this_month, 'u', cost)
  elseif cost > 0 then
    redis.call('HINCRBY', key, 'u', cost)
  end
  redis.call('PEXPIRE', key, 40 * 86400 * 1000)
end
