-- settle: replace a request's reservation with its real cost and tokens, free its slots.
-- KEYS: none (the lease names its counters). ARGV[1]: request id, ARGV[2]: real cost in
-- nano-USD, ARGV[3]: real tokens (input + output), ARGV[4]: clock override ms (0 = TIME).
-- Returns 1 when settled, 2 when the lease had expired (its reservation was already
-- freed; the real cost is still charged, to the current window), 0 when unknown; an
-- error, with nothing written, when the cost or tokens are not integers in [0, 1e15].

local cost, tokens = amount(ARGV[2]), amount(ARGV[3])
if not cost then return bad_input('cost') end
if not tokens then return bad_input('tokens') end
local now = now_ms(ARGV[4])
local raw = redis.call('GET', 'llmquota:lease:' .. ARGV[1])
if not raw then return 0 end
local lease = cjson.decode(raw)
release(lease, cost, tokens, now, lease.freed)
redis.call('DEL', 'llmquota:lease:' .. ARGV[1])
redis.call('ZREM', LEASES, ARGV[1])
if lease.freed then return 2 end
return 1
