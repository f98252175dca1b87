// End-to-end browser tests for roomcast.
//
// How to run (from the repository root):
//
//     cargo build --release && cd tests/e2e && npm ci && npm test
//
// They drive Debian's chromium (`apt-get install chromium`; no browser is downloaded) through playwright-core
// against the real release binary, started here with `--addr 127.0.0.1:0`. Environment:
//   ROOMCAST_BIN     server binary (default ../../target/release/roomcast, relative to this directory)
//   CHROMIUM_PATH    browser (default /usr/bin/chromium)
//   ROOMCAST_SEED    the article holding the original index.html (default ../../../shared/seeds/000_78e6997f1411331a.txt,
//                    i.e. shared/ beside the repository; /work/shared/seeds/... is tried too)
//   E2E_SCREENSHOT   where test A saves the screenshot (default ../../docs/chat.png)
// With another cargo target directory, point ROOMCAST_BIN at its release/roomcast.
//
// Every page's WebSocket handshakes are read through the Chrome DevTools Protocol (Network.enable,
// Network.webSocketHandshakeResponseReceived): A, B and I assert that Chromium agreed to permessage-deflate
// (RFC 7692) with the chat, which the server does by default, and J that it agreed to nothing with --deflate off.
//
// Test A: our page (src/web/index.html) for two users, one of them behind a TCP proxy that can cut her connections.
// Test B: the articles' original index.html, unchanged but for its server URL, chatting with our page, long lines too.
// Test C: heartbeat: a connection that silently stops carrying data is noticed and replaced (page clock sped up).
// Test E: a duplicated tab takes the session over: the old tab is closed with 4001, says so and stays offline.
// Test F: a reload keeps the name (the session token in sessionStorage reclaims it within the name's grace period);
//         another page asking for it meanwhile is refused with a line that says why, as is a look-alike name.
// Test G: a crowded room, on a server of its own (--max-room-members 102): the count comes from `memberCount` and
//         `presence.count`, the list says it is partial (joined lists at most 100 names), and one more is refused
//         with a `room_full` line.
// Test H: a page that falls behind (a proxy stops reading for it) further than the history reaches gets `lagged`,
//         says so, and rejoins with `since` on the same connection; it shows the newest messages once each. On a
//         server of its own with a small queue bound and history.
// Test I: permessage-deflate on the wire: a proxy keeps what the server sends one page; long room lines (over 256
//         bytes) come compressed, short ones plain, DMs and the `joined` welcome plain (RFC 7692 8), and all show up
//         whole; after a reconnect the missed line comes with the replay (plain) and live lines compressed again.
// Test J: a server of its own with --deflate off: the 101 names no extension, nothing comes compressed, and chat
//         and DMs work.
// Test K: a signed-in chat (--auth-secret): a page given a token in its URL fragment takes its name from it, is
//         refused a room its token does not allow with a line that says so, joins an allowed one, and after a reload
//         is still signed in (the token is kept for the tab); a page whose
//         embedding site provides window.roomcastToken refreshes a short-lived token on the open connection and
//         stays past its first expiry; a page with no token is told, in words, that it must sign in.
// Test D (last): the server restarts: pages come back by themselves, say history may be incomplete, and show the
//         new epoch's messages (seq starts again at 1, so the dedupe state must be reset).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BIN = path.resolve(HERE, process.env.ROOMCAST_BIN || '../../target/release/roomcast');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const SCREENSHOT = path.resolve(HERE, process.env.E2E_SCREENSHOT || '../../docs/chat.png');
const SEED_CANDIDATES = [
  process.env.ROOMCAST_SEED,
  path.resolve(HERE, '../../../shared/seeds/000_78e6997f1411331a.txt'),
  '/work/shared/seeds/000_78e6997f1411331a.txt',
].filter(Boolean);
const XSS = '<img src=x onerror=alert(1)>';

// Hard stop for the whole file, whatever happens (node --test also bounds each test).
const WATCHDOG = setTimeout(() => {
  console.error('e2e: global watchdog fired after 300 s; killing the server and exiting');
  stopServerSync();
  process.exit(1);
}, 300_000);
WATCHDOG.unref();

// ---------------------------------------------------------------------------------------------------------------
// The server

let server = null;        // { proc, port, base, log }
let browser = null;
const closers = [];       // extra things to close at the end (http servers, proxies)

function startServer(extraArgs = [], addr = '127.0.0.1:0') {
  return new Promise((resolve, reject) => {
    if (!fs.existsSync(BIN)) {
      reject(new Error(`server binary not found at ${BIN} (run cargo build --release, or set ROOMCAST_BIN)`));
      return;
    }
    const proc = spawn(BIN, ['--addr', addr, ...extraArgs], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
    });
    const log = [];
    const keep = (what) => (chunk) => {
      log.push(`[${what}] ${chunk}`);
      if (log.length > 400) log.splice(0, log.length - 400);
    };
    let out = '';
    let done = false;
    const timer = setTimeout(() => finish(new Error('server did not print its listening line within 15 s:\n' + log.join(''))), 15_000);
    function finish(err, value) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) { try { proc.kill('SIGKILL'); } catch { /* gone */ } reject(err); } else resolve(value);
    }
    proc.stderr.on('data', keep('stderr'));
    proc.stdout.on('data', (chunk) => {
      keep('stdout')(chunk);
      out += chunk;
      const m = /roomcast listening on (http:\/\/127\.0\.0\.1:(\d+)\/)/.exec(out);
      if (m) finish(null, { proc, port: Number(m[2]), base: m[1], log, extraArgs });
    });
    proc.on('error', (e) => finish(e));
    proc.on('exit', (code, sig) => finish(new Error(`server exited early (code ${code}, signal ${sig}):\n${log.join('')}`)));
  });
}

const extraServers = [];  // servers a single test started with flags of its own

function stopServerSync() {
  for (const s of [server, ...extraServers]) {
    if (s && s.proc.exitCode === null && s.proc.signalCode === null) {
      try { s.proc.kill('SIGKILL'); } catch { /* gone */ }
    }
  }
}
process.on('exit', stopServerSync);

async function stopProcess(proc) {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  const t = setTimeout(() => { try { proc.kill('SIGKILL'); } catch { /* gone */ } }, 3000);
  await exited;
  clearTimeout(t);
}

async function stopServer() {
  if (server) await stopProcess(server.proc);
}

/** A server of the test's own, with its own flags; stopped at the end of the file at the latest. */
async function startExtraServer(args) {
  const extra = await startServer(args);
  extraServers.push(extra);
  closers.push(() => stopProcess(extra.proc));
  return extra;
}

// ---------------------------------------------------------------------------------------------------------------
// A TCP proxy between the browser and the server that can cut, refuse or silently stall connections.

