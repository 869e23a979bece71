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


-- Spend is kept per UTC calendar month and day in one hash per tenant (KEYS "spent"): fields pm
-- and pd are the month (YYYYMM) and day (YYYYMMDD) it counts; "m|t" is the tenant's spend in the
-- month, "m|k:<key id>" a key's, "m|m:<model>" a model's, and "d|..." the same for the day, each
-- in micro-USD: settled cost plus the reservations of requests admitted in the period and not
-- settled yet. A period the hash does not count (pm or pd is another) is unseeded: the replica
-- rebuilds it from the ledger (seed.lua) before a budget is checked against it, and nothing is
-- counted into it until then. A tenant that never had a budget has no hash: one HMGET finds that.
local SPEND_TTL_MS = 35 * 86400 * 1000

-- The current month (YYYYMM) and day (YYYYMMDD) of `now` (µs), and the µs until each ends.
local function spend_periods(now)
  local seconds = math.floor(now / 1000000)
  local year, month = year_month(seconds)
  local days = math.floor(seconds / 86400)
  local day = days - days_from_civil(year, month, 1) + 1
  local ny, nm = year, month + 1
  if nm == 13 then ny, nm = year + 1, 1 end
  return year * 100 + month, (year * 100 + month) * 100 + day,
    days_from_civil(ny, nm, 1) * 86400000000 - now, (days + 1) * 86400000000 - now
end

-- A pending member: "<id>|<key id>|<prompt estimate>|<reserved tokens>|<reserved cost>|<day>|
-- <price id>|<model>" (day: YYYYMMDD of the admission). nil for anything else.
local function parse_member(member)
  local id, key, prompt, reserved, cost, day, price, model =
    string.match(member, '^([^|]+)|([^|]*)|(%d+)|(%d+)|(%d+)|(%d+)|(%d*)|(.*)$')
  if not id then
    -- Written before days and prices were kept (a rolling upgrade): billed in the current period.
    id, key, prompt, reserved, cost, model = string.match(member, '^([^|]+)|([^|]*)|(%d+)|(%d+)|(%d+)|(.*)$')
    if not id then return nil end
    day, price = 0, ''
  end
  return {id = id, key = key, prompt = tonumber(prompt), reserved = tonumber(reserved), cost = tonumber(cost),
          day = tonumber(day), price = price, model = model}
end

-- Whether the spend hash counts this month and this day (one HMGET), and those periods. They
-- are worked out only when the tenant has a spend hash at all: most have none (no budget).
local function spend_state(key, now)
  local p = redis.call('HMGET', key, 'pm', 'pd')
  if not p[1] and not p[2] then return false, false end
  local this_month, this_day = spend_periods(now)
  return tonumber(p[1]) == this_month, tonumber(p[2]) == this_day, this_month, this_day
end

-- Adds amount to the tenant, key and model fields of one period ("m|" or "d|") in a table of
-- field -> delta.
local function add_to(deltas, period, key, model, amount)
  if amount == 0 then return end
  local t, k, m = period .. 't', period .. 'k:' .. key, period .. 'm:' .. model
  deltas[t] = (deltas[t] or 0) + amount
  deltas[k] = (deltas[k] or 0) + amount
  deltas[m] = (deltas[m] or 0) + amount
end

-- Writes deltas (field -> micro-USD) into the spend hash (the caller knows the periods are seeded).
local function count_spend(key, deltas)
  local wrote = false
  for field, amount in pairs(deltas) do
    if amount ~= 0 then
      redis.call('HINCRBY', key, field, amount)
      wrote = true
    end
  end
  if wrote then redis.call('PEXPIRE', key, SPEND_TTL_MS) end
end
