-- Shared prelude, prepended to every llmquota script at load time.
-- Units: time in integer milliseconds since the Unix epoch (UTC), money in integer
-- nano-USD, tokens as integers. Counters are hashes that carry their window start in
-- field `win`; a counter whose `win` is not the current window is stale and counts as
-- zero, so a budget resets exactly at its boundary without anything running then.

local EXPIRED_LEASE_KEEP_MS = 86400000
-- The largest amount (nano-USD or tokens) one call may add: 1e15 nano-USD is $1M, and
-- sums of such stay exact in Lua's doubles (2^53) and Redis' 64-bit integers.
local MAX_AMOUNT = 1000000000000000

-- A caller's amount as an integer in [0, MAX_AMOUNT], or nil. Scripts check every input
-- with it before their first write: Redis does not roll a script back, so an error after
-- a write would leave half an operation behind.
local function amount(value)
  local n = tonumber(value)
  if n and n >= 0 and n <= MAX_AMOUNT and n == math.floor(n) then return n end
  return nil
end

local function bad_input(what)
  return redis.error_reply('ERR llmquota: ' .. what .. ' must be an integer in [0, 1e15]; nothing was written')
end

local function now_ms(override)
  local o = tonumber(override)
  if o and o > 0 then return o end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Howard Hinnant's civil-calendar algorithms (days since 1970-01-01 <-> y/m/d).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m > 2) and (m - 3) or (m + 9)
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = (mp < 10) and (mp + 3) or (mp - 9)
  if m <= 2 then y = y + 1 end
  return y, m
end

-- A calendar window in a time zone from `bounds`, consecutive window starts the caller
-- computed around its own clock (durations.calendar_bounds; Lua has no zone data): the
-- window [bounds[i], bounds[i+1]) that `now` falls in, and whether it falls in one at
-- all. A clock outside them (the caller's and Redis' a whole window apart) gets the
-- nearest window, and `false`.
local function calendar_window(bounds, now)
  local last = #bounds
  if now < bounds[1] then return bounds[1], bounds[2], false end
  for i = 1, last - 1 do
    if now < bounds[i + 1] then return bounds[i], bounds[i + 1], true end
  end
  return bounds[last - 1], bounds[last], false
end

-- The budget window containing `now`: start and end (end = -1: never resets).
-- `w` is `none`, `monthly` (UTC), `fixed:<ms>` (cut from `anchor`) or `cal:<unit>:<zone>`,
-- whose boundaries the caller hands in (`bounds`, see calendar_window).
local function budget_window(w, anchor, now, bounds)
  if w == 'none' then return 0, -1 end
  if string.sub(w, 1, 4) == 'cal:' then
    local start, window_end = calendar_window(bounds, now)
    return start, window_end
  end
  if w == 'monthly' then
    local y, m = civil_from_days(math.floor(now / 86400000))
    local ny, nm = y, m + 1
    if nm == 13 then ny, nm = y + 1, 1 end
    return days_from_civil(y, m, 1) * 86400000, days_from_civil(ny, nm, 1) * 86400000
  end
  local len = tonumber(string.sub(w, 7))
  local start = anchor + math.floor((now - anchor) / len) * len
  return start, start + len
end

local function minute_of(now) return math.floor(now / 60000) end

-- Make `key` a counter of window `win`, emptied if it held another window.
local function roll(key, win)
  if tonumber(redis.call('HGET', key, 'win')) ~= win then
    redis.call('DEL', key)
    redis.call('HSET', key, 'win', win)
  end
end

-- Keep a counter a day past its window's end. The TTL is relative to the script's clock
-- (`now`), not an absolute PEXPIREAT, which Redis would compare with its own clock: under
-- an injected clock behind Redis TIME the counter would vanish as soon as it was written.
local function budget_ttl(key, window_end, now)
  if window_end >= 0 then
    redis.call('PEXPIRE', key, window_end - now + EXPIRED_LEASE_KEEP_MS)
  end
end

