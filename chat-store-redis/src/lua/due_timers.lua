-- ARGV: prefix, now, lease_until, limit (> 0). → due members, now leased until lease_until

local due = redis.call('ZRANGE', K_TIMERS, '-inf', ARGV[2], 'BYSCORE', 'LIMIT', 0, ARGV[4])
for _, m in ipairs(due) do redis.call('ZADD', K_TIMERS, 'XX', ARGV[3], m) end
return due
