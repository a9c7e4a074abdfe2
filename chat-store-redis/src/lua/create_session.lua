-- ARGV: prefix, phone, token, has_name (0/1), name, created_at, http_until, refresh ('' = none).
-- → {'in_use'} | {'refreshed', came(0/1), token, created_at, has_name, name} | {'created'}

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
