-- Moves a member's read mark forward, in one step: the room, membership, the id held by the
-- history, then the comparison with the current mark.
--
-- - The mark is a field of the room's meta hash, `ra` for member `a` and `rb` for member `b`:
--   no key of its own, so it expires and is deleted with the room.
-- - "A message of this room" is exact: the history stream holds the id (`XRANGE id id`,
--   O(log n)). An id older than the kept history is no longer one.
-- - Ids are compared as (ms, seq) of decimal digits without leading zeros (as Redis writes
--   them and the caller formats them), by length then bytes: no float rounding.
--
-- KEYS: room meta, history stream (one hash tag).
-- ARGV: phone, id (`<ms>-<seq>`).
-- → 0 (no room) | 1 (not a member) | 2 (not an id the history holds) | 3 (at or before the
--   mark: unchanged) | 4 (moved)

local phone, id = ARGV[1], ARGV[2]
local meta = redis.call('HMGET', KEYS[1], 'a', 'b', 'ra', 'rb')
if not meta[1] then return 0 end
local field, mark
if phone == meta[1] then
  field, mark = 'ra', meta[3]
elseif phone == meta[2] then
  field, mark = 'rb', meta[4]
else
  return 1
end
if not redis.call('XRANGE', KEYS[2], id, id)[1] then return 2 end
if mark then
  local function num_less(x, y)
    if #x ~= #y then return #x < #y end
    return bytes_less(x, y)
  end
  local function parts(s)
    local d = string.find(s, '-', 1, true)
    return string.sub(s, 1, d - 1), string.sub(s, d + 1)
  end
  local ims, iseq = parts(id)
  local mms, mseq = parts(mark)
  if ims == mms then
    if iseq == mseq or num_less(iseq, mseq) then return 3 end
  elseif num_less(ims, mms) then
    return 3
  end
end
redis.call('HSET', KEYS[1], field, id)
return 4
