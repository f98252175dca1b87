-- roomcast: a member joined or left a room on this node (docs/scaling.md).
-- KEYS[1]  the room's members (HASH: name -> node)
-- KEYS[2]  this node's members (SET of "<room>\n<name>"), for the others to clean up if this node dies
-- KEYS[3]  the rooms with members on any node (HASH: room -> members), for /api/rooms
-- ARGV[1]  this node's id                  ARGV[2]  the room's channel
-- ARGV[3]  the room's name                 ARGV[4]  the member's name
-- ARGV[5]  '1' joined, '0' left            ARGV[6]  the event as the other nodes read it (JSON)
-- HSET/HDEL: https://redis.io/commands/hset  SADD/SREM: https://redis.io/commands/sadd
-- HLEN: https://redis.io/commands/hlen (0 once the last field is gone: Redis deletes an empty hash)
local entry = ARGV[3] .. '\n' .. ARGV[4]
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[1], ARGV[4], ARGV[1])
  redis.call('SADD', KEYS[2], entry)
else
  -- Only this node's own entry: the name may have moved to another node meanwhile.
  if redis.call('HGET', KEYS[1], ARGV[4]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], ARGV[4])
  end
  redis.call('SREM', KEYS[2], entry)
end
-- The room's count is its members hash's length, written after every change; a room nobody is in is not listed.
local count = redis.call('HLEN', KEYS[1])
if count > 0 then
  redis.call('HSET', KEYS[3], ARGV[3], count)
else
  redis.call('HDEL', KEYS[3], ARGV[3])
end
-- '@<node>' instead of an epoch marks a presence event on the room's channel.
return redis.call('PUBLISH', ARGV[2], '@' .. ARGV[1] .. '\n' .. ARGV[6])
