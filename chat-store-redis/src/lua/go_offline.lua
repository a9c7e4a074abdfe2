-- ARGV: prefix, phone, now, session_end_at. → 0/1

local phone, now, end_at = ARGV[2], ARGV[3], ARGV[4]
local s = k_sess(phone)
local v = redis.call('HMGET', s, 'h', 'off')
if not v[1] or v[2] then return 0 end
if redis.call('SCARD', k_uconns(phone)) > 0 then return 0 end
if tonumber(now) < tonumber(v[1]) then return 0 end
redis.call('HSET', s, 'off', now)
redis.call('ZREM', K_ONLINE, phone)
redis.call('ZADD', K_TIMERS, end_at, 's|' .. phone)
user_expiry(phone, expire_at(end_at, MARGIN))
return 1
