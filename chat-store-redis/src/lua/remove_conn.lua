-- ARGV: prefix, phone, "<conn id>|<node>", node, "<phone>|<conn id>", now, grace_until. → 1

local phone, cm, node, nm, now, grace = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
redis.call('SREM', k_nconns(node), nm)
forget_conn(phone, cm, now, grace)
return 1
