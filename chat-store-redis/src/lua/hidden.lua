-- ARGV: prefix, phone. → {{blocked by phone}, {blockers of phone}}
-- Entries of `bb:<phone>` whose block is gone (its session freed by expiry) are dropped.

local phone = ARGV[2]
local blockers = {}
for _, by in ipairs(redis.call('SMEMBERS', k_blockers(phone))) do
  if redis.call('SISMEMBER', k_blocks(by), phone) == 1 then
    blockers[#blockers + 1] = by
  else
    redis.call('SREM', k_blockers(phone), by)
  end
end
return {redis.call('SMEMBERS', k_blocks(phone)), blockers}
