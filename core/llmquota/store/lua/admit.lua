-- admit: check every scope of one request and, when all allow it, reserve its estimated
-- cost and tokens and take its parallel slots, all in one atomic step.
-- KEYS[1]: the leases zset of this hash tag, KEYS[2]: this request's lease record,
-- KEYS[3..]: the counters the checks name (`counter` = 1 is KEYS[3]).
-- ARGV[1]: JSON {lease_ms, model, cost (nano-USD), tokens, key_field, key_share, checks},
--   where a check is one of (every limit -1 = none; `scope`: the scope's index, echoed
--   back on refusal)
--     {kind='budget', scope, counter, max, window, anchor, bounds, window_index,
--      model_max, shared, increases}
--        max nano-USD in the window `window` (`none`, `monthly`, `fixed:<ms>` cut from
--        `anchor` ms, or `cal:<unit>:<zone>` whose boundaries around the caller's clock are
--        `bounds`), `model_max` for the request's model; `window_index`: 0 for the
--        budget's main window, n for its n-th further one; `shared` with other keys (see
--        below); optional BudgetOverrides `increases`: {{nano-USD, expires ms}, ...}
--        raising `max` while now < expires
--     {kind='rate', scope, counter, rpm, tpm, model_rpm, model_tpm}     per minute
--     {kind='pool', scope, counter, rpm, tpm, member, group, weight}    this key's share
--        of a Dynamic pool: `weight` of it, split among the active keys of `group`
--     {kind='parallel', scope, counter, max, model_max}                 in flight
--   and any check may carry `audit` = true (enforcement: Audit): it is counted and
--   reserved exactly as when enforced, but what it would refuse is admitted and reported.
-- ARGV[2]: clock override in ms (0 = Redis TIME).
-- At a shared budget one key may hold in flight (field `key_field`) at most `key_share`
-- of what the spend and the other keys' reservations leave. A request that does not fit
-- there is admitted holding only that share when the key holds nothing there yet and no
-- other such capped request is in flight there (field `cap`); otherwise it is refused
-- with `key_share`. So at most one request at a time holds less than its worst case.
-- Returns one of the two answers whose positions policy/decision.py names (ADMITTED,
-- REFUSED):
--   {1, budget_left, req_limit, req_left, tok_limit, tok_left, reset_ms, budget_room
--    [, the refusal's fields from `scope` on, of the first audited check that would have
--    refused]}
--   {0, scope, limit_name, current, limit, retry_ms, reserved, window_index}
-- (-1 = no such limit; budget_room: the tightest budget's room before this request's
-- reservation); an error, with nothing written, when cost or tokens are not integers in
-- [0, 1e15].

local spec = cjson.decode(ARGV[1])
if not amount(spec.cost) then return bad_input('cost') end
if not amount(spec.tokens) then return bad_input('tokens') end
local now = now_ms(ARGV[2])
local leases, record = KEYS[1], KEYS[2]
sweep(leases, now, 20)
local model = spec.model
local minute = minute_of(now)
local reset_ms = (minute + 1) * 60000 - now
local counters = {}
for i = 3, #KEYS do counters[i - 2] = KEYS[i] end
local lease = {counters = counters, budgets = {}, rates = {}, parallels = {}}
-- What the admitted answer reports: the tightest of each limit over every check.
local room = {budget_left = -1, budget_room = -1, req_limit = -1, req_left = -1,
  tok_limit = -1, tok_left = -1}

local function num(v) return tonumber(v) or 0 end

local function refused(check, limit_name, current, limit, retry_ms, reserved)
  return {0, check.scope, limit_name, current, limit, retry_ms, reserved,
    check.window_index or 0}
end

-- A budget's max in force now: raised by its BudgetOverrides that have not expired
-- (BudgetLimits.max_nanos_at in Python); a count-only budget stays count-only.
local function raised_max(check)
  local max = check.max
  if max < 0 or check.increases == nil then return max end
  for _, increase in ipairs(check.increases) do
    if now < increase[2] then max = max + increase[1] end
  end
  return max
end

local function tighter(limit_field, left_field, limit, used, extra)
  if limit < 0 then return end
  local left = math.max(limit - used - extra, 0)
  if room[left_field] < 0 or left < room[left_field] then
    room[limit_field], room[left_field] = limit, left
  end
end

