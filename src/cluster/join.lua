-- roomcast: a join on a node of the cluster: its user name, and the state of its room (docs/scaling.md).
-- KEYS[1]  the name's key                  KEYS[2]  the room's epoch
-- KEYS[3]  the room's seq counter          KEYS[4]  the room's stream
-- KEYS[5]  the room's members (HASH: name -> node)
-- ARGV[1]  this node's id                  ARGV[2]  milliseconds the name is held unless the heartbeat renews it
-- ARGV[3]  an epoch for the room if it has none
-- ARGV[4]  the room's epoch as the node knows it ('' if it does not)
-- ARGV[5]  the room's latest seq as the node knows it
-- ARGV[6]  how many of the room's latest messages the node keeps (--history)
-- ARGV[7]  the session token the joiner will hold the name with
-- ARGV[8]  the session token the joiner showed ('' if none)
-- ARGV[9]  the start of a node's channel
-- A name's key holds '<node> <token>'. Returns {0} if another node holds or reserves the name and the joiner did
-- not show its token. Otherwise the name is this node's (SET PX: https://redis.io/commands/set) and the answer is
-- {1 or 2, epoch, latest seq, messages, members}: 2 when the joiner's token took the name from another node, which
-- is told on its channel ('replace', a newline, the name's key) to close the connection that held it. Then the
-- room's latest messages, oldest first, at most ARGV[6], and only those after ARGV[5] when the node's epoch is the
-- room's (XREVRANGE with an exclusive bound: https://redis.io/commands/xrevrange); and the room's members as name,
-- node, name, node... (HGETALL: https://redis.io/commands/hgetall).
local granted = 1
local token = ARGV[7]
local held = redis.call('GET', KEYS[1])
if held ~= false then
  local holder, held_token = string.match(held, '^(%S+) ?(.*)$')
  if holder ~= ARGV[1] then
    if ARGV[8] == '' or held_token ~= ARGV[8] then
      return {0}
    end
    granted = 2
    token = ARGV[8]
    redis.call('PUBLISH', ARGV[9] .. holder, 'replace\n' .. KEYS[1])
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token, 'PX', ARGV[2])
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
return {granted, epoch, seq, messages, redis.call('HGETALL', KEYS[5])}
