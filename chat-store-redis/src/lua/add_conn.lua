-- ARGV: prefix, phone, "<conn id>|<node>", node, "<phone>|<conn id>". → came online (0/1)

local phone, cm, node, nm = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local s = k_sess(phone)
if redis.call('EXISTS', s) == 0 then return 0 end
redis.call('SADD', k_uconns(phone), cm)
redis.call('SADD', k_nconns(node), nm)
local came = redis.call('HDEL', s, 'off')
redis.call('ZADD', K_ONLINE, 0, phone)
user_expiry(phone, nil)
return came
