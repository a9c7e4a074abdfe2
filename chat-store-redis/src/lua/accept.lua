-- ARGV: prefix, from, to, now, room id, room created_at, room expires_at, then (channel,
-- payload) of the `request_accepted` to `from` and to `to`, published with the room.
-- → nil | {id, a, b, created, expires}

local from, to, now = ARGV[2], ARGV[3], ARGV[4]
if not request_live(from, to, now) then return nil end
if pair_room(from, to) then return nil end
if blocked_either(from, to) then return nil end
local r = make_room(from, to, ARGV[5], ARGV[6], ARGV[7])
redis.call('PUBLISH', ARGV[8], ARGV[9])
redis.call('PUBLISH', ARGV[10], ARGV[11])
return r
