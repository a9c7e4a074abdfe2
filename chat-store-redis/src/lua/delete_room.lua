-- ARGV: prefix, room id. → nil | {id, a, b, created, expires}

return delete_room(ARGV[2])