class Proxy {
  /** With `tap`, what the server sends on each connection is also kept, in `downstream` (one Buffer list each). */
  constructor(targetPort, { tap = false } = {}) {
    this.targetPort = targetPort;
    this.pairs = new Set();
    this.refuseUntil = 0;
    this.refused = 0;
    this.accepted = 0;
    this.tap = tap;
    this.downstream = [];
    this.server = net.createServer((client) => this._accept(client));
  }
  listen() {
    return new Promise((resolve) => this.server.listen(0, '127.0.0.1', () => {
      this.port = this.server.address().port;
      resolve(this);
    }));
  }
  _accept(client) {
    if (Date.now() < this.refuseUntil) {
      this.refused++;
      client.resetAndDestroy ? client.resetAndDestroy() : client.destroy();
      return;
    }
    this.accepted++;
    const upstream = net.connect(this.targetPort, '127.0.0.1');
    const pair = { client, upstream, stalled: false };
    this.pairs.add(pair);
    const kept = this.tap ? [] : null;
    if (kept) this.downstream.push(kept);
    client.on('data', (d) => { if (!pair.stalled) upstream.write(d); });
    upstream.on('data', (d) => {
      if (pair.stalled) return;
      if (kept) kept.push(d);
      client.write(d);
    });
    const end = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', end);
    upstream.on('error', end);
  }
  /** Drop every current connection (both sides) and refuse new ones for `refuseMs`. */
  cut(refuseMs = 0) {
    this.refuseUntil = Date.now() + refuseMs;
    for (const p of [...this.pairs]) {
      p.client.destroy();
      p.upstream.destroy();
    }
  }
  /** Stop reading what the server sends on every current connection: to the server, a client that stops reading. */
  holdDownstream() {
    for (const p of this.pairs) p.upstream.pause();
  }
  /** Carry the server's bytes again. */
  releaseDownstream() {
    for (const p of this.pairs) p.upstream.resume();
  }
  /** Keep every current connection open but stop carrying bytes on it (a half-dead link). */
  stall() {
    for (const p of this.pairs) p.stalled = true;
  }
  close() {
    this.cut(0);
    return new Promise((r) => this.server.close(() => r()));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Browser helpers

const LAUNCH_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** A fresh context + page that fails loudly on any dialog (alert) or uncaught page error. */
async function openPage(url, { viewport = { width: 1100, height: 720 }, clock = false } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  page.dialogs = [];
  page.errors = [];
  page.on('dialog', async (d) => {
    page.dialogs.push(`${d.type()}: ${d.message()}`);
    await d.dismiss().catch(() => {});
  });
  page.on('pageerror', (e) => page.errors.push(String(e && e.stack || e)));
  if (clock) await page.clock.install();
  await page.goto(url, { waitUntil: 'load' });
  return page;
}

function assertClean(page, who) {
  assert.deepEqual(page.dialogs, [], `${who}: a dialog (alert) fired: ${page.dialogs.join(' | ')}`);
  assert.deepEqual(page.errors, [], `${who}: uncaught page errors: ${page.errors.join(' | ')}`);
}

async function joinOurs(page, name, room) {
  await page.fill('#userId', name);
  await page.fill('#room', room);
  await page.click('#joinBtn');
  await waitOnline(page, 10_000);
}

async function waitOnline(page, timeout) {
  await page.waitForFunction(
    () => document.getElementById('status').classList.contains('online') && !document.getElementById('msgInput').disabled,
    null, { timeout });
}

async function sendOurs(page, text) {
  await page.fill('#msgInput', text);
  await page.press('#msgInput', 'Enter');
}

/** Our page: settled (not "sending…") bubbles of #messages. */
async function bubbles(page) {
  return page.$$eval('#messages .msg:not(.pending)', (els) => els.map((e) => ({
    cls: e.className.split(/\s+/).filter(Boolean),
    text: e.textContent,
  })));
}

async function waitForText(page, text, selector = '#messages .msg:not(.pending)', timeout = 10_000) {
  try {
    await page.waitForFunction(
      ({ text, selector }) => [...document.querySelectorAll(selector)].some((e) => e.textContent.includes(text)),
      { text, selector }, { timeout });
  } catch (e) {
    const seen = await page.$$eval('#messages .msg', (els) => els.map((x) => `[${x.className}] ${x.textContent}`)).catch(() => []);
    throw new Error(`"${text}" did not show up in ${selector} within ${timeout} ms; the page shows:\n  ${seen.join('\n  ')}`);
  }
}

/** The value of one unlabelled series on a server's /metrics. */
function metric(base, name) {
  return new Promise((resolve, reject) => {
    http.get(base + 'metrics', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => {
        const line = body.split('\n').find((l) => l.startsWith(name + ' '));
        resolve(line ? Number(line.slice(name.length + 1)) : NaN);
      });
    }).on('error', reject);
  });
}

async function until(what, check, timeout = 15_000) {
  const end = Date.now() + timeout;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function occurrences(list, text) {
  return list.filter((m) => m.text.includes(text)).length;
}

// ---------------------------------------------------------------------------------------------------------------
// permessage-deflate (RFC 7692): what Chromium agreed to, and what travelled on the wire

/** What the chat route answers to Chromium's offer (`permessage-deflate; client_max_window_bits`). */
const CHAT_DEFLATE_ANSWER = 'permessage-deflate; server_no_context_takeover; client_no_context_takeover';

/** Messages shorter than this many bytes go plain (src/protocol/connection.rs MIN_COMPRESSED_LEN). */
const MIN_COMPRESSED_LEN = 256;

/**
 * Keeps every WebSocket handshake a page makes from now on, as Chromium saw it, through a DevTools Protocol session:
 * `requests` (the headers sent) and `responses` (status and headers received).
 */
async function watchHandshakes(page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  const seen = { requests: [], responses: [] };
  cdp.on('Network.webSocketWillSendHandshakeRequest', (e) => seen.requests.push(e.request.headers));
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) => seen.responses.push({
    status: e.response.status,
    headers: e.response.headers,
  }));
  return seen;
}

/** A header's value, its name compared case-insensitively; undefined when absent. */
function headerValue(headers, name) {
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name.toLowerCase());
  return key === undefined ? undefined : headers[key];
}

/** Every handshake response the page got (at least `atLeast`) is a 101 whose Sec-WebSocket-Extensions is `answer`. */
function assertDeflateAgreed(seen, who, { atLeast = 1, answer = CHAT_DEFLATE_ANSWER } = {}) {
  assert.ok(seen.responses.length >= atLeast,
    `${who}: ${seen.responses.length} WebSocket handshake response(s) seen, expected at least ${atLeast}`);
  for (const request of seen.requests) {
    const offer = headerValue(request, 'Sec-WebSocket-Extensions');
    assert.ok(offer && offer.includes('permessage-deflate'), `${who}: Chromium offered ${offer}`);
  }
  seen.responses.forEach((response, i) => {
    assert.equal(response.status, 101, `${who}: handshake ${i + 1}`);
    assert.equal(headerValue(response.headers, 'Sec-WebSocket-Extensions'), answer,
      `${who}: handshake ${i + 1} of ${seen.responses.length} answered ${JSON.stringify(response.headers)}`);
  });
}

/**
 * The frames a server sent on one tapped connection after its 101 head, as far as they arrived whole: for each,
 * RSV1 (set: compressed, RFC 7692 6), the opcode, its length on the wire and its payload as sent. `null` for a
 * connection that did not become a WebSocket (the page itself, its favicon).
 */
function serverFrames(chunks) {
  const bytes = Buffer.concat(chunks);
  const headEnd = bytes.indexOf('\r\n\r\n');
  if (headEnd < 0 || !bytes.subarray(0, headEnd).toString('latin1').startsWith('HTTP/1.1 101 ')) return null;
  const frames = [];
  let at = headEnd + 4;
  while (at + 2 <= bytes.length) {
    const first = bytes[at];
    const second = bytes[at + 1];
    assert.equal(second & 0x80, 0, 'a server never masks (RFC 6455 5.1)');
    let length = second & 0x7f;
    let start = at + 2;
    if (length === 126) {
      if (start + 2 > bytes.length) break;
      length = bytes.readUInt16BE(start);
      start += 2;
    } else if (length === 127) {
      if (start + 8 > bytes.length) break;
      length = Number(bytes.readBigUInt64BE(start));
      start += 8;
    }
    if (start + length > bytes.length) break;
    frames.push({
      rsv1: (first & 0x40) !== 0,
      opcode: first & 0x0f,
      wireLength: start + length - at,
      payload: bytes.subarray(start, start + length),
    });
    at = start + length;
  }
  return frames;
}

/** A server text frame's message: inflated first when RSV1 says it is compressed (RFC 7692 7.2.2). */
function frameText(frame) {
  if (!frame.rsv1) return frame.payload.toString('utf8');
  // 7.2.2: the sender removed the trailing 00 00 ff ff of a sync flush; put it back and inflate.
  const whole = Buffer.concat([frame.payload, Buffer.from([0x00, 0x00, 0xff, 0xff])]);
  return zlib.inflateRawSync(whole, { finishFlush: zlib.constants.Z_SYNC_FLUSH }).toString('utf8');
}

/**
 * The text messages a server sent on each WebSocket a tapping proxy carried, in the order they were opened:
 * `[{ rsv1, wireLength, text }]` for each.
 */
function tappedMessages(proxy) {
  return proxy.downstream.map(serverFrames).filter(Boolean).map((frames) => frames
    .filter((f) => f.opcode === 0x1)
    .map((f) => ({ rsv1: f.rsv1, wireLength: f.wireLength, text: frameText(f) })));
}

