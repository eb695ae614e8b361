-- restore: add a spend snapshot back into a budget counter after the store lost its data
-- (standalone mode; the operator re-seeds from statuses with seed.lua instead). Adds to
-- what the counter holds, since requests admitted after the loss already counted there;
-- at most once per store generation, since every replica restores its own snapshot.
-- KEYS[1]: the budget counter. ARGV[1]: window (`fixed:<ms>`, `monthly`, `cal:<unit>:<zone>`,
-- `none`), ARGV[2]: anchor ms, ARGV[3]: a calendar window's bounds around the caller's
-- clock, comma-separated ms ('' for the others), ARGV[4]: window start ms the snapshot
-- counted, ARGV[5]: spend nano-USD, ARGV[6]: generation (digits), ARGV[7]: clock override
-- ms (0 = TIME), ARGV[8..]: model, spend pairs.
-- Returns 1 when restored, 0 when the snapshot's window is over or this generation
-- already restored the counter.

local now = now_ms(ARGV[7])
local bounds = {}
for bound in string.gmatch(ARGV[3], '[^,]+') do table.insert(bounds, tonumber(bound)) end
local start, window_end = budget_window(ARGV[1], tonumber(ARGV[2]), now, bounds)
if start ~= tonumber(ARGV[4]) then return 0 end
if redis.call('HGET', KEYS[1], 'rst') == ARGV[6] then return 0 end
roll(KEYS[1], start)
redis.call('HSET', KEYS[1], 'rst', ARGV[6])
if tonumber(ARGV[5]) > 0 then redis.call('HINCRBY', KEYS[1], 'spend', ARGV[5]) end
for i = 8, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], 's:' .. ARGV[i], ARGV[i + 1])
end
budget_ttl(KEYS[1], window_end, now)
return 1
