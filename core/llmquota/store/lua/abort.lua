-- abort: free a request's reservation and slots without charging it (upstream failed,
-- client left before anything was served).
-- KEYS: those admit.lua was given for the request (leases zset, lease record, counters).
-- ARGV[1]: clock override ms (0 = TIME), ARGV[2]: 1 when another slot refused the
-- request (a Cluster admits per slot), so that it does not count as a request here
-- either, else 0.
-- Returns 1 when freed, 0 when unknown or already freed by a sweep; an error, with
-- nothing written, when the counters are not the lease's.

local now = now_ms(ARGV[1])
local raw = redis.call('GET', KEYS[2])
if not raw then return 0 end
local lease = cjson.decode(raw)
local counters = given_counters(lease)
if not counters then return wrong_keys() end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], KEYS[2])
if lease.freed then return 0 end
release(lease, counters, 0, 0, now, false, ARGV[2] == '1')
return 1
