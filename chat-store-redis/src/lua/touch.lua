-- ARGV: prefix, token, http_until. → nil | {phone, created_at, has_name, name, came(0/1)}

local token, http_until = ARGV[2], ARGV[3]
local phone = redis.call('GET', k_tok(token))
if not phone then return nil end
local v = redis.call('HMGET', k_sess(phone), 'token', 'c', 'n', 'h', 'off')
if v[1] ~= token then return nil end
local came = touch(phone, http_until, v[4], token, v[5]) and '1' or '0'
if v[3] then return {phone, v[2], '1', v[3], came} end
return {phone, v[2], '0', '', came}
