-- ARGV: prefix, now, grace_until. → users left without a socket (may repeat)

local now, grace = ARGV[2], ARGV[3]
local dead = redis.call('ZRANGE', K_NODES, '-inf', '(' .. now, 'BYSCORE')
local orphans = {}
for _, node in ipairs(dead) do forget_node(node, now, grace, orphans) end
return orphans
