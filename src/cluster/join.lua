-- roomcast: a join on a node of the cluster: its user name, and the state of its room (docs/scaling.md).
-- KEYS[1]  the name's key                  KEYS[2]  the room's epoch
-- KEYS[3]  the room's seq counter          KEYS[4]  the room's stream
-- ARGV[1]  this node's id                  ARGV[2]  milliseconds the name is held unless the heartbeat renews it
-- ARGV[3]  an epoch for the room if it has none
-- ARGV[4]  the room's epoch as the node knows it ('' if it does not)
-- ARGV[5]  the room's latest seq as the node knows it
-- ARGV[6]  how many of the room's latest messages the node keeps (--history)
-- KEYS[5]  the room's members (HASH: name -> node)
-- Returns {0} if another node holds or reserves the name. Otherwise the name is this node's (SET PX, renewing a
-- name this node holds already: https://redis.io/commands/set) and the answer is
-- {1, epoch, latest seq, messages, members}: the room's latest messages, oldest first, at most ARGV[6], and only
-- those after ARGV[5] when the node's epoch is the room's (XREVRANGE with an exclusive bound:
-- https://redis.io/commands/xrevrange); and the room's members as name, node, name, node... (HGETALL:
-- https://redis.io/commands/hgetall).
local holder = redis.call('GET', KEYS[1])
if holder ~= false and holder ~= ARGV[1] then
  return {0}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'NX')
local epoch = redis.call('GET', KEYS[2])
local seq = tonumber(redis.call('GET', KEYS[3]) or '0')
local low = '-'
if epoch == ARGV[4] then
  low = '(' .. ARGV[5] .. '-0'
end
local rows = redis.call('XREVRANGE', KEYS[4], '+', low, 'COUNT', ARGV[6])
local messages = {}
for i = #rows, 1, -1 do
  messages[#messages + 1] = rows[i][2][2]
end
return {1, epoch, seq, messages, redis.call('HGETALL', KEYS[5])}
