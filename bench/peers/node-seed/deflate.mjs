// Runs the seed server (server.js, unchanged) with permessage-deflate on: `node deflate.mjs`, PORT as for
// server.js. server.js builds `new WebSocketServer({ port: PORT })`, and ws leaves permessage-deflate off on a
// server unless told otherwise; a module resolution hook hands server.js, and only it, a WebSocketServer whose
// options default to `perMessageDeflate: true`: ws's own defaults, which keep context both ways unless the client
// asks otherwise, compress every message (the 1024-byte threshold applies only without context takeover), at zlib's
// default level, on libuv's thread pool, at most 10 zlib jobs at once.
import { register } from 'node:module';

register('./deflate-hooks.mjs', import.meta.url);
await import('./server.js');
