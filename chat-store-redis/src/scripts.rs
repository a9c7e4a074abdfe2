//! The Lua code: every store operation that reads and then writes, or writes more than one key,
//! is one Lua function, so Redis runs it atomically and a failure leaves nothing half-written.
//!
//! The functions form one Redis function library ([`Library`], `FUNCTION LOAD`, Redis 7.0+),
//! called with `FCALL`. Redis compiles the library and runs its top level once, at load: the
//! shared helpers of [`PRELUDE`] are defined then, not on every call (as an `EVAL` script
//! that carries them must), which was half or more of a small script's cost.
//!
//! Functions that touch users, requests, nodes or timers start with `enter(ARGV[1])`, which
//! sets the key prefix the helpers build key names from (see the key map in the crate docs):
//! one library serves every prefix, and Redis never runs two functions at once, so the
//! library-level variables it sets are the current call's. The room hot path ([`APPEND`])
//! names its keys in `KEYS`, all under the room's hash tag. (Reading history needs no
//! function: `MULTI`, `EXISTS`, `XRANGE`, `EXEC` in one round trip.)
//!
//! The library and its functions are named after a hash of the code (`chat_<hash>`,
//! `chat_<hash>_<operation>`), so nodes of different versions sharing a Redis each call their
//! own. Redis keeps functions across commands but not across a restart without persistence or
//! a `FUNCTION FLUSH`: a call answered "Function not found" loads the library and is retried.
//!
//! Times are the caller's: every logical check compares the caller's `now` with the caller's
//! deadlines. Redis's clock (`TIME`) is only used to set key expiry a margin after the later of
//! the deadline and the server's now, so data is freed even if no node runs, and a caller clock
//! that is behind (tests with a manual clock) never makes a key vanish early. Timestamps are
//! stored as the decimal text the caller sent and compared with `tonumber` (exact below 2^53).

use redis::Script;

/// Shared helpers, defined once when the library loads. `enter` sets the key prefix.
const PRELUDE: &str = r#"
-- The current call's key prefix and the global keys under it, set by `enter`.
local P, K_ONLINE, K_NODES, K_TIMERS
local function enter(prefix)
  P = prefix
  K_ONLINE = P .. 'online'
  K_NODES = P .. 'nodes'
  K_TIMERS = P .. 'timers'
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
local function k_room(r) return P .. '{' .. r .. '}:m' end
local function k_hist(r) return P .. '{' .. r .. '}:h' end
local function k_dedupe(r) return P .. '{' .. r .. '}:d' end
local function k_dedupe_old(r) return P .. '{' .. r .. '}:o' end

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
  local keys = {s, k_uconns(phone)}
  tok = tok or redis.call('HGET', s, 'token')
  if tok then keys[3] = k_tok(tok) end
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
  local v = redis.call('HMGET', k_room(r), 'a', 'b', 'c', 'x')
  if not v[1] then return nil end
  return v
end

-- The live room the two share, if any.
local function pair_room(a, b)
  local id = redis.call('GET', k_pair(a, b))
  if id and redis.call('EXISTS', k_room(id)) == 1 then return id end
  return nil
end

-- Deletes a room with its history, dedupe entries, indexes and timers; its fields if it existed.
local function delete_room(r)
  local v = room_get(r)
  if not v then return nil end
  redis.call('DEL', k_room(r), k_hist(r), k_dedupe(r), k_dedupe_old(r))
  if redis.call('GET', k_pair(v[1], v[2])) == r then redis.call('DEL', k_pair(v[1], v[2])) end
  redis.call('SREM', k_urooms(v[1]), r)
  redis.call('SREM', k_urooms(v[2]), r)
  redis.call('ZREM', K_TIMERS, 'e|' .. r, 'i|' .. r)
  return {r, v[1], v[2], v[3], v[4]}
end

-- Accepts f -> t: drops both requests and creates the room with members [f, t].
local function make_room(f, t, id, created, expires)
  drop_request(f, t)
  drop_request(t, f)
  local m = k_room(id)
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

