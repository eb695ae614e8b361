-- sweep: free the reservations and slots of expired leases (their holder died).
-- Admission sweeps too; this lets the operator do it when no traffic comes.
-- KEYS: none. ARGV[1]: clock override ms (0 = TIME), ARGV[2]: most leases to free.
-- Returns how many expired leases were freed.

local limit = amount(ARGV[2])
if not limit then return bad_input('limit') end
return sweep(now_ms(ARGV[1]), limit)
