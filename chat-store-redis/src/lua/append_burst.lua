-- A burst of one sender's messages to one room in one call (a socket's frames that arrived
-- together): each stored and published exactly as `append` would, in order, with one function
-- call for all of them; the membership is read once, by the first message, when the node does
-- not know the sender yet.
--
-- KEYS: room meta, history stream, dedupe hashes (newer, older) — one hash tag.
-- ARGV: sender, history_max (>= 1), channel, known ('1' | '0'), then for each message its entry
-- and its client id ('' for none).
-- → {reply, ...}: for each message, `append`'s reply.

local sender, max, channel, known = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1'
local out = {}
for i = 5, #ARGV - 1, 2 do
  local cid = ARGV[i + 1]
  if cid == '' then cid = nil end
  local reply = append_one(KEYS, sender, ARGV[i], max, channel, known, cid)
  out[#out + 1] = reply
  -- Stored (or found stored): the room is live and the sender one of its members.
  if type(reply) ~= 'number' then known = true end
end
return out