/** The messages a server sent on one connection whose JSON carries `content`. */
function carrying(messages, content) {
  return messages.filter((m) => m.text.includes(JSON.stringify(content)));
}

/** A chat line well over MIN_COMPRESSED_LEN bytes, repetitive as chat text is, with text outside ASCII in it. */
function longLine(label) {
  const clauses = Array.from({ length: 14 }, (_, i) =>
    `step ${i + 1}: drain node ${i % 3}, restart its workers one at a time and watch the queue depth`);
  return `${label} (café ☕, naïve, 🚀): ${clauses.join('; ')}. Done.`;
}

/** Our page: waits for a settled bubble matching `selector` whose message text is exactly `text`. */
async function waitForBody(page, text, selector, timeout = 10_000) {
  try {
    await page.waitForFunction(
      ({ text, selector }) => [...document.querySelectorAll(selector + ' .body')].some((e) => e.textContent === text),
      { text, selector }, { timeout });
  } catch (e) {
    const bodies = await page.$$eval(selector + ' .body', (els) => els.map((x) => x.textContent)).catch(() => []);
    throw new Error(`no ${selector} showed exactly the ${text.length}-character line "${text.slice(0, 40)}…" within ` +
      `${timeout} ms; those shown:\n  ${bodies.join('\n  ')}`);
  }
}

function serverLogTail() {
  return server ? server.log.slice(-40).join('') : '(no server)';
}

// ---------------------------------------------------------------------------------------------------------------

// The articles' original page, served from a site of its own (another origin), as a user of that article would.
// Only its server URL changes; it is filled in per request, once the chat server's port is known.
let legacySite = null;    // { server, port }
function legacyHtml() {
  const seedPath = SEED_CANDIDATES.find((p) => fs.existsSync(p));
  assert.ok(seedPath, `seed article not found in ${SEED_CANDIDATES.join(', ')}`);
  const seed = fs.readFileSync(seedPath, 'utf8');
  const start = seed.indexOf('<!DOCTYPE html>');
  const end = seed.indexOf('</html>', start);
  assert.ok(start >= 0 && end > start, 'the seed holds an index.html');
  const original = seed.slice(start, end + '</html>'.length);
  assert.ok(original.includes("const SERVER_URL = 'ws://localhost:8080';"));
  // The original connected to the server's root; roomcast serves the chat there too.
  return original.replace('ws://localhost:8080', `ws://127.0.0.1:${server.port}`);
}

before(async () => {
  const site = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(legacyHtml());
  });
  await new Promise((r) => site.listen(0, '127.0.0.1', r));
  closers.push(() => new Promise((r) => site.close(() => r())));
  legacySite = { server: site, port: site.address().port };
  // A page from another origin may open a WebSocket only if the operator allows that origin (cross-site
  // WebSocket hijacking protection; docs/operations.md).
  server = await startServer(['--allowed-origin', `http://127.0.0.1:${legacySite.port}`]);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: LAUNCH_ARGS,
    timeout: 30_000,
  });
});

after(async () => {
  try {
    if (browser) await browser.close().catch(() => {});
    for (const c of closers.reverse()) await c().catch(() => {});
  } finally {
    await stopServer();
    clearTimeout(WATCHDOG);
  }
});

// ---------------------------------------------------------------------------------------------------------------

test('A: our page: two users chat, DM, XSS stays text, a cut connection recovers every missed message once', { timeout: 90_000 }, async (t) => {
  const proxy = await new Proxy(server.port).listen();
  closers.push(() => proxy.close());
  const room = 'lobby';

  const alice = await openPage(`http://127.0.0.1:${proxy.port}/`); // through the cuttable proxy
  const bob = await openPage(server.base);                          // straight to the server
  const aliceHandshakes = await watchHandshakes(alice);
  const bobHandshakes = await watchHandshakes(bob);

  await joinOurs(alice, 'alice', room);
  await joinOurs(bob, 'bob', room);
  // Chromium offered permessage-deflate and the chat agreed to it: all that follows runs over it.
  assertDeflateAgreed(aliceHandshakes, 'alice');
  assertDeflateAgreed(bobHandshakes, 'bob');

  // Members: both, with a count, on both pages.
  for (const p of [alice, bob]) {
    await p.waitForFunction(() => {
      const names = [...document.querySelectorAll('#members li')].map((li) => li.textContent);
      return names.some((n) => n.includes('alice')) && names.some((n) => n.includes('bob')) && names.length === 2;
    });
  }

  // XSS: a user whose name and message carry markup. Both must show it as literal text, and no <img> may appear.
  const mallory = await openPage(server.base);
  await joinOurs(mallory, XSS, room);
  await sendOurs(mallory, `look: ${XSS} :)`);
  for (const [who, p] of [['alice', alice], ['bob', bob]]) {
    await waitForText(p, `look: ${XSS} :)`, '#messages .msg.other');
    const text = await p.textContent('#messages');
    assert.ok(text.includes(XSS), `${who}: the name/message should be shown literally`);
    assert.equal(await p.locator('#messages img').count(), 0, `${who}: an <img> element was injected into #messages`);
    assert.equal(await p.locator('#members img').count(), 0, `${who}: an <img> element was injected into #members`);
    assert.ok((await p.textContent('#members')).includes(XSS), `${who}: the member list should show the name literally`);
  }
  assertClean(mallory, 'mallory');
  await mallory.context().close();
  await alice.waitForFunction(() => document.querySelectorAll('#members li').length === 2);

  // A conversation.
  const lines = [
    [alice, 'Morning! Did the release build go through?'],
    [bob, 'Yes, 0.1 is tagged. Binary is 2.1 MB.'],
    [alice, 'Nice. Anyone tried it behind the nginx proxy yet?'],
    [bob, 'Works with proxy_set_header Upgrade. I\'ll write it up.'],
  ];
  for (const [p, text] of lines) {
    await sendOurs(p, text);
    await waitForText(alice, text);
    await waitForText(bob, text);
  }
  // Each sees both; own messages right-aligned, others' left.
  for (const [who, p, me] of [['alice', alice, alice], ['bob', bob, bob]]) {
    const list = await bubbles(p);
    for (const [sender, text] of lines) {
      const found = list.filter((m) => m.text.includes(text));
      assert.equal(found.length, 1, `${who}: "${text}" shown ${found.length} times`);
      assert.ok(found[0].cls.includes(sender === me ? 'self' : 'other'), `${who}: "${text}" has classes ${found[0].cls}`);
    }
    const geom = await p.evaluate(() => {
      const box = document.getElementById('messages').getBoundingClientRect();
      const self = [...document.querySelectorAll('#messages .msg.self')].pop().getBoundingClientRect();
      const other = [...document.querySelectorAll('#messages .msg.other')].pop().getBoundingClientRect();
      return { left: box.left, right: box.right, selfLeft: self.left, selfRight: self.right, otherLeft: other.left, otherRight: other.right };
    });
    assert.ok(geom.selfRight > geom.right - 40 && geom.selfLeft > geom.left + 40, `${who}: own message not right-aligned ${JSON.stringify(geom)}`);
    assert.ok(geom.otherLeft < geom.left + 40 && geom.otherRight < geom.right - 40, `${who}: other's message not left-aligned ${JSON.stringify(geom)}`);
  }

  // DMs both ways, picked from the member list.
  await alice.click('#members button:has-text("bob")');
  await sendOurs(alice, 'psst, lunch at 12:30?');
  await waitForText(alice, 'psst, lunch at 12:30?', '#messages .msg.dm.self');
  await waitForText(bob, 'psst, lunch at 12:30?', '#messages .msg.dm.other');
  assert.ok((await bob.locator('#messages .msg.dm.other').last().textContent()).includes('alice → you'));
  assert.ok((await alice.locator('#messages .msg.dm.self').last().textContent()).includes('you → bob'));
  await bob.click('#members button:has-text("alice")');
  await sendOurs(bob, 'Sure, the usual place');
  await waitForText(alice, 'Sure, the usual place', '#messages .msg.dm.other');
  assert.ok((await alice.locator('#messages .msg.dm.other').last().textContent()).includes('bob → you'));
  assert.ok((await bob.locator('#messages .msg.dm.self').last().textContent()).includes('you → alice'));
  await alice.selectOption('#toSelect', '');
  await bob.selectOption('#toSelect', '');

  // Cut alice's connection; keep refusing her for 3 s; bob talks meanwhile.
  await alice.fill('#msgInput', 'half-typed thought');
  const before = await bubbles(alice);
  proxy.cut(3000);
  await alice.waitForFunction(() => !document.getElementById('status').classList.contains('online'), null, { timeout: 5000 });
  assert.ok(await alice.isDisabled('#msgInput'), 'the input is disabled while not joined');
  const missed = [
    'missed 1/3: the CI run is green again',
    'missed 2/3: I bumped the history buffer to 100',
    'missed 3/3: ping me when you are back',
  ];
  for (const text of missed) {
    await sendOurs(bob, text);
    await waitForText(bob, text, '#messages .msg.self');
  }
  const cutAt = Date.now();
  try {
    await waitOnline(alice, 45_000);
  } catch (e) {
    const status = await alice.textContent('#status');
    throw new Error(`alice did not come back online (status "${status}", proxy refused ${proxy.refused}): ${e.message}\n${serverLogTail()}`);
  }
  t.diagnostic(`alice reconnected ${Date.now() - cutAt} ms after bob's last message; the proxy refused ${proxy.refused} attempt(s)`);
  assert.ok(proxy.refused >= 1, 'the page should have retried while the proxy was refusing');
  for (const text of missed) await waitForText(alice, text);
  await alice.waitForTimeout(700); // room for a late duplicate to show up
  const afterList = await bubbles(alice);
  const idx = missed.map((text) => afterList.findIndex((m) => m.text.includes(text)));
  for (let i = 0; i < missed.length; i++) {
    assert.equal(occurrences(afterList, missed[i]), 1, `alice shows "${missed[i]}" ${occurrences(afterList, missed[i])} times`);
    assert.ok(afterList[idx[i]].cls.includes('other'));
  }
  assert.ok(idx[0] < idx[1] && idx[1] < idx[2], `missed messages out of order: ${idx}`);
  assert.ok(idx[0] >= before.length - 1, 'missed messages come after what was already shown');
  for (const [, text] of lines) assert.equal(occurrences(afterList, text), 1, `after the reconnect "${text}" is shown ${occurrences(afterList, text)} times`);
  assert.equal(await alice.inputValue('#msgInput'), 'half-typed thought', 'text typed before the drop is kept');
  // The reconnect agreed to permessage-deflate again.
  assertDeflateAgreed(aliceHandshakes, 'alice after the reconnect', { atLeast: 2 });

  // Back to normal: alice's next message reaches bob.
  await alice.fill('#msgInput', '');
  await sendOurs(alice, 'Back! My wifi dropped for a second. Thanks for the recap.');
  await waitForText(bob, 'Back! My wifi dropped for a second.');
  await sendOurs(bob, 'No worries, nothing was lost :)');
  await waitForText(alice, 'No worries, nothing was lost');
  await alice.waitForTimeout(300);

  fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await alice.screenshot({ path: SCREENSHOT });
  t.diagnostic(`screenshot saved to ${SCREENSHOT}`);

  // 360 px wide: nothing overflows sideways, the chat input is visible.
  await bob.setViewportSize({ width: 360, height: 740 });
  const narrow = await bob.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    input: document.getElementById('msgInput').getBoundingClientRect().toJSON(),
    sidebarBottom: document.getElementById('sidebar').getBoundingClientRect().bottom,
    messagesTop: document.getElementById('messages').getBoundingClientRect().top,
  }));
  assert.ok(narrow.scrollWidth <= 360, `horizontal overflow at 360 px: ${narrow.scrollWidth}`);
  assert.ok(narrow.input.right <= 360 && narrow.input.bottom <= 740 && narrow.input.width > 100, `input at 360 px: ${JSON.stringify(narrow.input)}`);
  assert.ok(narrow.sidebarBottom <= narrow.messagesTop + 1, 'at 360 px the sidebar sits above the chat');

  const agreed = await metric(server.base, 'roomcast_deflate_upgrades_total{endpoint="chat"}');
  assert.ok(agreed >= 4, `/metrics counts ${agreed} chat upgrades with permessage-deflate (alice twice, bob, mallory)`);
  t.diagnostic(`alice's ${aliceHandshakes.responses.length} handshakes and bob's ${bobHandshakes.responses.length} agreed to ` +
    `"${CHAT_DEFLATE_ANSWER}"; roomcast_deflate_upgrades_total{endpoint="chat"} ${agreed}`);

  assertClean(alice, 'alice');
  assertClean(bob, 'bob');
  await alice.context().close();
  await bob.context().close();
});

