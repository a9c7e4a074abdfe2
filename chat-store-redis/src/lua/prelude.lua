-- Shared helpers, defined once when the library loads. `enter` sets the key prefix.
-- The library is this prelude, then each other file of this directory as the body of one
-- function (`src/scripts.rs` assembles it): they all see these locals.

-- The current call's key prefixes and the global keys under them, set by `enter`. `P`: the
-- directory's (users, requests, nodes, timers, notifications, and on a cluster the rooms'
-- directory records); `RP`: the rooms' (`RP{<room>}:<part>`). On one Redis both are the key
-- prefix; on a cluster `P` is the prefix inside a hash tag, `{<prefix>}`, so every directory
-- key is in one slot, while each room's keys are in their room's slot (see the crate docs).
local P, RP, CLUSTER, K_ONLINE, K_NODES, K_TIMERS, K_NDUE, K_NATT, K_NLEN, K_NSEQ
local function enter(prefix)
  P = prefix
  CLUSTER = string.byte(prefix, 1) == 123 -- '{'
  if CLUSTER then RP = string.sub(prefix, 2, -2) else RP = prefix end
  K_ONLINE = P .. 'online'
  K_NODES = P .. 'nodes'
  K_TIMERS = P .. 'timers'
  K_NDUE = P .. 'nd'
  K_NATT = P .. 'na'
  K_NLEN = P .. 'nn'
  K_NSEQ = P .. 'ns'
end
-- Keys outlive the deadline they serve by this much (ms): the timer that acts on the deadline
-- still finds them, yet nothing stays forever if no node runs.
local MARGIN = 3600000
-- A session online through HTTP only, whose go-offline timer never ran (no node alive): freed
-- this long after its presence window (ms).
local USER_GRACE = 604800000
local MAX_AT = 4000000000000000

local function k_sess(p) return P .. 's:' .. p end
local function k_tok(t) return P .. 't:' .. t end
local function k_uconns(p) return P .. 'uc:' .. p end
local function k_urooms(p) return P .. 'ur:' .. p end
local function k_in(p) return P .. 'in:' .. p end
local function k_out(p) return P .. 'out:' .. p end
local function k_req(f, t) return P .. 'rq:' .. f .. ':' .. t end
local function k_nconns(n) return P .. 'nc:' .. n end
local function k_nqueue(p) return P .. 'nq:' .. p end

-- Whether the head of `to`'s notification queue is entry `seq` (entries are `<seq>|...`).
local function notification_head_is(to, seq)
  local head = redis.call('LINDEX', k_nqueue(to), 0)
  if not head then return false end
  local sep = string.find(head, '|', 1, true)
  return sep ~= nil and string.sub(head, 1, sep - 1) == seq
end

local function k_blocks(p) return P .. 'bl:' .. p end
local function k_blockers(p) return P .. 'bb:' .. p end
local function k_cool(p) return P .. 'cd:' .. p end

-- Whether one of the two blocks the other.
local function blocked_either(a, b)
  return redis.call('SISMEMBER', k_blocks(a), b) == 1
    or redis.call('SISMEMBER', k_blocks(b), a) == 1
