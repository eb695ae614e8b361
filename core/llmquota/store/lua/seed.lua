-- seed: restore a budget counter after Redis lost its data, from the spend the operator
-- last wrote into a status. Never overwrites a counter that exists (traffic since the
-- restart already counted there).
-- KEYS[1]: the budget counter. ARGV[1]: window start ms, ARGV[2]: window end ms (-1 =
-- never), ARGV[3]: spend nano-USD, ARGV[4..]: model, spend pairs.
-- Returns 1 when seeded, 0 when the counter already existed.

if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'win', ARGV[1], 'spend', ARGV[3], 'resv', 0)
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[1], 's:' .. ARGV[i], ARGV[i + 1])
end
budget_ttl(KEYS[1], tonumber(ARGV[2]), now_ms(0))
return 1