test('B: the articles\' original index.html chats with our page', { timeout: 60_000 }, async (t) => {
  const wsUrl = `ws://127.0.0.1:${server.port}`;
  const legacyUrl = `http://127.0.0.1:${legacySite.port}/index.html`;

  const room = 'retro';
  const dave = await openPage(server.base);
  const daveHandshakes = await watchHandshakes(dave);
  await joinOurs(dave, 'dave', room);

  const carol = await openPage(legacyUrl);
  const handshakes = await watchHandshakes(carol);
  await carol.fill('#userId', 'carol');
  await carol.fill('#room', room);
  await carol.click('#joinBtn');
  await waitForText(carol, `Joined room "${room}"`, '#messages .msg.system');
  const origin = handshakes.requests.map((h) => headerValue(h, 'Origin')).find(Boolean);
  t.diagnostic(`the legacy page (${legacyUrl}) opened ${wsUrl} with Origin: ${origin}`);
  assert.equal(origin, `http://127.0.0.1:${legacySite.port}`);
  // The original page's WebSocket to the server's root agreed to permessage-deflate, as ours did.
  assertDeflateAgreed(handshakes, 'carol (legacy page)');
  assertDeflateAgreed(daveHandshakes, 'dave');
  t.diagnostic(`the legacy page's handshake answered Sec-WebSocket-Extensions: ` +
    headerValue(handshakes.responses[0].headers, 'Sec-WebSocket-Extensions'));

  await waitForText(dave, 'User "carol" joined the room', '#messages .msg.system');
  await dave.waitForFunction(() => [...document.querySelectorAll('#members li')].some((li) => li.textContent.includes('carol')));

  // carol (legacy) -> everyone
  await carol.fill('#msgInput', 'hello from the original client');
  await carol.press('#msgInput', 'Enter');
  await waitForText(dave, 'hello from the original client', '#messages .msg.other');
  await waitForText(carol, 'hello from the original client', '#messages .msg.self');
  // dave (ours) -> everyone
  await sendOurs(dave, 'hi carol, this is the v2 page');
  await waitForText(carol, 'hi carol, this is the v2 page', '#messages .msg.other');
  // dave -> carol privately: a v1 client gets it as a chat bubble.
  await dave.click('#members button:has-text("carol")');
  await sendOurs(dave, 'a private word for carol');
  await waitForText(carol, 'a private word for carol', '#messages .msg');
  await waitForText(dave, 'a private word for carol', '#messages .msg.dm.self');
  // Long lines both ways, compressed on the wire (a v1 form for carol), arrive whole.
  await dave.selectOption('#toSelect', '');
  const fromCarol = longLine('carol, from the original page');
  await carol.fill('#msgInput', fromCarol);
  await carol.press('#msgInput', 'Enter');
  await waitForBody(dave, fromCarol, '#messages .msg.other');
  const fromDave = longLine('dave, to the original page');
  await sendOurs(dave, fromDave);
  await carol.waitForFunction((text) => [...document.querySelectorAll('#messages .msg.other > div:first-child')]
    .some((e) => e.textContent === text), fromDave);
  // A ping round trip must not produce a bubble either (the original hides pong).
  await carol.evaluate(() => new Promise((r) => setTimeout(r, 300)));

  const legacy = await carol.$$eval('#messages .msg', (els) => els.map((e) => ({ cls: e.className, text: e.textContent, html: e.innerHTML })));
  t.diagnostic('legacy page shows: ' + JSON.stringify(legacy.map((m) => `[${m.cls}] ${m.text}`)));
  for (const m of legacy) {
    assert.ok(!/undefined|Invalid Date|null|NaN|\[object Object\]/.test(m.text), `junk bubble on the legacy page: [${m.cls}] ${m.text}`);
    assert.ok(m.text.trim().length > 0, `empty bubble on the legacy page: [${m.cls}]`);
  }
  const chats = legacy.filter((m) => !m.cls.includes('system'));
  assert.equal(chats.length, 5, `the legacy page should show exactly 5 chat bubbles, got ${chats.length}`);
  assert.equal(chats.filter((m) => m.text.startsWith(fromCarol)).length, 1, 'carol\'s long line is shown once, whole');
  assert.ok(chats[1].text.includes('dave · '), 'the legacy bubble names the sender');
  const ours = await bubbles(dave);
  for (const m of ours) assert.ok(!/undefined|Invalid Date/.test(m.text), `junk bubble on our page: ${m.text}`);
  assertClean(carol, 'carol (legacy page)');
  assertClean(dave, 'dave');
  await carol.context().close();
  await dave.context().close();
});

