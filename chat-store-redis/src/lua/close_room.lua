-- On a cluster, the room's part of deleting it, after the directory's step removed its record
-- and indexes: its meta, history and dedupe hashes, and a tombstone that keeps an `open_room`
-- still on its way from opening it again. The tombstone lives a minute: an open is sent right
-- after its directory step, within the store's call timeout.
--
-- KEYS: room meta, history, dedupe (newer, older), tombstone (one hash tag).
-- → 1

redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('SET', KEYS[5], '1', 'PX', 60000)
return 1