-- A lease record (JSON, written by admit.lua) holds `counters`, the names of the counters
-- the request was admitted with (KEYS[3..] of admit.lua, in that order), and per kind what
-- it holds there, each entry naming its counter by index into that list:
--   budgets:   {counter, window, anchor, bounds, window_start, held, model, key_field,
--               capped} (`bounds`: a calendar window's, see calendar_window)
--   rates:     {counter, minute, tokens, tokens_field, model_tokens_field, requests_fields}
--   parallels: {counter, fields}
-- and `freed` once a sweep has released it.

-- The counters settle.lua or abort.lua were given (KEYS[3..]), or nil when they are not
-- the ones the lease was admitted with: nothing may then be written.
local function given_counters(lease)
  if #KEYS - 2 ~= #lease.counters then return nil end
  local counters = {}
  for i, name in ipairs(lease.counters) do
    if KEYS[i + 2] ~= name then return nil end
    counters[i] = name
  end
  return counters
end

local function wrong_keys()
  return redis.error_reply('ERR llmquota: KEYS are not the ones the lease was admitted with; nothing was written')
end

-- Give back what a lease holds at one budget counter, and charge the real cost there.
-- A reservation is still held only while its counter counts the window it was made in
-- and that window is the current one; once the window has rolled over (whether or not an
-- admission has emptied the counter yet) the real charge lands in the current window, so
-- no spend is lost to a stale counter.
-- A calendar window's lease knows the boundaries of its own window and the next; a
-- request settled past those (a stream of more than a day on a daily window) charges the
-- window its counter holds by then, when an admission has moved it on, and is never
-- rolled back into an older window.
local function release_budget(key, b, cost, now, freed)
  local start, window_end = budget_window(b.window, b.anchor, now, b.bounds)
  local counted = tonumber(redis.call('HGET', key, 'win'))
  if b.bounds and now >= b.bounds[#b.bounds] and counted and counted > b.window_start then
    start, window_end = counted, -1
  end
  local held = (not freed) and b.window_start == start and counted == b.window_start
  -- A zero reservation is skipped: Lua renders -0 as '-0', which HINCRBY refuses.
  if held and b.held > 0 then
    redis.call('HINCRBY', key, 'resv', -b.held)
    if b.model ~= '' then redis.call('HINCRBY', key, 'r:' .. b.model, -b.held) end
    -- The key's own share of a shared scope; the field goes when nothing is held.
    if b.key_field ~= '' and tonumber(redis.call('HINCRBY', key, b.key_field, -b.held)) <= 0 then
      redis.call('HDEL', key, b.key_field)
    end
  end
  if held and b.capped then redis.call('HDEL', key, 'cap') end
  if cost > 0 then
    roll(key, start)
    budget_ttl(key, window_end, now)
    redis.call('HINCRBY', key, 'spend', cost)
    if b.model ~= '' then redis.call('HINCRBY', key, 's:' .. b.model, cost) end
  end
end

-- Replace the tokens a lease reserved at one rate counter (or pool) with the real ones;
-- `refused` (another slot refused the request) takes its request back from the count too.
local function release_rate(key, r, tokens, now, freed, refused)
  local minute = minute_of(now)
  local held = (not freed) and r.minute == minute
    and tonumber(redis.call('HGET', key, 'win')) == r.minute
  if held and refused then
    for _, field in ipairs(r.requests_fields) do redis.call('HINCRBY', key, field, -1) end
  end
  local delta = tokens
  if held then
    delta = tokens - r.tokens
  elseif tokens > 0 then
    roll(key, minute)
  end
  if delta ~= 0 then
    redis.call('HINCRBY', key, r.tokens_field, delta)
    if r.model_tokens_field ~= '' then redis.call('HINCRBY', key, r.model_tokens_field, delta) end
    redis.call('PEXPIRE', key, 120000)
  end
end

local function release_parallel(key, p)
  for _, field in ipairs(p.fields) do
    if tonumber(redis.call('HINCRBY', key, field, -1)) < 0 then
      redis.call('HSET', key, field, 0)
    end
  end
end

-- Replace a lease's reservations with the real cost and tokens (0, 0 to abort) and free
-- its parallel slots; `counters` are its counters' names, in the lease's order.
-- `freed` (already released by a sweep) skips the reservation part and only charges;
-- `refused`: the request was refused in another slot, so it never counted as a request.
local function release(lease, counters, cost, tokens, now, freed, refused)
  for _, b in ipairs(lease.budgets) do release_budget(counters[b.counter], b, cost, now, freed) end
  for _, r in ipairs(lease.rates) do
    release_rate(counters[r.counter], r, tokens, now, freed, refused)
  end
  if not freed then
    for _, p in ipairs(lease.parallels) do release_parallel(counters[p.counter], p) end
  end
end

-- Free the reservations of leases in `leases` (one hash tag's zset) whose holder stopped
-- renewing them (it died), keeping the record a day so that a late settle still charges
-- the real cost. The one place a script touches keys it was not given: which leases
-- expired is known only here, so their records (the zset's members) and the counters
-- those name are read from the zset and the records. All carry the zset's hash tag, so
-- in Redis Cluster they sit in the slot of the script's KEYS.
local function sweep(leases, now, limit)
  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, limit)
  for _, record in ipairs(expired) do
    local raw = redis.call('GET', record)
    if raw then
      local lease = cjson.decode(raw)
      if not lease.freed then
        release(lease, lease.counters, 0, 0, now, false, false)
        lease.freed = true
        redis.call('SET', record, cjson.encode(lease), 'PX', EXPIRED_LEASE_KEEP_MS)
      end
    end
    redis.call('ZREM', leases, record)
  end
  return #expired
end