end
-- Byte order, not Lua's `<` (which follows the server's collation locale).
local function bytes_less(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local function k_pair(a, b)
  if bytes_less(a, b) then return P .. 'pr:' .. a .. ':' .. b end
  return P .. 'pr:' .. b .. ':' .. a
end
local function k_room(r) return RP .. '{' .. r .. '}:m' end
local function k_hist(r) return RP .. '{' .. r .. '}:h' end
local function k_dedupe(r) return RP .. '{' .. r .. '}:d' end
local function k_dedupe_old(r) return RP .. '{' .. r .. '}:o' end
-- The room as the directory knows it: on one Redis its meta hash itself; on a cluster its
-- directory record (`a`, `b`, `c`, `x`), while its meta, history and dedupe live in the room's
-- slot, opened and closed by the caller in a step of their own (`open_room`, `close_room`).
local function k_rdir(r)
  if CLUSTER then return P .. 'rm:' .. r end
  return k_room(r)
end

local function later(a, b)
  if tonumber(a) >= tonumber(b) then return a end
  return b
end

local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Absolute expiry (text, ms) `extra` after the later of `deadline` and the server's now.
local function expire_at(deadline, extra)
  local d = tonumber(deadline) or 0
  local now = server_ms()
  if d < now then d = now end
  d = d + extra
  if d > MAX_AT then d = MAX_AT end
  return string.format('%.0f', d)
end

-- An index set lives as long as its longest-lived entry: never shorten its expiry. A set just
-- created by SADD has none yet (NX sets it); else only a later one is taken (GT).
local function expire_index(key, at)
  if redis.call('PEXPIREAT', key, at, 'NX') == 0 then
    redis.call('PEXPIREAT', key, at, 'GT')
  end
end

-- The session's own keys (session hash, token, socket set) never expire while the user has a
-- socket (`at` nil); otherwise they expire at `at`. `tok`: the session's token, if the caller
-- has read it already.
local function user_expiry(phone, at, tok)
  local s = k_sess(phone)
  local keys = {s, k_uconns(phone), k_blocks(phone), k_cool(phone)}
  tok = tok or redis.call('HGET', s, 'token')
  if tok then keys[#keys + 1] = k_tok(tok) end
  for _, k in ipairs(keys) do
    if at then redis.call('PEXPIREAT', k, at) else redis.call('PERSIST', k) end
  end
end

-- Extends the HTTP presence window (never shortens it) and marks the user online. `h`, `tok`
-- and `off`: the session's `h` field, token and `off` field, as the caller read them.
-- Returns whether they were offline.
local function touch(phone, http_until, h, tok, off)
  local s = k_sess(phone)
  if (not h) or tonumber(http_until) > tonumber(h) then
    h = http_until
    redis.call('HSET', s, 'h', h)
  end
  if off then redis.call('HDEL', s, 'off') end
  redis.call('ZADD', K_ONLINE, 0, phone)
  redis.call('ZADD', K_TIMERS, h, 'p|' .. phone)
  if redis.call('SCARD', k_uconns(phone)) == 0 then
    user_expiry(phone, expire_at(h, USER_GRACE), tok)
  end
  return off and true or false
end

-- Forgets one socket (`cm` = "<id>|<node>"). When it was the user's last: cuts the HTTP presence
-- window to end at `grace_until` at the latest, schedules the presence timer at
-- max(http_until, now) and returns true.
local function forget_conn(phone, cm, now, grace_until)
  local uc = k_uconns(phone)
  if redis.call('SREM', uc, cm) == 0 then return false end
  if redis.call('SCARD', uc) > 0 then return false end
  local s = k_sess(phone)
  local h = redis.call('HGET', s, 'h')
  if not h then return false end
  if tonumber(h) > tonumber(grace_until) then
    h = grace_until
    redis.call('HSET', s, 'h', h)
  end
  local at = later(h, now)
  redis.call('ZADD', K_TIMERS, at, 'p|' .. phone)
  user_expiry(phone, expire_at(at, USER_GRACE))
  return true
end

-- Forgets a node and its sockets; appends users left with none to `orphans`.
local function forget_node(node, now, grace_until, orphans)
  redis.call('ZREM', K_NODES, node)
  local nk = k_nconns(node)
  local conns = redis.call('SMEMBERS', nk)
  redis.call('DEL', nk)
  for _, m in ipairs(conns) do
    local sep = string.find(m, '|', 1, true)
    if sep then
      local phone = string.sub(m, 1, sep - 1)
      local id = string.sub(m, sep + 1)
      if forget_conn(phone, id .. '|' .. node, now, grace_until) then
        orphans[#orphans + 1] = phone
      end
    end
  end
end

local function request_live(f, t, now)
  local x = redis.call('HGET', k_req(f, t), 'x')
  return x ~= false and tonumber(x) > tonumber(now)
end

-- Removes the request f -> t with its index entries and timer; its expires_at if it existed.
-- Without the request there is nothing to remove: index entries and timers of one Redis
-- expired are dropped by whoever reads them.
local function drop_request(f, t)
  local k = k_req(f, t)
  local x = redis.call('HGET', k, 'x')
  if not x then return nil end
  redis.call('DEL', k)
  redis.call('SREM', k_in(t), f)
  redis.call('SREM', k_out(f), t)
  redis.call('ZREM', K_TIMERS, 'q|' .. f .. '|' .. t)
  return x
end

local function room_get(r)
  local v = redis.call('HMGET', k_rdir(r), 'a', 'b', 'c', 'x')
  if not v[1] then return nil end
  return v
end

-- The live room the two share, if any.
local function pair_room(a, b)
  local id = redis.call('GET', k_pair(a, b))
  if id and redis.call('EXISTS', k_rdir(id)) == 1 then return id end
  return nil
end

-- Deletes a room with its history, dedupe entries, indexes and timers; its fields if it existed.
-- On a cluster it deletes the directory's record and indexes only: the caller then closes the
-- room in its own slot (`close_room`).
local function delete_room(r)
  local v = room_get(r)
  if not v then return nil end
  if CLUSTER then
    redis.call('DEL', k_rdir(r))
  else
    redis.call('DEL', k_room(r), k_hist(r), k_dedupe(r), k_dedupe_old(r))
  end
  if redis.call('GET', k_pair(v[1], v[2])) == r then redis.call('DEL', k_pair(v[1], v[2])) end
  redis.call('SREM', k_urooms(v[1]), r)
  redis.call('SREM', k_urooms(v[2]), r)
  redis.call('ZREM', K_TIMERS, 'e|' .. r, 'i|' .. r)
  return {r, v[1], v[2], v[3], v[4]}
end

-- Accepts f -> t: drops both requests and creates the room with members [f, t] (on a cluster its
-- directory record: the caller then opens it in its own slot with `open_room`).
local function make_room(f, t, id, created, expires)
  drop_request(f, t)
  drop_request(t, f)
  local m = k_rdir(id)
  redis.call('HSET', m, 'a', f, 'b', t, 'c', created, 'x', expires)
  local at = expire_at(expires, MARGIN)
  redis.call('PEXPIREAT', m, at)
  redis.call('SET', k_pair(f, t), id, 'PXAT', at)
  for _, u in ipairs({f, t}) do
    local k = k_urooms(u)
    redis.call('SADD', k, id)
    expire_index(k, at)
  end
  redis.call('ZADD', K_TIMERS, expires, 'e|' .. id)
  return {id, f, t, created, expires}
end

-- Deletes everything of a user's session: session, token, sockets, blocks, decline cooldowns,
-- listing entry, own timers, pending requests both ways, and rooms with their history.
local function purge_user(phone)
  local s = k_sess(phone)
  local tok = redis.call('HGET', s, 'token')
  if tok then redis.call('DEL', k_tok(tok)) end
  redis.call('DEL', s, k_uconns(phone))
  for _, whom in ipairs(redis.call('SMEMBERS', k_blocks(phone))) do
    redis.call('SREM', k_blockers(whom), phone)
  end
  redis.call('DEL', k_blocks(phone), k_cool(phone))
  redis.call('ZREM', K_ONLINE, phone)
  redis.call('ZREM', K_TIMERS, 'p|' .. phone, 's|' .. phone)
  local incoming = {}
  for _, f in ipairs(redis.call('SMEMBERS', k_in(phone))) do
    if drop_request(f, phone) then incoming[#incoming + 1] = f end
  end
  local sent = {}
  for _, t in ipairs(redis.call('SMEMBERS', k_out(phone))) do
    if drop_request(phone, t) then sent[#sent + 1] = t end
  end
  redis.call('DEL', k_in(phone), k_out(phone))
  local rooms = {}
  for _, r in ipairs(redis.call('SMEMBERS', k_urooms(phone))) do
    local v = delete_room(r)
    if v then rooms[#rooms + 1] = v end
  end
  redis.call('DEL', k_urooms(phone))
  return incoming, sent, rooms
end

-- Gives `key`, a key of `phone`'s session made just now, the session hash's expiry (none while
-- the session has none), so it lives as long as the session.
local function session_expiry(phone, key)
  local at = redis.call('PEXPIRETIME', k_sess(phone))
  if at > 0 then redis.call('PEXPIREAT', key, at) end
end

-- nil when the room of `meta` (its meta hash) exists and `sender` is one of its members, else
-- `append`'s refusal: 0 (no room) or 1 (not a member).
local function room_refuses(meta, sender)
  local m = redis.call('HMGET', meta, 'a', 'b')
  if not m[1] then return 0 end
  if sender ~= m[1] and sender ~= m[2] then return 1 end
end

-- One message of `append` or `append_burst` (their headers say how it is stored): KEYS as
-- theirs; `cid` nil for none; `known` when the caller knows `sender` is a member.
local function append_one(KEYS, sender, entry, max, channel, known, cid)
  if not known then
    local no = room_refuses(KEYS[1], sender)
    if no then return no end
  end
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
      local no = room_refuses(KEYS[1], sender)
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
  redis.call('PUBLISH', channel, id .. '|' .. entry)
  return id
end
