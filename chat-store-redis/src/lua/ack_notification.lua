-- Removes the head of `to`'s queue if it is entry `seq`; the next one comes due at `now`.
-- ARGV: prefix, to, seq, now. → 0/1 (removed)

local to = ARGV[2]
if not notification_head_is(to, ARGV[3]) then return 0 end
local q = k_nqueue(to)
redis.call('LPOP', q)
redis.call('DECR', K_NLEN)
redis.call('HDEL', K_NATT, to)
if redis.call('LLEN', q) > 0 then
  redis.call('ZADD', K_NDUE, ARGV[4], to)
else
  redis.call('ZREM', K_NDUE, to)
end
return 1
