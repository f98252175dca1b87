// ws, except that a WebSocketServer agrees to permessage-deflate unless its options say otherwise (see deflate.mjs).
import { WebSocketServer as PlainWebSocketServer } from 'ws';

export * from 'ws';
export { default } from 'ws';

export class WebSocketServer extends PlainWebSocketServer {
  constructor(options, callback) {
    super({ perMessageDeflate: true, ...options }, callback);
  }
}
