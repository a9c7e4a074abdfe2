-- ARGV: prefix, by, whom, max_blocked, now.
-- → {'no_session'} | {'too_many'} | {'ok', dropped 0/1, cancelled 0/1, room or false}
-- (room: {id, a, b, created, expires}). `bb:<whom>` (the reverse index) never expires: the
-- blocker's `purge_user` removes its entries, and `hidden` drops those whose block is gone.

local by, whom, max, now = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
if redis.call('EXISTS', k_sess(by)) == 0 then return {'no_session'} end
local bl = k_blocks(by)
if redis.call('SISMEMBER', bl, whom) == 0 then
  if redis.call('SCARD', bl) >= max then return {'too_many'} end
  redis.call('SADD', bl, whom)
  session_expiry(by, bl)
  redis.call('SADD', k_blockers(whom), by)
end
local function live(x) return x and tonumber(x) > tonumber(now) end
local dropped = live(drop_request(whom, by)) and 1 or 0
local cancelled = live(drop_request(by, whom)) and 1 or 0
local room = false
local id = pair_room(by, whom)
if id then room = delete_room(id) or false end
return {'ok', dropped, cancelled, room}
