-- renew: extend the leases of requests still in flight, so only a dead holder's expire.
-- KEYS: none. ARGV[1]: lease length ms, ARGV[2]: clock override ms (0 = TIME),
-- ARGV[3..]: request ids. Returns how many leases were still held and extended.

local now = now_ms(ARGV[2])
local renewed = 0
for i = 3, #ARGV do
  renewed = renewed + redis.call('ZADD', LEASES, 'XX', 'CH', now + tonumber(ARGV[1]), ARGV[i])
end
return renewed
