-- One room of a user's `/active_chatrooms`: the user's unread count and the newest message, in
-- the room's slot (the caller lists the user's rooms from the directory first, then asks each
-- room at once).
--
-- - unread: the other member's entries after the user's read mark (`ra`/`rb` of the room's
--   meta; the whole history without one), read forward in chunks with `XRANGE (mark + COUNT`
--   until `max` are counted or the history ends. So it is exact up to `max`, and reads at most
--   `max` of the other member's entries plus the user's own between them (bounded by the
--   history kept). A room read up to its newest message costs one empty `XRANGE`.
-- - Entries are told apart by their sender: the text of the compact field `v` up to the first
--   `|` (see `src/entry.rs`), or the field `s` of entries of older versions.
--
-- KEYS: room meta, history stream (one hash tag).
-- ARGV: phone, max (the most unread messages counted).
-- → 0 (no room: closed meanwhile) | {unread, last}, `last` = {id, {field, value...}} or false

local phone, max = ARGV[1], tonumber(ARGV[2])
local CHUNK = 256
local function sender_of(f)
  if f[1] == 'v' then
    local sep = string.find(f[2], '|', 1, true)
    if sep then return string.sub(f[2], 1, sep - 1) end
    return nil
  end
  for i = 1, #f, 2 do
    if f[i] == 's' then return f[i + 1] end
  end
  return nil
end
local v = redis.call('HMGET', KEYS[1], 'a', 'b', 'ra', 'rb')
if not v[1] then return 0 end
local mark = false
if phone == v[1] then mark = v[3] elseif phone == v[2] then mark = v[4] end
local start = '-'
if mark then start = '(' .. mark end
local unread = 0
while unread < max do
  local batch = redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', CHUNK)
  for _, e in ipairs(batch) do
    if sender_of(e[2]) ~= phone then
      unread = unread + 1
      if unread >= max then break end
    end
  end
  if #batch < CHUNK then break end
  start = '(' .. batch[#batch][1]
end
return {unread, redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1] or false}
