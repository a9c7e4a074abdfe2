-- On a cluster, the room's part of making it: its meta hash in its own slot, after the
-- directory's step (`accept`, or `send_request` crossing a request) recorded it. Refused when the
-- room was closed in between (a block, the other member ending their session): `close_room`
-- leaves a tombstone for that.
--
-- KEYS: room meta, tombstone (one hash tag).
-- ARGV: a, b, created_at, expires_at.
-- → 1 (open) | 0 (closed before it opened)

if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'a', ARGV[1], 'b', ARGV[2], 'c', ARGV[3], 'x', ARGV[4])
redis.call('PEXPIREAT', KEYS[1], expire_at(ARGV[4], MARGIN))
return 1
