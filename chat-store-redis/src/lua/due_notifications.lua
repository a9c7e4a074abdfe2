-- Leases the heads of the queues of up to `limit` recipients due at `now`.
-- ARGV: prefix, now, lease_until, limit (> 0). → {entry, attempts, entry, attempts, ...}

local due = redis.call('ZRANGE', K_NDUE, '-inf', ARGV[2], 'BYSCORE', 'LIMIT', 0, ARGV[4])
local out = {}
for _, to in ipairs(due) do
  local head = redis.call('LINDEX', k_nqueue(to), 0)
  if head then
    redis.call('ZADD', K_NDUE, 'XX', ARGV[3], to)
    out[#out + 1] = head
    out[#out + 1] = redis.call('HGET', K_NATT, to) or '0'
  else
    redis.call('ZREM', K_NDUE, to)
    redis.call('HDEL', K_NATT, to)
  end
end
return out
