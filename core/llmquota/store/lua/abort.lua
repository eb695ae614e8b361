-- abort: free a request's reservation and slots without charging it (upstream failed,
-- client left before anything was served).
-- KEYS: none. ARGV[1]: request id, ARGV[2]: clock override ms (0 = TIME).
-- Returns 1 when freed, 0 when unknown or already freed by a sweep.

local now = now_ms(ARGV[2])
local raw = redis.call('GET', 'llmquota:lease:' .. ARGV[1])
if not raw then return 0 end
local lease = cjson.decode(raw)
redis.call('DEL', 'llmquota:lease:' .. ARGV[1])
redis.call('ZREM', LEASES, ARGV[1])
if lease.freed then return 0 end
release(lease, 0, 0, now, false)
return 1
