-- roomcast: what a room's stream holds after the seq a node saw last (docs/scaling.md), for a node whose
-- subscription was down.
-- KEYS[1]  the room's epoch                KEYS[2]  the room's stream
-- ARGV[1]  the room's epoch as the node knows it
-- ARGV[2]  the room's latest seq as the node knows it
-- ARGV[3]  how many messages at most (--history)
-- Returns {epoch, messages}: the messages after ARGV[2], oldest first (XRANGE with an exclusive start:
-- https://redis.io/commands/xrange), or, when the epoch is not the node's, the room's latest ARGV[3] messages.
local epoch = redis.call('GET', KEYS[1])
if epoch == false then
  return {'', {}}
end
local messages = {}
if epoch == ARGV[1] then
  local rows = redis.call('XRANGE', KEYS[2], '(' .. ARGV[2] .. '-0', '+', 'COUNT', ARGV[3])
  for i = 1, #rows do
    messages[#messages + 1] = rows[i][2][2]
  end
else
  local rows = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[3])
  for i = #rows, 1, -1 do
    messages[#messages + 1] = rows[i][2][2]
  end
end
return {epoch, messages}
