-- ARGV: prefix, lex start ('-' or '(<phone>'), limit (> 0), now.
-- → {more(0/1), last member walked, {online phones}}

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
