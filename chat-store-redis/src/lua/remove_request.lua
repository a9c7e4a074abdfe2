-- ARGV: prefix, from, to, now. → 0/1 (was pending at now)

local x = drop_request(ARGV[2], ARGV[3])
if x and tonumber(x) > tonumber(ARGV[4]) then return 1 end
return 0
