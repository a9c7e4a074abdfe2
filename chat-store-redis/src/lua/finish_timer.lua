-- ARGV: prefix, member, lease_until. → 0/1 (removed)

local s = redis.call('ZSCORE', K_TIMERS, ARGV[2])
if s and tonumber(s) == tonumber(ARGV[3]) then
  return redis.call('ZREM', K_TIMERS, ARGV[2])
end
return 0