-- Deletes everything of a user's session: session, token, sockets, listing entry, own timers,
-- pending requests both ways, and rooms with their history.
local function purge_user(phone)
  local s = k_sess(phone)
  local tok = redis.call('HGET', s, 'token')
  if tok then redis.call('DEL', k_tok(tok)) end
  redis.call('DEL', s, k_uconns(phone))
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
"#;

/// ARGV: prefix, phone, token, has_name (0/1), name, created_at, http_until, refresh ('' = none).
/// → {'in_use'} | {'refreshed', came(0/1), token, created_at, has_name, name} | {'created'}
const CREATE_SESSION: &str = r#"
local phone, token, has_name, name = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local created, http_until, refresh = ARGV[6], ARGV[7], ARGV[8]
local s = k_sess(phone)
local cur = redis.call('HMGET', s, 'token', 'c', 'n', 'h', 'off')
if cur[1] then
  if refresh == '' or refresh ~= cur[1] then return {'in_use'} end
  local came = touch(phone, http_until, cur[4], cur[1], cur[5])
  local hn, n = '0', ''
  if cur[3] then hn, n = '1', cur[3] end
  return {'refreshed', came and '1' or '0', cur[1], cur[2], hn, n}
end
-- Leftovers of a session that Redis expired without it ending by the rules: nobody inherits
-- them. Its index sets outlive their entries, so when none is left, only its timers and
-- listing entry can be (the ZADDs below replace the `p|` timer and the listing entry).
redis.call('ZREM', K_TIMERS, 's|' .. phone)
if redis.call('EXISTS', s, k_uconns(phone), k_in(phone), k_out(phone), k_urooms(phone)) > 0 then
  purge_user(phone)
end
local at = expire_at(http_until, USER_GRACE)
if has_name == '1' then
  redis.call('HSET', s, 'token', token, 'c', created, 'h', http_until, 'n', name)
else
  redis.call('HSET', s, 'token', token, 'c', created, 'h', http_until)
end
redis.call('PEXPIREAT', s, at)
redis.call('SET', k_tok(token), phone, 'PXAT', at)
redis.call('ZADD', K_ONLINE, 0, phone)
redis.call('ZADD', K_TIMERS, http_until, 'p|' .. phone)
return {'created'}
"#;

/// ARGV: prefix, token. → nil | {phone, created_at, has_name, name}
const SESSION: &str = r#"
local token = ARGV[2]
local phone = redis.call('GET', k_tok(token))
if not phone then return nil end
local v = redis.call('HMGET', k_sess(phone), 'token', 'c', 'n')
if v[1] ~= token then return nil end
if v[3] then return {phone, v[2], '1', v[3]} end
return {phone, v[2], '0', ''}
"#;

/// ARGV: prefix, token, http_until. → nil | {phone, created_at, has_name, name, came(0/1)}
const TOUCH: &str = r#"
local token, http_until = ARGV[2], ARGV[3]
local phone = redis.call('GET', k_tok(token))
if not phone then return nil end
local v = redis.call('HMGET', k_sess(phone), 'token', 'c', 'n', 'h', 'off')
if v[1] ~= token then return nil end
local came = touch(phone, http_until, v[4], token, v[5]) and '1' or '0'
if v[3] then return {phone, v[2], '1', v[3], came} end
return {phone, v[2], '0', '', came}
"#;

/// ARGV: prefix, phone, "<conn id>|<node>", node, "<phone>|<conn id>". → came online (0/1)
const ADD_CONN: &str = r#"
local phone, cm, node, nm = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local s = k_sess(phone)
if redis.call('EXISTS', s) == 0 then return 0 end
redis.call('SADD', k_uconns(phone), cm)
redis.call('SADD', k_nconns(node), nm)
local came = redis.call('HDEL', s, 'off')
redis.call('ZADD', K_ONLINE, 0, phone)
user_expiry(phone, nil)
return came
"#;

