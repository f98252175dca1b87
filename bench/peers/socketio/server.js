// A chat server written the way a Node.js user would scale one out: Socket.IO 4.8 with @socket.io/redis-adapter
// 8.3 (node-redis 4 clients), so that several processes sharing one Redis deliver a room's chat to its members on
// every process. It is the peer of roomcast's cluster benchmarks (bench/cluster.sh, docs/benchmarks.md).
//
// The chat semantics follow roomcast's, as the load generator (`roomcast-bench --server-kind socketio`) expects:
//   client -> server  "join"  {userId, room}    the connection joins the room (one room at a time)
//   server -> client  "system" {type: "system", content: 'Joined room "<room>"'}       the answer to a join
//   server -> room    "system" {type: "system", content: 'User "<name>" joined the room'} (not to the joiner)
//   client -> server  "chat"  {content}          ignored before a join
//   server -> room    "chat"  {type: "chat", room, from, content, timestamp}   every member, the sender included
// Left out next to roomcast: a per-room seq, history and `since`, unique names, DMs and counts across nodes
// (the adapter has no cheap way to count a room's members on other processes).
//
//   PORT=18300 REDIS_URL=redis://127.0.0.1:6379 node server.js
import { createServer } from 'node:http';
import { Server } from 'socket.io';
import { createAdapter } from '@socket.io/redis-adapter';
import { createClient } from 'redis';

const PORT = Number(process.env.PORT || 3000);
const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';

const pubClient = createClient({ url: REDIS_URL });
const subClient = pubClient.duplicate();
for (const client of [pubClient, subClient]) {
  client.on('error', (err) => console.error(`redis: ${err.message}`));
}
await Promise.all([pubClient.connect(), subClient.connect()]);

const httpServer = createServer();
const io = new Server(httpServer, { adapter: createAdapter(pubClient, subClient) });

io.on('connection', (socket) => {
  let user = null;
  let room = null;

  socket.on('join', (msg) => {
    if (typeof msg?.userId !== 'string' || typeof msg?.room !== 'string') return;
    if (room !== null) socket.leave(room);
    user = msg.userId;
    room = msg.room;
    socket.join(room);
    socket.emit('system', { type: 'system', content: `Joined room "${room}"` });
    socket.to(room).emit('system', { type: 'system', content: `User "${user}" joined the room` });
  });

  socket.on('chat', (msg) => {
    if (room === null || typeof msg?.content !== 'string') return;
    io.to(room).emit('chat', { type: 'chat', room, from: user, content: msg.content, timestamp: Date.now() });
  });

  socket.on('disconnect', () => {
    if (room !== null) {
      socket.to(room).emit('system', { type: 'system', content: `User "${user}" left the room` });
    }
  });
});

httpServer.listen(PORT, '127.0.0.1', () => {
  console.log(`Socket.IO chat on http://127.0.0.1:${PORT}, Redis ${REDIS_URL}, pid ${process.pid}`);
});
