-- roomcast: hand a DM to the node that holds its recipient's name (docs/scaling.md).
-- KEYS[1]  the recipient's name key        ARGV[1]  the start of a node's channel
-- ARGV[2]  the DM, as the recipient's node reads it
-- Returns how many nodes received it: 0 when no node holds the name (or its node no longer listens).
-- A name's key holds '<node> <token>'.
local held = redis.call('GET', KEYS[1])
if held == false then
  return 0
end
return redis.call('PUBLISH', ARGV[1] .. string.match(held, '^%S+'), ARGV[2])
