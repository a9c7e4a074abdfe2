-- ARGV: prefix, node, now, grace_until. → users left without a socket (may repeat)

local orphans = {}
forget_node(ARGV[2], ARGV[3], ARGV[4], orphans)
return orphans
