-- ARGV: prefix, phone. → nil | {conns, http_until, offline_since ('' = online)}

local phone = ARGV[2]
local v = redis.call('HMGET', k_sess(phone), 'h', 'off')
if not v[1] then return nil end
return {redis.call('SCARD', k_uconns(phone)), v[1], v[2] or ''}
