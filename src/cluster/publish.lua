-- roomcast: publish one room's chat messages of one loop turn, numbered in one sequence per room (docs/scaling.md).
-- KEYS[1]  the room's seq counter          KEYS[2]  the room's stream
-- KEYS[3]  the room's epoch
-- ARGV[1]  the room's channel              ARGV[2]  the stream's approximate MAXLEN (--history)
-- ARGV[3]  an epoch for the room if it has none (a new room, or Redis lost it)
-- ARGV[4]  every message's JSON up to its seq
-- ARGV[5..] each message's JSON after its seq, in the order they were sent
-- Returns the seq of the first message. Each message is numbered, kept and published before the next: Redis runs a
-- script whole, with no other command in between, so every subscriber receives a room's messages in seq order.
-- What is published is the room's epoch, a newline, then the message's JSON, so that a node learns from the
-- message itself when the numbering began again.
local count = #ARGV - 4
if count < 1 then
  return false
end
-- The epoch is read on every call (a node's own idea of it may be stale); it is written only when Redis has none.
local epoch = redis.call('GET', KEYS[3])
if epoch == false then
  epoch = ARGV[3]
  redis.call('SET', KEYS[3], epoch)
end
-- One INCRBY numbers the whole call: the script runs alone, so its messages get the seqs after the counter's value
-- (INCRBY creates the counter at 0: https://redis.io/commands/incrby).
local first = redis.call('INCRBY', KEYS[1], count) - count + 1
for i = 5, #ARGV do
  local id = string.format('%d', first + i - 5)
  local message = ARGV[4] .. id .. ARGV[i]
  -- XADD with an explicit id, which must be above the stream's last (https://redis.io/commands/xadd).
  redis.call('XADD', KEYS[2], id .. '-0', 'm', message)
  -- PUBLISH answers how many subscribers received it (https://redis.io/commands/publish).
  redis.call('PUBLISH', ARGV[1], epoch .. '\n' .. message)
end
-- One trim for the call; MAXLEN ~ trims at a node boundary (https://redis.io/commands/xtrim).
redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', ARGV[2])
return first
