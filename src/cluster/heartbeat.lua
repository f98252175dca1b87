-- roomcast: a node's heartbeat (docs/scaling.md).
-- KEYS[1]  the ZSET of nodes, scored by their last heartbeat in Redis's milliseconds
-- KEYS[2..] the keys of the names this node holds
-- ARGV[1]  this node's id                  ARGV[2]  milliseconds without a heartbeat after which a node is dead
-- Renews this node's names (and writes back those Redis lost), then removes the nodes not heard from in time and
-- returns their ids. Redis's own clock (TIME, https://redis.io/commands/time) scores every node, so nodes need not
-- agree on the time.
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
-- ZADD: https://redis.io/commands/zadd
redis.call('ZADD', KEYS[1], now_ms, ARGV[1])
for i = 2, #KEYS do
  local holder = redis.call('GET', KEYS[i])
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  elseif holder == false then
    redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
  end
end
-- ZRANGEBYSCORE with an exclusive bound: https://redis.io/commands/zrangebyscore
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now_ms - tonumber(ARGV[2])))
for _, node in ipairs(dead) do
  redis.call('ZREM', KEYS[1], node)
end
return dead