test('C: a connection that silently stops carrying data is detected by the heartbeat and replaced', { timeout: 60_000 }, async (t) => {
  const proxy = await new Proxy(server.port).listen();
  closers.push(() => proxy.close());
  const room = 'heartbeat';
  const erin = await openPage(`http://127.0.0.1:${proxy.port}/`, { clock: true });
  const frank = await openPage(server.base);
  await joinOurs(erin, 'erin', room);
  await joinOurs(frank, 'frank', room);
  await waitForText(erin, 'User "frank" joined the room');

  proxy.stall();                       // erin's TCP connection stays open but nothing gets through
  await sendOurs(frank, 'sent while erin was stalled');
  await waitForText(frank, 'sent while erin was stalled', '#messages .msg.self');
  // erin writes into the dead link: the message waits ("sending…") and must arrive exactly once after the rejoin.
  await sendOurs(erin, 'written into the void');
  await erin.waitForSelector('#messages .msg.self.pending');
  await erin.clock.fastForward(26_000); // the 25 s ping is due (and goes nowhere)
  assert.ok(await erin.locator('#status.online').count() === 1, 'still online right after the ping');
  await erin.clock.fastForward(11_000); // no pong within 10 s: dead
  await erin.waitForFunction(() => !document.getElementById('status').classList.contains('online'), null, { timeout: 5000 });
  // Let the first reconnect delay (1 s) pass on the page's clock.
  await erin.clock.fastForward(1_100);
  await waitOnline(erin, 15_000);
  await waitForText(erin, 'sent while erin was stalled');
  await waitForText(frank, 'written into the void', '#messages .msg.other');
  await waitForText(erin, 'written into the void', '#messages .msg.self');
  await erin.waitForFunction(() => !document.querySelector('#messages .msg.pending'));
  await frank.waitForTimeout(500); // room for a late duplicate
  const list = await bubbles(erin);
  assert.equal(occurrences(list, 'sent while erin was stalled'), 1);
  assert.equal(occurrences(list, 'written into the void'), 1, 'erin shows her re-sent message once');
  assert.equal(occurrences(await bubbles(frank), 'written into the void'), 1, 'frank gets the re-sent message once');
  t.diagnostic(`proxy accepted ${proxy.accepted} connection(s) for erin`);
  assertClean(erin, 'erin');
  assertClean(frank, 'frank');
  await erin.context().close();
  await frank.context().close();
});

test('E: a duplicated tab takes the session over; the old tab is told so and does not reconnect', { timeout: 60_000 }, async (t) => {
  const proxy = await new Proxy(server.port).listen();
  closers.push(() => proxy.close());
  const room = 'tabs';
  const first = await openPage(`http://127.0.0.1:${proxy.port}/`);   // counted by the proxy
  await joinOurs(first, 'ivy', room);
  const stored = await first.evaluate(() => sessionStorage.getItem('roomcast.session'));
  assert.ok(stored && JSON.parse(stored).session, 'the session token is kept in sessionStorage');
  assert.equal(await first.evaluate(() => localStorage.length), 0, 'nothing in localStorage (tabs must not share it)');

  // "Duplicate tab" copies sessionStorage: a second page with the same token and name signs in.
  const second = await openPage(server.base);
  await second.evaluate((v) => sessionStorage.setItem('roomcast.session', v), stored);
  await second.reload();
  assert.equal(await second.inputValue('#userId'), 'ivy', 'the tab\'s last name is prefilled');
  await second.fill('#room', room);
  await second.click('#joinBtn');
  await waitOnline(second, 10_000);

  await first.waitForFunction(() => document.getElementById('status').classList.contains('offline'), null, { timeout: 5000 });
  const status = await first.textContent('#status');
  assert.match(status, /another tab\/window/, `status: ${status}`);
  await waitForText(first, 'signed in from another tab or window', '#messages .msg.system');
  const connections = proxy.accepted;
  await first.waitForTimeout(3500); // longer than the first backoff steps
  assert.equal(proxy.accepted, connections, 'the replaced tab must not reconnect');
  assert.ok(await first.isDisabled('#msgInput'));
  assert.ok((await first.textContent('#status')).includes('another tab'), 'still says why');
  await second.waitForFunction(() => [...document.querySelectorAll('#members li')].some((li) => li.textContent.includes('ivy')));
  assert.ok(await second.locator('#status.online').count() === 1, 'the new tab stays online');
  t.diagnostic(`old tab status: "${status}"`);
  assertClean(first, 'first tab');
  assertClean(second, 'second tab');
  await first.context().close();
  await second.context().close();
});

test('F: a reload keeps the name with the session token; others are refused it meanwhile, in words', { timeout: 60_000 }, async (t) => {
  const room = 'reload';
  const jo = await openPage(server.base);
  const lee = await openPage(server.base);
  await joinOurs(jo, 'jo', room);
  await joinOurs(lee, 'lee', room);
  const before = JSON.parse(await jo.evaluate(() => sessionStorage.getItem('roomcast.session')));
  assert.ok(before.session, 'the session token is kept in sessionStorage');

  // Another page asks for the name while jo holds it; another case is not another name.
  const kim = await openPage(server.base);
  await kim.fill('#userId', 'JO');
  await kim.fill('#room', room);
  await kim.click('#joinBtn');
  const held = 'Could not join as "JO": another connection holds this name. Choose another name.';
  await waitForText(kim, held, '#messages .msg.system.error');
  const told = [held];
  await kim.waitForFunction(() => document.getElementById('status').classList.contains('offline'));
  assert.equal(await kim.isDisabled('#userId'), false, 'the name can be changed after a refusal');

  // A look-alike (Latin j, Cyrillic о) is refused whoever is online, in words a person reads.
  await kim.fill('#userId', 'j\u043e');
  await kim.click('#joinBtn');
  await waitForText(kim, 'mixes letters of different scripts', '#messages .msg.system.error');
  const lookAlike = await kim.locator('#messages .msg.system.error').last().textContent();
  assert.ok(!lookAlike.includes('userId'), `the line names the field the protocol's way: ${lookAlike}`);
  told.push(lookAlike);

  // jo reloads: the old connection goes and the name waits for jo's token.
  await jo.reload();
  await waitForText(lee, 'User "jo" left the room', '#messages .msg.system');
  assert.equal(await jo.inputValue('#userId'), 'jo', 'the reloaded page prefills its name');
  assert.equal(await jo.inputValue('#room'), room, 'and its room');
  await kim.fill('#userId', 'jo');
  await kim.click('#joinBtn');
  await waitForText(kim, 'Could not join as "jo": this name was in use moments ago and is kept for its owner', '#messages .msg.system.error');
  told.push(await kim.locator('#messages .msg.system.error').last().textContent());

  // jo presses Join: the token from sessionStorage takes the name back.
  await jo.click('#joinBtn');
  await waitOnline(jo, 10_000);
  await waitForText(lee, 'User "jo" joined the room', '#messages .msg.system');
  const after = JSON.parse(await jo.evaluate(() => sessionStorage.getItem('roomcast.session')));
  assert.equal(after.session, before.session, 'the name came back with the same session token');
  assert.ok((await jo.textContent('#members')).includes('jo (you)'));

  // kim takes a name of her own.
  await kim.fill('#userId', 'kim');
  await kim.click('#joinBtn');
  await waitOnline(kim, 10_000);
  await jo.waitForFunction(() => document.getElementById('memberCount').textContent === '3');
  t.diagnostic('kim was told: ' + JSON.stringify(told));
  for (const p of [['jo', jo], ['lee', lee], ['kim', kim]]) assertClean(p[1], p[0]);
  for (const p of [jo, lee, kim]) await p.context().close();
});

