-- roomcast: a member joined or left a room on this node (docs/scaling.md).
-- KEYS[1]  the room's members (HASH: name -> node)
-- KEYS[2]  this node's members (SET of "<room>\n<name>"), for the others to clean up if this node dies
-- ARGV[1]  this node's id                  ARGV[2]  the room's channel
-- ARGV[3]  the room's name                 ARGV[4]  the member's name
-- ARGV[5]  '1' joined, '0' left            ARGV[6]  the event as the other nodes read it (JSON)
-- HSET/HDEL: https://redis.io/commands/hset  SADD/SREM: https://redis.io/commands/sadd
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
-- '@<node>' instead of an epoch marks a presence event on the room's channel.
return redis.call('PUBLISH', ARGV[2], '@' .. ARGV[1] .. '\n' .. ARGV[6])
