-- A user's live rooms, each with the user's unread count and the newest message: what
-- `/active_chatrooms` shows, in one round trip whatever the number of rooms.
--
-- - unread: the other member's entries after the user's read mark (`ra`/`rb` of the room's
--   meta; the whole history without one), read forward in chunks with `XRANGE (mark + COUNT`
--   until `max` are counted or the history ends. So it is exact up to `max`, and reads at most
--   `max` of the other member's entries plus the user's own between them (bounded by the
--   history kept). A room read up to its newest message costs one empty `XRANGE`.
-- - Entries are told apart by their sender: the text of the compact field `v` up to the first
--   `|` (see `src/entry.rs`), or the field `s` of entries of older versions.
-- - Index entries of rooms Redis already freed are dropped, as `rooms_of` does.
--
-- ARGV: prefix, phone, max (the most unread messages counted).
-- → {{id, a, b, created, expires, unread, last}...}, `last` = {id, {field, value...}} or nil

local phone, max = ARGV[2], tonumber(ARGV[3])
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
local index = k_urooms(phone)
local out = {}
for _, r in ipairs(redis.call('SMEMBERS', index)) do
  local v = redis.call('HMGET', k_room(r), 'a', 'b', 'c', 'x', 'ra', 'rb')
  if v[1] then
    local mark = false
    if phone == v[1] then mark = v[5] elseif phone == v[2] then mark = v[6] end
    local h = k_hist(r)
    local start = '-'
    if mark then start = '(' .. mark end
    local unread = 0
    while unread < max do
      local batch = redis.call('XRANGE', h, start, '+', 'COUNT', CHUNK)
      for _, e in ipairs(batch) do
        if sender_of(e[2]) ~= phone then
          unread = unread + 1
          if unread >= max then break end
        end
      end
      if #batch < CHUNK then break end
      start = '(' .. batch[#batch][1]
    end
    local last = redis.call('XREVRANGE', h, '+', '-', 'COUNT', 1)[1] or false
    out[#out + 1] = {r, v[1], v[2], v[3], v[4], unread, last}
  else
    redis.call('SREM', index, r)
  end
end
return out
