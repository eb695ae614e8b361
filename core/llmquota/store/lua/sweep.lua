-- sweep: free the reservations and slots of one hash tag's expired leases (their holder
-- died). Admission sweeps its own tag too; this lets the operator do it when no traffic
-- comes. KEYS[1]: the tag's leases zset. ARGV[1]: clock override ms (0 = TIME),
-- ARGV[2]: most leases to free.
-- Returns how many expired leases were freed.

local limit = amount(ARGV[2])
if not limit then return bad_input('limit') end
return sweep(KEYS[1], now_ms(ARGV[1]), limit)
