-- ARGV: prefix, by, whom. → 0

redis.call('SREM', k_blocks(ARGV[2]), ARGV[3])
redis.call('SREM', k_blockers(ARGV[3]), ARGV[2])
return 0
