-- ARGV: prefix, phone, now. → {{incoming}, {sent}}

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
