-- admit: check every scope of one request and, when all allow it, reserve its estimated
-- cost and tokens and take its parallel slots, all in one atomic step.
-- KEYS: the counters the checks name (by index `k`).
-- ARGV[1]: JSON {id, lease_ms, model, cost (nano-USD), tokens, kf, share, checks: [...]},
--   where a check is one of
--     {t='b', s, k, max, w, a, mm, sh, inc}  budget: max nano-USD (-1 = only count),
--                                    window `w` anchored at `a` ms, model cap `mm` (-1 =
--                                    none); `sh`: shared with other keys (see below);
--                                    optional BudgetOverrides `inc`: {{nano-USD, expires
--                                    ms}, ...} raising `max` while now < expires
--     {t='r', s, k, rpm, tpm, mrpm, mtpm}            per-minute limits (-1 = none)
--     {t='d', s, k, rpm, tpm, member, group, weight} this key's share of a Dynamic pool
--     {t='p', s, k, max, mmax}                       requests in flight (-1 = none)
--   `s` is the scope's index, echoed back on refusal.
-- ARGV[2]: clock override in ms (0 = Redis TIME).
-- At a shared budget one key may hold in flight (field `kf`) at most `share` of what the
-- spend and the other keys' reservations leave. A request that does not fit there is
-- admitted holding only that share when the key holds nothing there yet and no other
-- such capped request is in flight there (field `cap`); otherwise it is refused with
-- `key_share`. So at most one request at a time holds less than its worst case.
-- Returns {1, budget_left, req_limit, req_left, tok_limit, tok_left, reset_ms, budget_room}
-- (-1 = no such limit; budget_room: the tightest budget's room before this request's
-- reservation, > 0) or {0, scope_index, limit_name, current, limit, retry_ms, reserved}; an
-- error, with nothing written, when cost or tokens are not integers in [0, 1e15].

local spec = cjson.decode(ARGV[1])
if not amount(spec.cost) then return bad_input('cost') end
if not amount(spec.tokens) then return bad_input('tokens') end
local now = now_ms(ARGV[2])
sweep(now, 20)
local model = spec.model
local minute = minute_of(now)
local reset_ms = (minute + 1) * 60000 - now
local windows = {}
local reserve, capped = {}, {}  -- per budget check: nano-USD to hold, whether capped
local budget_left, req_limit, req_left, tok_limit, tok_left = -1, -1, -1, -1, -1
local budget_room = -1

local function num(v) return tonumber(v) or 0 end

-- A budget's max in force now: raised by its BudgetOverrides that have not expired
-- (BudgetLimits.max_nanos_at in Python); a count-only budget stays count-only.
local function raised_max(check, at)
  local max = check.max
  if max < 0 or check.inc == nil then return max end
  for _, increase in ipairs(check.inc) do
    if at < increase[2] then max = max + increase[1] end
  end
  return max
end

local function tighter(limit, used, extra, cur_limit, cur_left)
  if limit < 0 then return cur_limit, cur_left end
  local left = limit - used - extra
  if left < 0 then left = 0 end
  if cur_left < 0 or left < cur_left then return limit, left end
  return cur_limit, cur_left
end

local function active_in_group(key, group)
  local fields = redis.call('HGETALL', key)
  local n = 0
  for j = 1, #fields, 2 do
    if string.sub(fields[j], 1, 2) == 'a:' and fields[j + 1] == group then n = n + 1 end
  end
  return n
end

