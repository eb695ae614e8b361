-- settle: replace a request's reservation with its real cost and tokens, free its slots.
-- KEYS: those admit.lua was given for the request: KEYS[1] the leases zset of its hash
-- tag, KEYS[2] its lease record, KEYS[3..] its counters, in the same order.
-- ARGV[1]: real cost in nano-USD, ARGV[2]: real tokens (input + output), ARGV[3]: clock
-- override ms (0 = TIME).
-- Returns 1 when settled, 2 when the lease had expired (its reservation was already
-- freed; the real cost is still charged, to the current window), 0 when unknown; an
-- error, with nothing written, when the cost or tokens are not integers in [0, 1e15] or
-- the counters are not the lease's.

local cost, tokens = amount(ARGV[1]), amount(ARGV[2])
if not cost then return bad_input('cost') end
if not tokens then return bad_input('tokens') end
local now = now_ms(ARGV[3])
local raw = redis.call('GET', KEYS[2])
if not raw then return 0 end
local lease = cjson.decode(raw)
local counters = given_counters(lease)
if not counters then return wrong_keys() end
release(lease, counters, cost, tokens, now, lease.freed, false)
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], KEYS[2])
if lease.freed then return 2 end
return 1
