-- roomcast: nobody on this node holds a user name any more (docs/scaling.md).
-- KEYS[1]  the name's key                  ARGV[1]  this node's id
-- ARGV[2]  milliseconds it stays reserved (0: freed now)
-- A name's key holds '<node> <token>'. Returns 1 if the name was this node's. PEXPIRE:
-- https://redis.io/commands/pexpire
local held = redis.call('GET', KEYS[1])
if held ~= false and string.match(held, '^%S+') == ARGV[1] then
  if tonumber(ARGV[2]) > 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  else
    redis.call('DEL', KEYS[1])
  end
  return 1
end
return 0