/// ARGV: prefix, phone, "<conn id>|<node>", node, "<phone>|<conn id>", now, grace_until. → 1
const REMOVE_CONN: &str = r#"
local phone, cm, node, nm, now, grace = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
redis.call('SREM', k_nconns(node), nm)
forget_conn(phone, cm, now, grace)
return 1
"#;

/// ARGV: prefix, phone. → nil | {conns, http_until, offline_since ('' = online)}
const PRESENCE: &str = r#"
local phone = ARGV[2]
local v = redis.call('HMGET', k_sess(phone), 'h', 'off')
if not v[1] then return nil end
return {redis.call('SCARD', k_uconns(phone)), v[1], v[2] or ''}
"#;

/// ARGV: prefix, phone, now, session_end_at. → 0/1
const GO_OFFLINE: &str = r#"
local phone, now, end_at = ARGV[2], ARGV[3], ARGV[4]
local s = k_sess(phone)
local v = redis.call('HMGET', s, 'h', 'off')
if not v[1] or v[2] then return 0 end
if redis.call('SCARD', k_uconns(phone)) > 0 then return 0 end
if tonumber(now) < tonumber(v[1]) then return 0 end
redis.call('HSET', s, 'off', now)
redis.call('ZREM', K_ONLINE, phone)
redis.call('ZADD', K_TIMERS, end_at, 's|' .. phone)
user_expiry(phone, expire_at(end_at, MARGIN))
return 1
"#;

