-- ARGV: prefix, token. → nil | {phone, created_at, has_name, name}

local token = ARGV[2]
local phone = redis.call('GET', k_tok(token))
if not phone then return nil end
local v = redis.call('HMGET', k_sess(phone), 'token', 'c', 'n')
if v[1] ~= token then return nil end
if v[3] then return {phone, v[2], '1', v[3]} end
return {phone, v[2], '0', ''}
