-- A failed attempt at the head of `to`'s queue, if it is entry `seq`: counted, due again at `at`.
-- ARGV: prefix, to, seq, at. → 0/1 (still the head)

local to = ARGV[2]
if not notification_head_is(to, ARGV[3]) then return 0 end
redis.call('HINCRBY', K_NATT, to, 1)
redis.call('ZADD', K_NDUE, ARGV[4], to)
return 1