/// ARGV: prefix, lex start ('-' or '(<phone>'), limit (> 0), now.
/// → {more(0/1), last member walked, {online phones}}
const ONLINE_PAGE: &str = r#"
local start, limit, now = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local members = redis.call('ZRANGE', K_ONLINE, start, '+', 'BYLEX', 'LIMIT', 0, limit + 1)
local n = #members
local more = '0'
if n > limit then more = '1'; n = limit end
local out = {}
for i = 1, n do
  local p = members[i]
  local h = redis.call('HGET', k_sess(p), 'h')
  if not h then
    -- The session was freed by expiry: drop its stale listing entry.
    redis.call('ZREM', K_ONLINE, p)
  elseif redis.call('SCARD', k_uconns(p)) > 0 or tonumber(now) < tonumber(h) then
    out[#out + 1] = p
  end
end
return {more, members[n] or '', out}
"#;

/// ARGV: prefix, now, grace_until. → users left without a socket (may repeat)
const REAP: &str = r#"
local now, grace = ARGV[2], ARGV[3]
local dead = redis.call('ZRANGE', K_NODES, '-inf', '(' .. now, 'BYSCORE')
local orphans = {}
for _, node in ipairs(dead) do forget_node(node, now, grace, orphans) end
return orphans
"#;

/// ARGV: prefix, node, now, grace_until. → users left without a socket (may repeat)
const REMOVE_NODE: &str = r#"
local orphans = {}
forget_node(ARGV[2], ARGV[3], ARGV[4], orphans)
return orphans
"#;

/// ARGV: prefix, from, to, created_at, expires_at, room id, room created_at, room expires_at,
/// then (channel, payload) of the `chat_request` to `to`, and of the `request_accepted` to `to`
/// and to `from` (published when the request crosses one from `to` and makes the room).
/// → {'no_user'} | {'exists', id} | {'accepted', id, a, b, created, expires} | {'pending'}
/// | {'sent'}
const SEND_REQUEST: &str = r#"
local from, to, created, expires = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local rid, rc, rx = ARGV[6], ARGV[7], ARGV[8]
-- A session that ended (or went offline) must not be left a request, nor leave one for the
-- next session of that phone: online means a socket, or `created` inside the HTTP window.
local h = redis.call('HGET', k_sess(to), 'h')
if not h then return {'no_user'} end
if tonumber(created) >= tonumber(h) and redis.call('SCARD', k_uconns(to)) == 0 then
  return {'no_user'}
end
local id = pair_room(from, to)
if id then return {'exists', id} end
if request_live(to, from, created) then
  local r = make_room(to, from, rid, rc, rx)
  redis.call('PUBLISH', ARGV[11], ARGV[12])
  redis.call('PUBLISH', ARGV[13], ARGV[14])
  return {'accepted', r[1], r[2], r[3], r[4], r[5]}
end
if request_live(from, to, created) then return {'pending'} end
local k = k_req(from, to)
-- Replaces both fields of an expired request, if one is left.
redis.call('HSET', k, 'c', created, 'x', expires)
local at = expire_at(expires, MARGIN)
redis.call('PEXPIREAT', k, at)
redis.call('SADD', k_in(to), from)
expire_index(k_in(to), at)
redis.call('SADD', k_out(from), to)
expire_index(k_out(from), at)
redis.call('ZADD', K_TIMERS, expires, 'q|' .. from .. '|' .. to)
redis.call('PUBLISH', ARGV[9], ARGV[10])
return {'sent'}
"#;

/// ARGV: prefix, from, to, now, room id, room created_at, room expires_at, then (channel,
/// payload) of the `request_accepted` to `from` and to `to`, published with the room.
/// → nil | {id, a, b, created, expires}
const ACCEPT: &str = r#"
local from, to, now = ARGV[2], ARGV[3], ARGV[4]
if not request_live(from, to, now) then return nil end
if pair_room(from, to) then return nil end
local r = make_room(from, to, ARGV[5], ARGV[6], ARGV[7])
redis.call('PUBLISH', ARGV[8], ARGV[9])
redis.call('PUBLISH', ARGV[10], ARGV[11])
return r
"#;

/// ARGV: prefix, from, to, now. → 0/1 (was pending at now)
const REMOVE_REQUEST: &str = r#"
local x = drop_request(ARGV[2], ARGV[3])
if x and tonumber(x) > tonumber(ARGV[4]) then return 1 end
return 0
"#;

/// ARGV: prefix, phone, now. → {{incoming}, {sent}}
const REQUESTS: &str = r#"
local phone, now = ARGV[2], ARGV[3]
local function live(index, req_of)
  local out = {}
  for _, other in ipairs(redis.call('SMEMBERS', index)) do
    local x = redis.call('HGET', req_of(other), 'x')
    if not x then
      -- The request was freed by expiry: drop its stale index entry.
      redis.call('SREM', index, other)
    elseif tonumber(x) > tonumber(now) then
      out[#out + 1] = other
    end
  end
  return out
end
return {
  live(k_in(phone), function(o) return k_req(o, phone) end),
  live(k_out(phone), function(o) return k_req(phone, o) end),
}
"#;

/// ARGV: prefix, phone. → {{id, a, b, created, expires}...}
const ROOMS_OF: &str = r#"
local phone = ARGV[2]
local index = k_urooms(phone)
local out = {}
for _, r in ipairs(redis.call('SMEMBERS', index)) do
  local v = room_get(r)
  if v then out[#out + 1] = {r, v[1], v[2], v[3], v[4]} else redis.call('SREM', index, r) end
end
return out
"#;

/// ARGV: prefix, room id. → nil | {id, a, b, created, expires}
const DELETE_ROOM: &str = r#"
return delete_room(ARGV[2])
"#;

/// ARGV: prefix, phone, offline_before.
/// → nil | {token, created_at, has_name, name, {incoming}, {sent}, {{room}...}}
const END_SESSION: &str = r#"
local phone, before = ARGV[2], ARGV[3]
local v = redis.call('HMGET', k_sess(phone), 'token', 'c', 'n', 'off')
if not v[1] then return nil end
if redis.call('SCARD', k_uconns(phone)) > 0 then return nil end
if not v[4] or tonumber(v[4]) > tonumber(before) then return nil end
local incoming, sent, rooms = purge_user(phone)
local hn, n = '0', ''
if v[3] then hn, n = '1', v[3] end
return {v[1], v[2], hn, n, incoming, sent, rooms}
"#;

/// ARGV: prefix, now, lease_until, limit (> 0). → due members, now leased until lease_until
const DUE_TIMERS: &str = r#"
local due = redis.call('ZRANGE', K_TIMERS, '-inf', ARGV[2], 'BYSCORE', 'LIMIT', 0, ARGV[4])
for _, m in ipairs(due) do redis.call('ZADD', K_TIMERS, 'XX', ARGV[3], m) end
return due
"#;

/// ARGV: prefix, member, lease_until. → 0/1 (removed)
const FINISH_TIMER: &str = r#"
local s = redis.call('ZSCORE', K_TIMERS, ARGV[2])
if s and tonumber(s) == tonumber(ARGV[3]) then
  return redis.call('ZREM', K_TIMERS, ARGV[2])
end
return 0
"#;

/// The room hot path, one round trip: membership, dedupe, XADD, PUBLISH. Three commands
/// (`HMGET`, `XADD`, `PUBLISH`) for a message without a client id, once the room has history.
///
/// - The history is trimmed with `MAXLEN ~`: Redis drops whole stream nodes only, so a room
///   keeps between `history_max` and `history_max` + one node (`stream-node-max-entries`, 100
///   by default) messages, at a fraction of the cost of exact trimming.
/// - Keys under the room's tag expire with the room (`:m`'s expiry, fixed when the room is
///   made). `XADD NOMKSTREAM` fails only on the room's first message: that one creates the
///   stream and copies the expiry; XADD keeps it after. The dedupe hashes likewise get it when
///   created.
/// - Dedupe: `:d` maps `<sender>|<client_id>` to the message id; when it holds `history_max`
///   fields it is renamed to `:o` (dropping the previous `:o`) and a new `:d` begins. So the
///   newest `history_max` client ids are always in `:d` or `:o`, at most twice that is kept,
///   and a message costs `HGET`s, `HLEN` and `HSET` rather than a queue walk.
///
/// The entry (see [`crate::entry`]) is stored as the one field `v` and published behind the
/// id: the function neither builds nor parses text beyond prefixing the id.
///
/// KEYS: room meta, history stream, and with a client id the dedupe hashes (newer, older) —
/// one hash tag.
/// ARGV: sender, entry, history_max (>= 1), channel, and the client id when there is one.
/// → 0 (no room) | 1 (not a member) | id (new) | {id, {field, value...}} (the earlier message)
pub(crate) const APPEND: &str = r#"
local sender, entry, max = ARGV[1], ARGV[2], ARGV[3]
local meta = redis.call('HMGET', KEYS[1], 'a', 'b')
if not meta[1] then return 0 end
if sender ~= meta[1] and sender ~= meta[2] then return 1 end
local cid = ARGV[5]
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
  -- The room's first message: create the stream, expiring with the room.
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
"#;

/// The operations, in the order of [`Library::names`].
const FUNCTIONS: [(&str, &str); 20] = [
    ("create_session", CREATE_SESSION),
    ("session", SESSION),
    ("touch", TOUCH),
    ("add_conn", ADD_CONN),
    ("remove_conn", REMOVE_CONN),
    ("presence", PRESENCE),
    ("go_offline", GO_OFFLINE),
    ("online_page", ONLINE_PAGE),
    ("reap", REAP),
    ("remove_node", REMOVE_NODE),
    ("send_request", SEND_REQUEST),
    ("accept", ACCEPT),
    ("remove_request", REMOVE_REQUEST),
    ("requests", REQUESTS),
    ("rooms_of", ROOMS_OF),
    ("delete_room", DELETE_ROOM),
    ("end_session", END_SESSION),
    ("due_timers", DUE_TIMERS),
    ("finish_timer", FINISH_TIMER),
    ("append", APPEND),
];

/// Functions whose keys are all in `KEYS`; the others begin with `enter(ARGV[1])`.
const KEYED: [&str; 1] = ["append"];

/// Stands for the version hash in the library's source until it is known.
const TAG: &str = "@TAG@";

/// The function library: its source (for `FUNCTION LOAD`) and the name of each operation's
/// function (for `FCALL`).
pub(crate) struct Library {
    pub code: String,
    pub create_session: String,
    pub session: String,
    pub touch: String,
    pub add_conn: String,
    pub remove_conn: String,
    pub presence: String,
    pub go_offline: String,
    pub online_page: String,
    pub reap: String,
    pub remove_node: String,
    pub send_request: String,
    pub accept: String,
    pub remove_request: String,
    pub requests: String,
    pub rooms_of: String,
    pub delete_room: String,
    pub end_session: String,
    pub due_timers: String,
    pub finish_timer: String,
    pub append: String,
}

impl Library {
    pub(crate) fn new() -> Library {
        let mut code = format!(
            "#!lua name=chat_{TAG}\n{PRELUDE}\nlocal function reg(name, f) \
             redis.register_function('chat_{TAG}_' .. name, f) end\n"
        );
        for (name, body) in FUNCTIONS {
            let enter = if KEYED.contains(&name) {
                ""
            } else {
                "enter(ARGV[1])\n"
            };
            code.push_str(&format!(
                "reg('{name}', function(KEYS, ARGV)\n{enter}{body}end)\n"
            ));
        }
        // The version: a hash of the code itself (SHA1, as Redis names scripts).
        let tag = Script::new(&code).get_hash()[..16].to_owned();
        let code = code.replace(TAG, &tag);
        let name = |op: &str| format!("chat_{tag}_{op}");
        Library {
            create_session: name("create_session"),
            session: name("session"),
            touch: name("touch"),
            add_conn: name("add_conn"),
            remove_conn: name("remove_conn"),
            presence: name("presence"),
            go_offline: name("go_offline"),
            online_page: name("online_page"),
            reap: name("reap"),
            remove_node: name("remove_node"),
            send_request: name("send_request"),
            accept: name("accept"),
            remove_request: name("remove_request"),
            requests: name("requests"),
            rooms_of: name("rooms_of"),
            delete_room: name("delete_room"),
            end_session: name("end_session"),
            due_timers: name("due_timers"),
            finish_timer: name("finish_timer"),
            append: name("append"),
            code,
        }
    }
}

#[cfg(test)]
mod tests {
    /// The ACL list of the crate (what an operator grants a Redis user) names every command
    /// the function library calls.
    #[test]
    fn acl_commands_cover_the_library() {
        let lib = super::Library::new();
        let granted: Vec<&str> = crate::ACL_COMMANDS.split_whitespace().collect();
        let mut called: Vec<String> = lib
            .code
            .split("redis.call('")
            .skip(1)
            .filter_map(|rest| rest.split('\'').next())
            .map(str::to_lowercase)
            .collect();
        called.sort();
        called.dedup();
        assert!(called.len() > 10, "{called:?}");
        for c in &called {
            assert!(
                granted.contains(&format!("+{c}").as_str()),
                "{c} is not in ACL_COMMANDS"
            );
        }
    }

    use super::*;

    #[test]
    fn every_operation_has_its_function_and_the_tag_is_filled_in() {
        let lib = Library::new();
        assert!(!lib.code.contains(TAG));
        assert!(lib.code.starts_with("#!lua name=chat_"));
        for (name, _) in FUNCTIONS {
            assert_eq!(
                lib.code.matches(&format!("reg('{name}', function")).count(),
                1,
                "{name}"
            );
        }
        assert!(lib.append.ends_with("_append") && lib.append.starts_with("chat_"));
        // The same code, the same names: nodes of one version share the library.
        assert_eq!(Library::new().append, lib.append);
    }

    /// Writes the library to `$CHAT_LIBRARY_OUT`, for `perf/callgrind.sh`.
    #[test]
    #[ignore = "a tool, run by perf/callgrind.sh"]
    fn write_library() {
        let path = std::env::var("CHAT_LIBRARY_OUT").expect("CHAT_LIBRARY_OUT");
        std::fs::write(path, Library::new().code).expect("write the library");
    }
}