test('G: a crowded room: the server\'s counts, a list that says it is partial, and room_full in words', { timeout: 90_000 }, async (t) => {
  // A server of its own: a room of at most 102, and no request rate per address (101 WebSockets from one page).
  const crowd = await startExtraServer(['--max-room-members', '102', '--handshake-rate-per-ip', '0']);
  const room = 'crowd';
  const bots = await openPage(crowd.base);
  const counts = await bots.evaluate(async ({ room, n }) => {
    const url = 'ws://' + location.host + '/ws';
    window.bots = [];
    const ready = [];
    for (let i = 0; i < n; i++) {
      const ws = new WebSocket(url);
      window.bots.push(ws);
      ready.push(new Promise((resolve, reject) => {
        ws.onopen = () => ws.send(JSON.stringify({ type: 'join', v: 2, userId: 'bot' + String(i).padStart(3, '0'), room }));
        ws.onmessage = (ev) => {
          const m = JSON.parse(ev.data);
          if (m.type === 'joined') resolve(m.memberCount);
          if (m.type === 'error') reject(new Error(m.code + ': ' + m.message));
        };
        ws.onclose = (ev) => reject(new Error('bot ' + i + ' closed with ' + ev.code));
      }));
    }
    return Promise.all(ready);
  }, { room, n: 101 });
  assert.equal(Math.max(...counts), 101, 'the bots are in');

  // The person arrives 102nd: `joined` names 100 members and counts 102.
  const viewer = await openPage(crowd.base);
  await joinOurs(viewer, 'viewer', room);
  assert.equal(await viewer.textContent('#memberCount'), '102');
  assert.equal(await viewer.locator('#members li').count(), 101, 'the 100 names listed, and the viewer');
  assert.equal(await viewer.textContent('#membersNote'), 'Showing 101 of 102 members.');
  assert.ok(await viewer.isVisible('#membersNote'));
  assert.match(await viewer.textContent('#roomSub'), /^102 online \(member list incomplete\)$/);

  // One more is refused: the room is full.
  const late = await openPage(crowd.base);
  await late.fill('#userId', 'late');
  await late.fill('#room', room);
  await late.click('#joinBtn');
  await waitForText(late, 'Could not join #crowd: the room is full. Try another room, or try again later.', '#messages .msg.system.error');
  await late.waitForFunction(() => document.getElementById('status').classList.contains('offline'));
  await late.fill('#room', 'elsewhere');
  await late.click('#joinBtn');
  await waitOnline(late, 10_000);

  // 30 leave at once: the count follows `presence.count`, whether they are told one by one or summed up.
  await bots.evaluate(() => { for (const ws of window.bots.slice(0, 30)) { ws.onclose = null; ws.close(); } });
  await viewer.waitForFunction(() => document.getElementById('memberCount').textContent === '72', null, { timeout: 10_000 });
  await viewer.waitForFunction(() => /^72 online/.test(document.getElementById('roomSub').textContent));
  const summed = await viewer.$$eval('#messages .msg.system', (els) => els.map((e) => e.textContent).filter((x) => / more left the room/.test(x)));
  t.diagnostic(`the viewer saw the departures ${summed.length ? 'summed up: ' + summed.join(' | ') : 'one by one'}`);
  assert.equal(await viewer.locator('#members img').count(), 0);
  for (const p of [['bots', bots], ['viewer', viewer], ['late', late]]) assertClean(p[1], p[0]);
  for (const p of [bots, viewer, late]) await p.context().close();
});

test('H: a page that fell behind past the history is told, rejoins with since, and shows the newest once', { timeout: 90_000 }, async (t) => {
  // A server of its own: a tiny queue bound and history, a long grace, and no chat limits in the flooder's way.
  const lag = await startExtraServer([
    '--max-queued-bytes', '65536', '--history', '5', '--slow-consumer-grace', '60',
    '--rate', '1000', '--burst', '1000', '--rate-bytes', '0', '--room-rate-bytes', '0',
    '--max-frames-per-sec', '0', '--max-bytes-per-sec', '0',
  ]);
  const proxy = await new Proxy(lag.port).listen();
  closers.push(() => proxy.close());
  const room = 'lag';
  const ned = await openPage(`http://127.0.0.1:${proxy.port}/`);
  await joinOurs(ned, 'ned', room);

  // ned stops reading; a flooder sends far more than the kernel's buffers, the queue bound and the history hold.
  proxy.holdDownstream();
  const flo = await openPage(lag.base);
  const total = 2500;
  await flo.evaluate(async ({ room, total }) => {
    const ws = new WebSocket('ws://' + location.host + '/ws');
    window.flooder = ws;
    await new Promise((resolve) => { ws.onopen = resolve; });
    ws.send(JSON.stringify({ type: 'join', v: 2, userId: 'flo', room }));
    // Paced (10 messages every 20 ms) so that what one server turn reads stays under the queue bound: the flooder
    // itself keeps up with its own echoes, only ned falls behind.
    // Random letters, new for each message: permessage-deflate is on, and a repeated letter would compress to
    // almost nothing and fill no queue.
    const letters = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
    const filler = () => Array.from(crypto.getRandomValues(new Uint8Array(3900)), (b) => letters[b % letters.length]).join('');
    for (let i = 1; i <= total; i++) {
      ws.send(JSON.stringify({ type: 'chat', content: `flood ${i} ${filler()}` }));
      if (i % 10 === 0) await new Promise((r) => setTimeout(r, 20));
    }
  }, { room, total });
  try {
    await until('ned to fall behind', async () => await metric(lag.base, 'roomcast_lagging_clients') === 1
      && await metric(lag.base, 'roomcast_deliveries_skipped_total') > 10);
  } catch (e) {
    const seen = {};
    for (const name of ['roomcast_messages_in_total', 'roomcast_queued_bytes', 'roomcast_lagging_clients',
      'roomcast_deliveries_skipped_total', 'roomcast_slow_consumers_recovered_total', 'roomcast_slow_consumers_dropped_total']) {
      seen[name] = await metric(lag.base, name);
    }
    throw new Error(`${e.message}: ${JSON.stringify(seen)}`);
  }
  const skipped = await metric(lag.base, 'roomcast_deliveries_skipped_total');

  // ned reads again: the server catches it up from the history, which lost some, so ned is told `lagged`.
  proxy.releaseDownstream();
  await waitForText(ned, 'Your connection fell behind and some messages were lost', '#messages .msg.system.warn', 20_000);
  await waitForText(ned, `flood ${total} `, '#messages .msg.other', 20_000);
  // The rejoin on the same connection: a second "Joined room" line, and the page stays online.
  await ned.waitForFunction(() => [...document.querySelectorAll('#messages .msg.system')]
    .filter((e) => e.textContent.startsWith('Joined room')).length === 2, null, { timeout: 10_000 });
  await waitOnline(ned, 5_000);
  await ned.waitForTimeout(500); // room for a late duplicate
  const list = await bubbles(ned);
  const seen = new Map();
  for (const m of list) {
    const hit = /flood (\d+) /.exec(m.text);
    if (hit) seen.set(hit[1], (seen.get(hit[1]) || 0) + 1);
  }
  const dupes = [...seen].filter(([, n]) => n > 1);
  assert.deepEqual(dupes, [], 'no message is shown twice');
  for (let i = total - 4; i <= total; i++) assert.equal(seen.get(String(i)), 1, `flood ${i} is shown once`);
  assert.ok(seen.size < total, 'some were lost (that is what lagged says)');
  const recovered = await metric(lag.base, 'roomcast_slow_consumers_recovered_total');
  assert.ok(recovered >= 1, `caught up ${recovered} times`);
  assert.equal(await metric(lag.base, 'roomcast_slow_consumers_dropped_total'), 0, 'nobody was closed for it');
  // ned still talks.
  await sendOurs(ned, 'back in step');
  await waitForText(ned, 'back in step', '#messages .msg.self');
  const warned = await ned.locator('#messages .msg.system.warn').count();
  t.diagnostic(`${skipped} deliveries skipped when ned was released; ned shows ${seen.size} of the ${total} flood messages, ` +
    `${warned} warning(s); clients caught up ${recovered} time(s)`);
  assertClean(ned, 'ned');
  assertClean(flo, 'flo');
  await ned.context().close();
  await flo.context().close();
});

