-- ARGV: prefix, phone. → {{id, a, b, created, expires}...}

local phone = ARGV[2]
local index = k_urooms(phone)
local out = {}
for _, r in ipairs(redis.call('SMEMBERS', index)) do
  local v = room_get(r)
  if v then out[#out + 1] = {r, v[1], v[2], v[3], v[4]} else redis.call('SREM', index, r) end
end
return out
