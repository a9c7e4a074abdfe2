-- ARGV: prefix, from, to, created_at, expires_at, room id, room created_at, room expires_at,
-- then optionally the cap on `from`'s pending requests. The caller publishes the `chat_request`
-- (on 'sent') or the `request_accepted` events (on 'accepted', once the room is open).
-- → {'no_user'} | {'exists', id} | {'accepted', id, a, b, created, expires} | {'pending'}
-- | {'cooldown', until} | {'too_many'} | {'sent'}

local from, to, created, expires = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local rid, rc, rx = ARGV[6], ARGV[7], ARGV[8]
-- A session that ended (or went offline) must not be left a request, nor leave one for the
-- next session of that phone: online means a socket, or `created` inside the HTTP window.
local h = redis.call('HGET', k_sess(to), 'h')
if not h then return {'no_user'} end
if tonumber(created) >= tonumber(h) and redis.call('SCARD', k_uconns(to)) == 0 then
  return {'no_user'}
end
-- A block answers as if `to` were offline.
if blocked_either(from, to) then return {'no_user'} end
local id = pair_room(from, to)
if id then return {'exists', id} end
if request_live(to, from, created) then
  local r = make_room(to, from, rid, rc, rx)
  return {'accepted', r[1], r[2], r[3], r[4], r[5]}
end
if request_live(from, to, created) then return {'pending'} end
local cool = redis.call('HGET', k_cool(from), to)
if cool and tonumber(cool) > tonumber(created) then return {'cooldown', cool} end
local cap = tonumber(ARGV[9])
if cap then
  local n = 0
  for _, t in ipairs(redis.call('SMEMBERS', k_out(from))) do
    if request_live(from, t, created) then n = n + 1 end
  end
  if n >= cap then return {'too_many'} end
end
local k = k_req(from, to)
-- Replaces both fields of an expired request, if one is left.
redis.call('HSET', k, 'c', created, 'x', expires)
local at = expire_at(expires, MARGIN)
redis.call('PEXPIREAT', k, at)
redis.call('SADD', k_in(to), from)
expire_index(k_in(to), at)
redis.call('SADD', k_out(from), to)
expire_index(k_out(from), at)
redis.call('ZADD', K_TIMERS, expires, 'q|' .. from .. '|' .. to)
return {'sent'}
