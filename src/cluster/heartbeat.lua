-- roomcast: one call of a node's heartbeat (docs/scaling.md).
-- KEYS[1]  the ZSET of nodes, scored by their last heartbeat in Redis's milliseconds
-- KEYS[2]  the rooms with members on any node (HASH: room -> members), for /api/rooms
-- KEYS[3..] the keys of one batch of the names this node holds (the node spreads its names over the calls of one
--           heartbeat interval, a bounded batch each, so that no call holds Redis for long: cluster/renewal.rs)
-- ARGV[1]  this node's id                  ARGV[2]  milliseconds without a heartbeat after which a node is dead
-- ARGV[3]  the start of a node's members set   ARGV[4]  the start of a room's keys and channel
-- Renews these names (and writes back those Redis lost), then removes the nodes not heard from in time: each
-- dead node's members leave their rooms, with a `left` event on each room's channel that the other nodes pass on
-- to their members. Returns the dead nodes' ids. Redis's own clock (TIME, https://redis.io/commands/time) scores
-- every node, so nodes need not agree on the time.
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
-- ZADD: https://redis.io/commands/zadd
redis.call('ZADD', KEYS[1], now_ms, ARGV[1])
-- A name's key holds '<node> <token>'; one Redis lost is written back without its token (no other node can then
-- take it with a session: it waits for this node to let it go).
for i = 3, #KEYS do
  local held = redis.call('GET', KEYS[i])
  if held == false then
    redis.call('SET', KEYS[i], ARGV[1] .. ' ', 'PX', ARGV[2])
  elseif string.match(held, '^%S+') == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  end
end
-- ZRANGEBYSCORE with an exclusive bound: https://redis.io/commands/zrangebyscore
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now_ms - tonumber(ARGV[2])))
for _, node in ipairs(dead) do
  redis.call('ZREM', KEYS[1], node)
  local members_key = ARGV[3] .. node .. ':members'
  -- SMEMBERS: https://redis.io/commands/smembers
  for _, entry in ipairs(redis.call('SMEMBERS', members_key)) do
    local cut = string.find(entry, '\n', 1, true)
    if cut then
      local room = string.sub(entry, 1, cut - 1)
      local name = string.sub(entry, cut + 1)
      local room_members = ARGV[4] .. room .. ':members'
      if redis.call('HGET', room_members, name) == node then
        redis.call('HDEL', room_members, name)
        redis.call('PUBLISH', ARGV[4] .. room, '@' .. node .. '\n' .. cjson.encode({user = name, joined = false}))
        -- The room's count, as presence.lua keeps it (HLEN: https://redis.io/commands/hlen).
        local count = redis.call('HLEN', room_members)
        if count > 0 then
          redis.call('HSET', KEYS[2], room, count)
        else
          redis.call('HDEL', KEYS[2], room)
        end
      end
    end
  end
  redis.call('DEL', members_key)
end
return dead
