-- Queues an offline notification, if its recipient has no open socket and the queue has room.
-- ARGV: prefix, kind ('m' message: the target is the room, the recipient its other member;
-- 'r' request: the target is the recipient), from, target, now, max_queue, tail (the entry
-- after `<seq>|<to>|`, encoded by the caller).
-- → 'queued' | 'online' | 'dropped' | 'none'

local kind, from, target, now, max = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local to = target
if kind == 'm' then
  local v = room_get(target)
  if not v then return 'none' end
  if from == v[1] then to = v[2] elseif from == v[2] then to = v[1] else return 'none' end
end
if redis.call('SCARD', k_uconns(to)) > 0 then return 'online' end
if tonumber(redis.call('GET', K_NLEN) or '0') >= max then return 'dropped' end
local seq = redis.call('INCR', K_NSEQ)
redis.call('RPUSH', k_nqueue(to), seq .. '|' .. to .. '|' .. ARGV[7])
redis.call('INCR', K_NLEN)
-- A recipient with entries already keeps its head's due time (or lease).
redis.call('ZADD', K_NDUE, 'NX', now, to)
return 'queued'
