-- ARGV: prefix, from, to, now, room id, room created_at, room expires_at. The caller publishes
-- the `request_accepted` events once the room is open.
-- → nil | {id, a, b, created, expires}

local from, to, now = ARGV[2], ARGV[3], ARGV[4]
if not request_live(from, to, now) then return nil end
if pair_room(from, to) then return nil end
if blocked_either(from, to) then return nil end
return make_room(from, to, ARGV[5], ARGV[6], ARGV[7])