test('I: permessage-deflate: long room lines travel compressed, DMs plain, all arrive whole, before and after a reconnect', { timeout: 90_000 }, async (t) => {
  // uma's bytes from the server pass a proxy that keeps them, so the test can read the frames as sent.
  const proxy = await new Proxy(server.port, { tap: true }).listen();
  closers.push(() => proxy.close());
  const room = 'squeeze';
  const uma = await openPage(`http://127.0.0.1:${proxy.port}/`);
  const vic = await openPage(server.base);
  const umaHandshakes = await watchHandshakes(uma);
  const vicHandshakes = await watchHandshakes(vic);
  const agreedBefore = await metric(server.base, 'roomcast_deflate_upgrades_total{endpoint="chat"}');
  await joinOurs(uma, 'uma', room);
  await joinOurs(vic, 'vic', room);
  assertDeflateAgreed(umaHandshakes, 'uma');
  assertDeflateAgreed(vicHandshakes, 'vic');

  // The room, both ways: vic's line is compressed once for the room; uma's page compresses hers, the server
  // inflates it and compresses the broadcast.
  const fromVic = longLine('vic to the room');
  const fromUma = longLine('uma to the room');
  assert.ok(Buffer.byteLength(fromVic) > 2 * MIN_COMPRESSED_LEN, 'the line is long enough to be compressed');
  await sendOurs(vic, fromVic);
  await waitForBody(uma, fromVic, '#messages .msg.other');
  await waitForBody(vic, fromVic, '#messages .msg.self');
  await sendOurs(uma, fromUma);
  await waitForBody(vic, fromUma, '#messages .msg.other');
  await waitForBody(uma, fromUma, '#messages .msg.self');
  const short = 'a short one goes plain';
  await sendOurs(vic, short);
  await waitForText(uma, short, '#messages .msg.other');

  // DMs, both ways: personal messages, which go plain however long (RFC 7692 8).
  const dmToUma = longLine('vic, privately to uma');
  const dmToVic = longLine('uma, privately to vic');
  await vic.click('#members button:has-text("uma")');
  await sendOurs(vic, dmToUma);
  await waitForBody(uma, dmToUma, '#messages .msg.dm.other');
  await waitForBody(vic, dmToUma, '#messages .msg.dm.self');
  await uma.click('#members button:has-text("vic")');
  await sendOurs(uma, dmToVic);
  await waitForBody(vic, dmToVic, '#messages .msg.dm.other');
  await waitForBody(uma, dmToVic, '#messages .msg.dm.self');
  await uma.selectOption('#toSelect', '');
  await vic.selectOption('#toSelect', '');

  // On the wire to uma: every long room line came compressed (RSV1), smaller than its text, and inflated to it;
  // the DMs came plain, as did every message carrying her session token; nothing under MIN_COMPRESSED_LEN bytes was
  // compressed.
  const [first] = tappedMessages(proxy);
  for (const content of [fromVic, fromUma]) {
    const frames = carrying(first, content);
    assert.equal(frames.length, 1, `"${content.slice(0, 30)}…" reached uma once on the wire`);
    assert.ok(frames[0].rsv1, `"${content.slice(0, 30)}…" came compressed`);
    assert.ok(frames[0].wireLength < Buffer.byteLength(content), `"${content.slice(0, 30)}…": ${frames[0].wireLength} bytes on the wire`);
  }
  for (const content of [dmToUma, dmToVic]) {
    const frames = carrying(first, content);
    assert.equal(frames.length, 1, `"${content.slice(0, 30)}…" reached uma once on the wire`);
    assert.equal(frames[0].rsv1, false, `"${content.slice(0, 30)}…" is personal and came plain`);
  }
  const welcomes = first.filter((m) => m.text.includes('"session"'));
  assert.ok(welcomes.length >= 1, 'uma got her joined welcome');
  assert.deepEqual(welcomes.filter((m) => m.rsv1).map((m) => m.text), [], 'a session token is never compressed');
  assert.equal(carrying(first, short).length, 1);
  assert.equal(carrying(first, short)[0].rsv1, false, 'a short message goes plain');
  for (const m of first) {
    if (m.rsv1) assert.ok(Buffer.byteLength(m.text) >= MIN_COMPRESSED_LEN, `compressed under ${MIN_COMPRESSED_LEN} bytes: ${m.text}`);
  }

  // Recovery: uma's connection is cut; vic says something long meanwhile; uma comes back by herself, agrees to
  // permessage-deflate again and gets the missed line whole, from the history.
  const before = await bubbles(uma);
  proxy.cut(1500);
  await uma.waitForFunction(() => !document.getElementById('status').classList.contains('online'), null, { timeout: 5000 });
  const missed = longLine('vic while uma was away');
  await sendOurs(vic, missed);
  await waitForBody(vic, missed, '#messages .msg.self');
  await waitOnline(uma, 45_000);
  await waitForBody(uma, missed, '#messages .msg.other');
  assertDeflateAgreed(umaHandshakes, 'uma after the reconnect', { atLeast: 2 });
  const after = longLine('vic after uma came back');
  await sendOurs(vic, after);
  await waitForBody(uma, after, '#messages .msg.other');
  await uma.waitForTimeout(500); // room for a late duplicate
  const list = await bubbles(uma);
  for (const content of [fromVic, fromUma, missed, after]) {
    assert.equal(occurrences(list, content), 1, `uma shows "${content.slice(0, 30)}…" ${occurrences(list, content)} times`);
  }
  assert.ok(list.length > before.length);

  // On uma's last connection: the missed line came with the replay, which goes plain (docs/protocol.md), and the live
  // line after it compressed.
  const last = tappedMessages(proxy).at(-1);
  const replayed = carrying(last, missed);
  assert.equal(replayed.length, 1, 'the missed line came once on the new connection');
  assert.equal(replayed[0].rsv1, false, 'a replay from the history goes plain');
  const live = carrying(last, after);
  assert.equal(live.length, 1);
  assert.ok(live[0].rsv1, 'a live line after the reconnect comes compressed');

  const agreed = await metric(server.base, 'roomcast_deflate_upgrades_total{endpoint="chat"}');
  assert.ok(agreed - agreedBefore >= 3, `/metrics counted ${agreed - agreedBefore} chat upgrades with permessage-deflate in this test`);
  const saved = [fromVic, fromUma, dmToUma].map((c) => `${Buffer.byteLength(c)} → ${carrying(first, c)[0].wireLength}`);
  t.diagnostic(`uma's WebSockets: ${tappedMessages(proxy).length}; on the wire (text bytes → frame bytes) the room ` +
    `lines ${saved.slice(0, 2).join(', ')}, a DM ${saved[2]}; the replayed line ${replayed[0].wireLength} bytes plain, ` +
    `the live one after it ${live[0].wireLength}`);
  assertClean(uma, 'uma');
  assertClean(vic, 'vic');
  await uma.context().close();
  await vic.context().close();
});

