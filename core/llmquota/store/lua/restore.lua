-- restore: add a spend snapshot back into a budget counter after the store lost its data
-- (standalone mode; the operator re-seeds from statuses with seed.lua instead). Adds to
-- what the counter holds, since requests admitted after the loss already counted there;
-- at most once per store generation, since every replica restores its own snapshot.
-- KEYS[1]: the budget counter. ARGV[1]: window (`fixed:<ms>`, `monthly`, `none`),
-- ARGV[2]: anchor ms, ARGV[3]: window start ms the snapshot counted, ARGV[4]: spend
-- nano-USD, ARGV[5]: generation (digits), ARGV[6]: clock override ms (0 = TIME),
-- ARGV[7..]: model, spend pairs.
-- Returns 1 when restored, 0 when the snapshot's window is over or this generation
-- already restored the counter.

local now = now_ms(ARGV[6])
local start, window_end = budget_window(ARGV[1], tonumber(ARGV[2]), now)
if start ~= tonumber(ARGV[3]) then return 0 end
if redis.call('HGET', KEYS[1], 'rst') == ARGV[5] then return 0 end
roll(KEYS[1], start)
redis.call('HSET', KEYS[1], 'rst', ARGV[5])
if tonumber(ARGV[4]) > 0 then redis.call('HINCRBY', KEYS[1], 'spend', ARGV[4]) end
for i = 7, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], 's:' .. ARGV[i], ARGV[i + 1])
end
budget_ttl(KEYS[1], window_end, now)
return 1
