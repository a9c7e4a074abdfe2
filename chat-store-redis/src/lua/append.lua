-- The room hot path, one round trip: membership, dedupe, XADD, PUBLISH. Three commands
-- (`HMGET`, `XADD`, `PUBLISH`) for a message without a client id, once the room has history;
-- two (`XADD`, `PUBLISH`) when the node already knows the sender is a member.
--
-- - Membership: a room's two members never change, so a node that saw this function accept a
--   sender in a room says so (`known` = '1') and the `HMGET` is skipped. The room may have been
--   deleted since: its history stream went with it (in the same step, or in the room's step on a
--   cluster), and expires with it, so `XADD NOMKSTREAM` finds no stream and the function checks
--   the room as for an unknown sender before making one. The stream exists only while the room
--   does, so a known sender never writes to a deleted room.
--
-- - The history is trimmed with `MAXLEN ~`: Redis drops whole stream nodes only, so a room
--   keeps between `history_max` and `history_max` + one node (`stream-node-max-entries`, 100
--   by default) messages, at a fraction of the cost of exact trimming.
-- - Keys under the room's tag expire with the room (`:m`'s expiry, fixed when the room is
--   made). `XADD NOMKSTREAM` fails only on the room's first message: that one creates the
--   stream and copies the expiry; XADD keeps it after. The dedupe hashes likewise get it when
--   created.
-- - Dedupe: `:d` maps `<sender>|<client_id>` to the message id; when it holds `history_max`
--   fields it is renamed to `:o` (dropping the previous `:o`) and a new `:d` begins. So the
--   newest `history_max` client ids are always in `:d` or `:o`, at most twice that is kept,
--   and a message costs `HGET`s, `HLEN` and `HSET` rather than a queue walk.
--
-- The entry (see `src/entry.rs`) is stored as the one field `v` and published behind the
-- id: the function neither builds nor parses text beyond prefixing the id.
--
-- KEYS: room meta, history stream, and with a client id the dedupe hashes (newer, older) —
-- one hash tag.
-- ARGV: sender, entry, history_max (>= 1), channel, known ('1' | '0'), and the client id when
-- there is one.
-- → 0 (no room) | 1 (not a member) | id (new) | {id, {field, value...}} (the earlier message)

local sender, entry, max, known = ARGV[1], ARGV[2], ARGV[3], ARGV[5] == '1'

-- nil when the room exists and `sender` is one of its members, else the refusal.
local function refused()
  local meta = redis.call('HMGET', KEYS[1], 'a', 'b')
  if not meta[1] then return 0 end
  if sender ~= meta[1] and sender ~= meta[2] then return 1 end
end

if not known then
  local no = refused()
  if no then return no end
end
local cid = ARGV[6]
local field
if cid then
  field = sender .. '|' .. cid
  local prev = redis.call('HGET', KEYS[3], field) or redis.call('HGET', KEYS[4], field)
  if prev then
    local e = redis.call('XRANGE', KEYS[2], prev, prev)
    if e[1] then return e[1] end
  end
end
local at
local id = redis.call('XADD', KEYS[2], 'NOMKSTREAM', 'MAXLEN', '~', max, '*', 'v', entry)
if not id then
  -- The room's first message, or a known sender's room deleted since: check it, then create
  -- the stream, expiring with the room.
  if known then
    local no = refused()
    if no then return no end
  end
  id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', max, '*', 'v', entry)
  at = redis.call('PEXPIRETIME', KEYS[1])
  if at > 0 then redis.call('PEXPIREAT', KEYS[2], at) end
end
if field then
  local n = redis.call('HLEN', KEYS[3])
  if n >= tonumber(max) then
    redis.call('RENAME', KEYS[3], KEYS[4])
    n = 0
  end
  redis.call('HSET', KEYS[3], field, id)
  if n == 0 then
    at = at or redis.call('PEXPIRETIME', KEYS[1])
    if at > 0 then redis.call('PEXPIREAT', KEYS[3], at) end
  end
end
redis.call('PUBLISH', ARGV[4], id .. '|' .. entry)
return id