test('J: with --deflate off the handshake agrees to no extension and the chat still works, plain', { timeout: 60_000 }, async (t) => {
  const plain = await startExtraServer(['--deflate', 'off']);
  const proxy = await new Proxy(plain.port, { tap: true }).listen();
  closers.push(() => proxy.close());
  const room = 'plain';
  const wes = await openPage(`http://127.0.0.1:${proxy.port}/`);
  const xan = await openPage(plain.base);
  const wesHandshakes = await watchHandshakes(wes);
  const xanHandshakes = await watchHandshakes(xan);
  await joinOurs(wes, 'wes', room);
  await joinOurs(xan, 'xan', room);
  for (const [who, seen] of [['wes', wesHandshakes], ['xan', xanHandshakes]]) {
    assert.ok(seen.requests.length >= 1 && seen.responses.length >= 1, `${who}: a handshake was seen`);
    for (const request of seen.requests) {
      assert.ok((headerValue(request, 'Sec-WebSocket-Extensions') || '').includes('permessage-deflate'),
        `${who}: Chromium offered permessage-deflate`);
    }
    for (const response of seen.responses) {
      assert.equal(response.status, 101);
      assert.equal(headerValue(response.headers, 'Sec-WebSocket-Extensions'), undefined,
        `${who}: the 101 names no extension: ${JSON.stringify(response.headers)}`);
    }
  }

  await sendOurs(wes, 'hello without compression');
  await waitForText(xan, 'hello without compression', '#messages .msg.other');
  const long = longLine('xan, uncompressed');
  await sendOurs(xan, long);
  await waitForBody(wes, long, '#messages .msg.other');
  await xan.click('#members button:has-text("wes")');
  const dm = longLine('xan, privately and uncompressed');
  await sendOurs(xan, dm);
  await waitForBody(wes, dm, '#messages .msg.dm.other');
  await wes.click('#members button:has-text("xan")');
  await sendOurs(wes, 'got both');
  await waitForText(xan, 'got both', '#messages .msg.dm.other');

  const [messages] = tappedMessages(proxy);
  assert.ok(messages.length > 0);
  assert.deepEqual(messages.filter((m) => m.rsv1).map((m) => m.text), [], 'nothing came compressed');
  assert.equal(carrying(messages, long).length, 1, 'the long line came once, plain');
  assert.equal(await metric(plain.base, 'roomcast_deflate_upgrades_total{endpoint="chat"}'), 0);
  assert.ok(await metric(plain.base, 'roomcast_upgrades_total{endpoint="chat"}') >= 2);
  t.diagnostic(`wes was sent ${messages.length} messages, all plain; the long line took ${carrying(messages, long)[0].wireLength} bytes`);
  assertClean(wes, 'wes');
  assertClean(xan, 'xan');
  await wes.context().close();
  await xan.context().close();
});

/** An HS256 JWT with `claims`, signed with `secret`, as an application would mint it. */
function mintToken(secret, claims) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const unsigned = b64({ alg: 'HS256', typ: 'JWT' }) + '.' + b64(claims);
  return unsigned + '.' + crypto.createHmac('sha256', secret).update(unsigned).digest('base64url');
}

test('K: a signed-in chat: a fragment token names the user, a forbidden room is refused in words, a refreshed token keeps the connection', { timeout: 90_000 }, async (t) => {
  const secret = crypto.randomBytes(32).toString('hex');
  const signed = await startExtraServer(['--auth-secret', secret, '--auth-leeway', '0']);
  const now = () => Math.floor(Date.now() / 1000);

  const kim = await openPage(signed.base + '#token=' + mintToken(secret, { sub: 'kim', exp: now() + 3600, rooms: ['lobby'] }));
  await kim.waitForFunction(() => document.getElementById('userId').value === 'kim');
  assert.equal(await kim.$eval('#userId', (e) => e.readOnly), true, 'the name is the token\'s');
  assert.ok(!kim.url().includes('token='), `the token left the address bar: ${kim.url()}`);
  await kim.fill('#room', 'staff');
  await kim.click('#joinBtn');
  await waitForText(kim, 'your sign-in does not allow this room', '#messages .msg');
  assert.equal(await kim.$eval('#status', (e) => e.classList.contains('offline')), true);
  await kim.fill('#room', 'lobby');
  await kim.click('#joinBtn');
  await waitOnline(kim, 10_000);

  // A site that embeds the chat hands out short-lived tokens through window.roomcastToken.
  const lee = await (await browser.newContext({ viewport: { width: 1100, height: 720 } })).newPage();
  lee.errors = [];
  lee.dialogs = [];
  lee.on('pageerror', (e) => lee.errors.push(String(e && e.stack || e)));
  lee.on('dialog', async (d) => { lee.dialogs.push(d.message()); await d.dismiss().catch(() => {}); });
  let issued = 0;
  await lee.exposeFunction('mintForTest', () => {
    issued++;
    return mintToken(secret, { sub: 'lee', exp: now() + 4 });
  });
  await lee.addInitScript(() => { window.roomcastToken = () => window.mintForTest(); });
  await lee.goto(signed.base, { waitUntil: 'load' });
  await lee.waitForFunction(() => document.getElementById('userId').value === 'lee');
  await lee.fill('#room', 'lobby');
  await lee.click('#joinBtn');
  await waitOnline(lee, 10_000);
  const upgrades = await metric(signed.base, 'roomcast_upgrades_total{endpoint="chat"}');
  const joinedAt = Date.now();
  // Past the first token's expiry, and the second's: the page refreshed on the open connection.
  await new Promise((r) => setTimeout(r, 9_000));
  await waitOnline(lee, 1_000);
  assert.ok(issued >= 4, `the page asked the site for fresh tokens (${issued} issued)`);
  assert.equal(await metric(signed.base, 'roomcast_upgrades_total{endpoint="chat"}'), upgrades, 'no reconnect');
  assert.equal(await metric(signed.base, 'roomcast_closes_total{code="4004"}') || 0, 0, 'nobody expired');
  await sendOurs(lee, 'still here after my first token expired');
  await waitForText(kim, 'still here after my first token expired', '#messages .msg.other');
  t.diagnostic(`lee stayed ${Date.now() - joinedAt} ms on one connection with tokens of 4 s (${issued} issued)`);

  const guest = await openPage(signed.base);
  await guest.fill('#userId', 'guest');
  await guest.fill('#room', 'lobby');
  await guest.click('#joinBtn');
  await waitForText(guest, 'needs you to sign in through the site it belongs to', '#messages .msg');

  // A reload stays signed in: the fragment's token was kept for this tab.
  await kim.reload({ waitUntil: 'load' });
  await kim.waitForFunction(() => document.getElementById('userId').value === 'kim');
  await kim.fill('#room', 'lobby');
  await kim.click('#joinBtn');
  await waitOnline(kim, 10_000);

  assertClean(kim, 'kim');
  assertClean(lee, 'lee');
  assertClean(guest, 'guest');
  for (const page of [kim, lee, guest]) await page.context().close();
});

test('D: the server restarts; pages reconnect by themselves and show the new epoch\'s messages', { timeout: 60_000 }, async (t) => {
  const room = 'restart';
  const gina = await openPage(server.base);
  const hank = await openPage(server.base);
  await joinOurs(gina, 'gina', room);
  await joinOurs(hank, 'hank', room);
  await sendOurs(hank, 'before restart one');
  await sendOurs(gina, 'before restart two');
  await waitForText(gina, 'before restart one');
  await waitForText(hank, 'before restart two');

  const { port, extraArgs } = server;
  await stopServer();
  for (const p of [gina, hank]) {
    await p.waitForFunction(() => !document.getElementById('status').classList.contains('online'), null, { timeout: 10_000 });
  }
  await gina.waitForTimeout(1500); // a couple of refused reconnect attempts
  server = await startServer(extraArgs, `127.0.0.1:${port}`);
  const restartedAt = Date.now();
  for (const p of [gina, hank]) {
    try {
      await waitOnline(p, 40_000);
    } catch (e) {
      throw new Error(`no reconnect after the restart (status "${await p.textContent('#status')}"): ${e.message}\n${serverLogTail()}`);
    }
  }
  t.diagnostic(`both pages were back ${Date.now() - restartedAt} ms after the restart`);
  for (const p of [gina, hank]) {
    await waitForText(p, 'The server restarted; history may be incomplete.', '#messages .msg.system');
  }
  // The new epoch's seq 1 and 2 must not be taken for the old epoch's seq 1 and 2.
  await sendOurs(hank, 'first after restart');
  await sendOurs(hank, 'second after restart');
  await waitForText(gina, 'first after restart', '#messages .msg.other');
  await waitForText(gina, 'second after restart', '#messages .msg.other');
  await gina.waitForTimeout(300);
  const list = await bubbles(gina);
  for (const text of ['before restart one', 'before restart two', 'first after restart', 'second after restart']) {
    assert.equal(occurrences(list, text), 1, `gina shows "${text}" ${occurrences(list, text)} times`);
  }
  assertClean(gina, 'gina');
  assertClean(hank, 'hank');
  await gina.context().close();
  await hank.context().close();
});
