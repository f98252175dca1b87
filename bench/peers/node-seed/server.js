// === server.js ===
// The seeds' Node.js + ws chat server, verbatim except that the port comes from the PORT environment variable.
import { WebSocketServer } from 'ws';
const PORT = Number(process.env.PORT || 8080);
const wss = new WebSocketServer({ port: PORT });
const clients = new Map();
const MSG = {
JOIN: 'join',
LEAVE: 'leave',
CHAT: 'chat',
PING: 'ping',
PONG: 'pong',
};
function broadcast(room, message, excludeId = null) {
const payload = JSON.stringify(message);
for (const [id, client] of clients) {
if (id === excludeId) continue;
if (client.room === room && client.ws.readyState === 1) {
client.ws.send(payload);
}
}
}
function genId() {
return Math.random().toString(36).slice(2, 8);
}
wss.on('connection', (ws) => {
const clientId = genId();
clients.set(clientId, { ws, userId: null, room: null });
ws.on('message', (raw) => {
let msg;
try {
msg = JSON.parse(raw.toString());
} catch {
return;
}
const client = clients.get(clientId);
switch (msg.type) {
case MSG.JOIN: {
client.userId = msg.userId;
client.room = msg.room;
ws.send(JSON.stringify({
type: 'system',
content: `Joined room "${msg.room}", ${clients.size} online`,
}));
broadcast(msg.room, {
type: 'system',
content: `User "${msg.userId}" joined the room`,
}, clientId);
break;
}
case MSG.CHAT: {
if (!client.userId) return;
broadcast(client.room, {
type: 'chat',
from: client.userId,
content: msg.content,
timestamp: Date.now(),
}, clientId);
break;
}
case MSG.PING: {
ws.send(JSON.stringify({ type: MSG.PONG }));
break;
}
}
});
ws.on('close', () => {
const client = clients.get(clientId);
if (client?.userId && client?.room) {
broadcast(client.room, {
type: 'system',
content: `User "${client.userId}" left the room`,
});
}
clients.delete(clientId);
});
});
console.log(`WebSocket server running at ws://localhost:${PORT}`);