local function active_in_group(key, group)
  local fields = redis.call('HGETALL', key)
  local n = 0
  for j = 1, #fields, 2 do
    if string.sub(fields[j], 1, 2) == 'a:' and fields[j + 1] == group then n = n + 1 end
  end
  return n
end

-- Each kind of check below reads its counter and returns the refusal it makes (if any)
-- and the function that reserves there; admit.lua runs those only once every check has
-- passed. An enforced check that refuses returns no reservation: nothing is written.
-- An audited one returns both, and its reservation is made like any other.

local function admit_budget(check, key)
  local max = raised_max(check)
  local start, window_end = budget_window(check.window, check.anchor, now, check.bounds)
  local v = redis.call('HMGET', key, 'win', 'spend', 'resv', 's:' .. model, 'r:' .. model,
    spec.key_field, 'cap')
  local spend, resv, model_spend, model_resv, held, cap = 0, 0, 0, 0, 0, 0
  if tonumber(v[1]) == start then
    spend, resv, model_spend, model_resv = num(v[2]), num(v[3]), num(v[4]), num(v[5])
    held, cap = num(v[6]), num(v[7])
  end
  local retry = -1
  if window_end >= 0 then retry = math.max(window_end - now, 0) end
  local refusal
  if max >= 0 and spend + resv >= max then
    refusal = refused(check, 'max_budget', spend, max, retry, resv)
  elseif check.model_max >= 0 and model_spend + model_resv >= check.model_max then
    refusal = refused(check, 'model_max_budget', model_spend, check.model_max, retry, model_resv)
  end
  if refusal and not check.audit then return refusal end
  local hold, capped = spec.cost, false
  if check.shared and max >= 0 and not refusal then
    local allowed = math.floor(spec.key_share * (max - spend - (resv - held)))
    if held + spec.cost > allowed then
      if held > 0 or cap > 0 then
        -- Wait for this key's own requests there, or for the one capped request.
        refusal = refused(check, 'key_share', held, allowed, 1000, spec.cost)
        if not check.audit then return refusal end
      else
        hold, capped = allowed, true
      end
    end
  end
  if max >= 0 then
    local budget_room = math.max(max - spend - resv, 0)
    if room.budget_room < 0 or budget_room < room.budget_room then
      room.budget_room = budget_room
    end
    local left = math.max(max - spend - resv - spec.cost, 0)
    if room.budget_left < 0 or left < room.budget_left then room.budget_left = left end
  end
  return refusal, function()
    roll(key, start)
    budget_ttl(key, window_end, now)
    redis.call('HINCRBY', key, 'resv', hold)
    if model ~= '' then redis.call('HINCRBY', key, 'r:' .. model, hold) end
    local key_field = ''
    if check.shared and hold > 0 then
      key_field = spec.key_field
      redis.call('HINCRBY', key, key_field, hold)
    end
    if capped then redis.call('HSET', key, 'cap', 1) end
    table.insert(lease.budgets, {counter = check.counter, window = check.window,
      anchor = check.anchor, bounds = check.bounds, window_start = start, held = hold,
      model = model, key_field = key_field, capped = capped})
  end
end

local function admit_rate(check, key)
  local v = redis.call('HMGET', key, 'win', 'req', 'tok', 'q:' .. model, 't:' .. model)
  local req, tok, model_req, model_tok = 0, 0, 0, 0
  if tonumber(v[1]) == minute then
    req, tok, model_req, model_tok = num(v[2]), num(v[3]), num(v[4]), num(v[5])
  end
  local refusal
  if check.rpm >= 0 and req >= check.rpm then
    refusal = refused(check, 'rpm', req, check.rpm, reset_ms, 0)
  elseif check.tpm >= 0 and tok >= check.tpm then
    refusal = refused(check, 'tpm', tok, check.tpm, reset_ms, 0)
  elseif check.model_rpm >= 0 and model_req >= check.model_rpm then
    refusal = refused(check, 'model_rpm', model_req, check.model_rpm, reset_ms, 0)
  elseif check.model_tpm >= 0 and model_tok >= check.model_tpm then
    refusal = refused(check, 'model_tpm', model_tok, check.model_tpm, reset_ms, 0)
  end
  if refusal and not check.audit then return refusal end
  tighter('req_limit', 'req_left', check.rpm, req, 1)
  tighter('req_limit', 'req_left', check.model_rpm, model_req, 1)
  tighter('tok_limit', 'tok_left', check.tpm, tok, spec.tokens)
  tighter('tok_limit', 'tok_left', check.model_tpm, model_tok, spec.tokens)
  return refusal, function()
    roll(key, minute)
    redis.call('HINCRBY', key, 'req', 1)
    redis.call('HINCRBY', key, 'tok', spec.tokens)
    local model_tokens_field = ''
    if model ~= '' then
      redis.call('HINCRBY', key, 'q:' .. model, 1)
      model_tokens_field = 't:' .. model
      redis.call('HINCRBY', key, model_tokens_field, spec.tokens)
    end
    redis.call('PEXPIRE', key, 120000)
    local requests_fields = {'req'}
    if model ~= '' then table.insert(requests_fields, 'q:' .. model) end
    table.insert(lease.rates, {counter = check.counter, minute = minute, tokens = spec.tokens,
      tokens_field = 'tok', model_tokens_field = model_tokens_field,
      requests_fields = requests_fields})
  end
