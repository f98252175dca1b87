-- roomcast: take a user name for this node, unless another node holds or reserves it (docs/scaling.md).
-- KEYS[1]  the name's key                  ARGV[1]  this node's id
-- ARGV[2]  milliseconds it is held unless the node's heartbeat renews it
-- Returns 1 if the name is this node's now, 0 if not. Like SET NX PX (https://redis.io/commands/set), except that a
-- name this node holds already is simply renewed.
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
