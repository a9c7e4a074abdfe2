-- ARGV: prefix, phone, offline_before.
-- → nil | {token, created_at, has_name, name, {incoming}, {sent}, {{room}...}}

local phone, before = ARGV[2], ARGV[3]
local v = redis.call('HMGET', k_sess(phone), 'token', 'c', 'n', 'off')
if not v[1] then return nil end
if redis.call('SCARD', k_uconns(phone)) > 0 then return nil end
if not v[4] or tonumber(v[4]) > tonumber(before) then return nil end
local incoming, sent, rooms = purge_user(phone)
local hn, n = '0', ''
if v[3] then hn, n = '1', v[3] end
return {v[1], v[2], hn, n, incoming, sent, rooms}