for i, c in ipairs(spec.checks) do
  local key = KEYS[c.k]
  if c.t == 'b' then
    local max = raised_max(c, now)
    local start, window_end = budget_window(c.w, c.a, now)
    windows[i] = {start, window_end}
    local v = redis.call('HMGET', key, 'win', 'spend', 'resv', 's:' .. model, 'r:' .. model,
      spec.kf, 'cap')
    local spend, resv, mspend, mresv, held, cap = 0, 0, 0, 0, 0, 0
    if tonumber(v[1]) == start then
      spend, resv, mspend, mresv = num(v[2]), num(v[3]), num(v[4]), num(v[5])
      held, cap = num(v[6]), num(v[7])
    end
    local retry = -1
    if window_end >= 0 then retry = window_end - now end
    if max >= 0 and spend + resv >= max then
      return {0, c.s, 'max_budget', spend, max, retry, resv}
    end
    if c.mm >= 0 and mspend + mresv >= c.mm then
      return {0, c.s, 'model_max_budget', mspend, c.mm, retry, mresv}
    end
    reserve[i] = spec.cost
    if c.sh and max >= 0 then
      local allowed = math.floor(spec.share * (max - spend - (resv - held)))
      if held + spec.cost > allowed then
        if held > 0 or cap > 0 then
          -- Wait for this key's own requests there, or for the one capped request.
          return {0, c.s, 'key_share', held, allowed, 1000, spec.cost}
        end
        reserve[i], capped[i] = allowed, true
      end
    end
    if max >= 0 then
      if budget_room < 0 or max - spend - resv < budget_room then budget_room = max - spend - resv end
      local left = max - spend - resv - spec.cost
      if left < 0 then left = 0 end
      if budget_left < 0 or left < budget_left then budget_left = left end
    end
  elseif c.t == 'r' then
    local v = redis.call('HMGET', key, 'win', 'req', 'tok', 'q:' .. model, 't:' .. model)
    local req, tok, mreq, mtok = 0, 0, 0, 0
    if tonumber(v[1]) == minute then req, tok, mreq, mtok = num(v[2]), num(v[3]), num(v[4]), num(v[5]) end
    if c.rpm >= 0 and req >= c.rpm then return {0, c.s, 'rpm', req, c.rpm, reset_ms, 0} end
    if c.tpm >= 0 and tok >= c.tpm then return {0, c.s, 'tpm', tok, c.tpm, reset_ms, 0} end
    if c.mrpm >= 0 and mreq >= c.mrpm then return {0, c.s, 'model_rpm', mreq, c.mrpm, reset_ms, 0} end
    if c.mtpm >= 0 and mtok >= c.mtpm then return {0, c.s, 'model_tpm', mtok, c.mtpm, reset_ms, 0} end
    req_limit, req_left = tighter(c.rpm, req, 1, req_limit, req_left)
    req_limit, req_left = tighter(c.mrpm, mreq, 1, req_limit, req_left)
    tok_limit, tok_left = tighter(c.tpm, tok, spec.tokens, tok_limit, tok_left)
    tok_limit, tok_left = tighter(c.mtpm, mtok, spec.tokens, tok_limit, tok_left)
  elseif c.t == 'd' then
    -- Being here makes this key active in the pool for this minute (LiteLLM's rule).
    roll(key, minute)
    redis.call('HSET', key, 'a:' .. c.member, c.group)
    redis.call('PEXPIRE', key, 120000)
    local n = active_in_group(key, c.group)
    local v = redis.call('HMGET', key, 'q:' .. c.member, 't:' .. c.member)
    local req, tok = num(v[1]), num(v[2])
    if c.rpm >= 0 then
      local share = math.max(1, math.floor(c.rpm * c.weight / n))
      if req >= share then return {0, c.s, 'dynamic_rpm', req, share, reset_ms, n} end
      req_limit, req_left = tighter(share, req, 1, req_limit, req_left)
    end
    if c.tpm >= 0 then
      local share = math.max(1, math.floor(c.tpm * c.weight / n))
      if tok >= share then return {0, c.s, 'dynamic_tpm', tok, share, reset_ms, n} end
      tok_limit, tok_left = tighter(share, tok, spec.tokens, tok_limit, tok_left)
    end
  elseif c.t == 'p' then
    local v = redis.call('HMGET', key, 'all', 'm:' .. model)
    if c.max >= 0 and num(v[1]) >= c.max then
      return {0, c.s, 'max_parallel_requests', num(v[1]), c.max, 1000, 0}
    end
    if c.mmax >= 0 and num(v[2]) >= c.mmax then
      return {0, c.s, 'model_max_parallel_requests', num(v[2]), c.mmax, 1000, 0}
    end
  end
end

local lease = {b = {}, r = {}, p = {}}
for i, c in ipairs(spec.checks) do
  local key = KEYS[c.k]
  if c.t == 'b' then
    local start, window_end = windows[i][1], windows[i][2]
    roll(key, start)
    budget_ttl(key, window_end, now)
    local cost = reserve[i]
    redis.call('HINCRBY', key, 'resv', cost)
    if model ~= '' then redis.call('HINCRBY', key, 'r:' .. model, cost) end
    local kf = ''
    if c.sh and cost > 0 then
      kf = spec.kf
      redis.call('HINCRBY', key, kf, cost)
    end
    if capped[i] then redis.call('HSET', key, 'cap', 1) end
    table.insert(lease.b, {key = key, w = c.w, a = c.a, win = start, cost = cost,
      model = model, kf = kf, capped = capped[i] or false})
  elseif c.t == 'r' then
    roll(key, minute)
    redis.call('HINCRBY', key, 'req', 1)
    redis.call('HINCRBY', key, 'tok', spec.tokens)
    local model_tok = ''
    if model ~= '' then
      redis.call('HINCRBY', key, 'q:' .. model, 1)
      model_tok = 't:' .. model
      redis.call('HINCRBY', key, model_tok, spec.tokens)
    end
    redis.call('PEXPIRE', key, 120000)
    table.insert(lease.r, {key = key, win = minute, tok = spec.tokens, tok_field = 'tok',
      model_tok_field = model_tok})
  elseif c.t == 'd' then
    redis.call('HINCRBY', key, 'q:' .. c.member, 1)
    redis.call('HINCRBY', key, 't:' .. c.member, spec.tokens)
    table.insert(lease.r, {key = key, win = minute, tok = spec.tokens,
      tok_field = 't:' .. c.member, model_tok_field = ''})
  elseif c.t == 'p' then
    local fields = {'all'}
    if c.mmax >= 0 then table.insert(fields, 'm:' .. model) end
    for _, field in ipairs(fields) do redis.call('HINCRBY', key, field, 1) end
    table.insert(lease.p, {key = key, fields = fields})
  end
end
redis.call('SET', 'llmquota:lease:' .. spec.id, cjson.encode(lease))
redis.call('ZADD', LEASES, now + spec.lease_ms, spec.id)
return {1, budget_left, req_limit, req_left, tok_limit, tok_left, reset_ms, budget_room}
