-- renew: extend the leases of requests still in flight, so only a dead holder's expire.
-- KEYS[1]: one hash tag's leases zset. ARGV[1]: lease length ms, ARGV[2]: clock override
-- ms (0 = TIME), ARGV[3..]: the zset's members to extend (lease record names of requests
-- admitted under that tag). Returns how many leases were still held and extended.

local now = now_ms(ARGV[2])
local renewed = 0
for i = 3, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[1]), ARGV[i])
end
return renewed