end

local function admit_pool(check, key)
  -- Being here makes this key active in the pool for this minute (LiteLLM's rule), even
  -- when a later check refuses the request.
  roll(key, minute)
  redis.call('HSET', key, 'a:' .. check.member, check.group)
  redis.call('PEXPIRE', key, 120000)
  local n = active_in_group(key, check.group)
  local v = redis.call('HMGET', key, 'q:' .. check.member, 't:' .. check.member)
  local req, tok = num(v[1]), num(v[2])
  local refusal
  if check.rpm >= 0 then
    local share = math.max(1, math.floor(check.rpm * check.weight / n))
    if req >= share then refusal = refused(check, 'dynamic_rpm', req, share, reset_ms, n) end
    tighter('req_limit', 'req_left', share, req, 1)
  end
  if check.tpm >= 0 and not refusal then
    local share = math.max(1, math.floor(check.tpm * check.weight / n))
    if tok >= share then refusal = refused(check, 'dynamic_tpm', tok, share, reset_ms, n) end
    tighter('tok_limit', 'tok_left', share, tok, spec.tokens)
  end
  if refusal and not check.audit then return refusal end
  return refusal, function()
    redis.call('HINCRBY', key, 'q:' .. check.member, 1)
    redis.call('HINCRBY', key, 't:' .. check.member, spec.tokens)
    table.insert(lease.rates, {counter = check.counter, minute = minute, tokens = spec.tokens,
      tokens_field = 't:' .. check.member, model_tokens_field = '',
      requests_fields = {'q:' .. check.member}})
  end
end

local function admit_parallel(check, key)
  local v = redis.call('HMGET', key, 'all', 'm:' .. model)
  local refusal
  if check.max >= 0 and num(v[1]) >= check.max then
    refusal = refused(check, 'max_parallel_requests', num(v[1]), check.max, 1000, 0)
  elseif check.model_max >= 0 and num(v[2]) >= check.model_max then
    refusal = refused(check, 'model_max_parallel_requests', num(v[2]), check.model_max, 1000, 0)
  end
  if refusal and not check.audit then return refusal end
  return refusal, function()
    local fields = {'all'}
    if check.model_max >= 0 then table.insert(fields, 'm:' .. model) end
    for _, field in ipairs(fields) do redis.call('HINCRBY', key, field, 1) end
    table.insert(lease.parallels, {counter = check.counter, fields = fields})
  end
end

local ADMIT = {budget = admit_budget, rate = admit_rate, pool = admit_pool,
  parallel = admit_parallel}

local reservations = {}
local audited  -- the first refusal an audited check would have made
for _, check in ipairs(spec.checks) do
  local refusal, reserve = ADMIT[check.kind](check, counters[check.counter])
  if refusal and not reserve then return refusal end
  if refusal and not audited then audited = refusal end
  table.insert(reservations, reserve)
end
for _, reserve in ipairs(reservations) do reserve() end
redis.call('SET', record, cjson.encode(lease))
redis.call('ZADD', leases, now + spec.lease_ms, record)
local answer = {1, room.budget_left, room.req_limit, room.req_left, room.tok_limit,
  room.tok_left, reset_ms, room.budget_room}
if audited then
  for i = 2, #audited do table.insert(answer, audited[i]) end
end
return answer
