-- ARGV: prefix, from, to, now, cooldown_until. → 0/1 (was pending at now)
-- A pending request's decline refuses `from`'s next request to `to` until `cooldown_until`.

local from, to, now = ARGV[2], ARGV[3], ARGV[4]
local x = drop_request(from, to)
if not (x and tonumber(x) > tonumber(now)) then return 0 end
if redis.call('EXISTS', k_sess(from)) == 1 then
  local cd = k_cool(from)
  -- Ended cooldowns go as new ones come: the hash holds the declines of one cooldown's length.
  local all = redis.call('HGETALL', cd)
  for i = 1, #all, 2 do
    if tonumber(all[i + 1]) <= tonumber(now) then redis.call('HDEL', cd, all[i]) end
  end
  redis.call('HSET', cd, to, ARGV[5])
  session_expiry(from, cd)
end
return 1
