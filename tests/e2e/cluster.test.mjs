// The browser across a cluster: nginx spreads Chromium pages over two roomcast nodes that share one redis-server;
// a node is killed with SIGKILL while the pages chat, and the pages come back by themselves through nginx to the
// node still alive, showing every message of the room once, in seq order: no duplicate, no gap.
//
// How to run (from the repository root):
//
//     cargo build --release && cd tests/e2e && npm ci && npm run test:cluster
//
// Needs Debian's chromium, nginx and redis-server (`apt-get install chromium nginx redis-server`). Without nginx or
// redis-server the test says so and is skipped, unless CI=true, where a missing part fails it. Environment:
//   ROOMCAST_BIN           server binary (default ../../target/release/roomcast, relative to this directory)
//   CHROMIUM_PATH          browser (default /usr/bin/chromium)
//   NGINX                  nginx binary (default: nginx on the PATH, else /usr/sbin/nginx)
//   ROOMCAST_REDIS_SERVER  redis-server binary (default: /usr/bin/redis-server, else redis-server on the PATH)
//
// The nginx configuration is tests/nginx/cluster.conf.template (least_conn, a dead node skipped at once); the
// test also checks that docs/scaling.md shows the same configuration.
//
// The story, with the node each page sits on read from each node's own /metrics:
//   1. ann and bob open the page through nginx and join one room: least_conn puts them on different nodes, A and
//      B. They chat across the nodes.
//   2. A is killed. ann's page notices, says so and reconnects through nginx, which skips the dead node: ann is
//      on B with bob, with her name (session token) and `since`. bob talks while she is away, and ann types a
//      line while offline, which her page sends once it is back.
//   3. A is started again (a new node id, the same port). cat opens the page and lands on it (least_conn), and
//      the three chat across the two nodes.
//   4. B, which now holds both ann and bob, is killed. Both pages reconnect by themselves to A; cat talks while
//      they are away.
//   At the end every page shows each room message once, and ann's and bob's show seq 1..N with none missing.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
const BIN = path.resolve(HERE, process.env.ROOMCAST_BIN || '../../target/release/roomcast');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const TEMPLATE = path.join(ROOT, 'tests/nginx/cluster.conf.template');
const SCALING_DOC = path.join(ROOT, 'docs/scaling.md');
const IN_CI = process.env.CI === 'true';

// Hard stop for the whole file, whatever happens (node --test also bounds each test).
const WATCHDOG = setTimeout(() => {
  console.error('cluster e2e: global watchdog fired after 240 s; killing what it started and exiting');
  killAllSync();
  process.exit(1);
}, 240_000);
WATCHDOG.unref();

// ---------------------------------------------------------------------------------------------------------------
// Finding the parts

/** The first of `candidates` that is an executable file, or of `names` found on the PATH; null if none. */
function findProgram(candidates, names) {
  for (const file of candidates.filter(Boolean)) {
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return file;
    } catch { /* not there */ }
  }
  for (const name of names) {
    const found = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
    if (found.status === 0 && found.stdout.trim()) return found.stdout.trim();
  }
  return null;
}

const REDIS_SERVER = findProgram([process.env.ROOMCAST_REDIS_SERVER, '/usr/bin/redis-server'], ['redis-server']);
const NGINX = findProgram([process.env.NGINX], ['nginx']) || findProgram(['/usr/sbin/nginx'], []);

/** What is missing to run the cluster test, in words; empty when nothing is. */
function missingParts() {
  const missing = [];
  if (!REDIS_SERVER) missing.push('redis-server (apt-get install redis-server, or set ROOMCAST_REDIS_SERVER)');
  if (!NGINX) missing.push('nginx (apt-get install nginx, or set NGINX)');
  if (!fs.existsSync(CHROMIUM)) missing.push(`chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`);
  if (!fs.existsSync(BIN)) missing.push(`the server binary at ${BIN} (cargo build --release, or set ROOMCAST_BIN)`);
  return missing;
}

// ---------------------------------------------------------------------------------------------------------------
// Processes: redis-server, the nodes, nginx

const started = [];       // every child process, killed at the end (or by the watchdog)
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'roomcast-cluster-e2e-'));

function killAllSync() {
  for (const child of started) {
    if (child.exitCode === null && child.signalCode === null) {
      try { child.kill('SIGKILL'); } catch { /* gone */ }
    }
  }
}
process.on('exit', () => {
  killAllSync();
  fs.rmSync(work, { recursive: true, force: true });
});

/** Spawns `file` with `args`, keeping the last lines of its output for error messages. */
function launch(file, args, name) {
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'info' } });
  child.name = name;
  child.output = [];
  const keep = (stream) => (chunk) => {
    child.output.push(`[${name} ${stream}] ${chunk}`);
    if (child.output.length > 200) child.output.splice(0, child.output.length - 200);
  };
  child.stdout.on('data', keep('stdout'));
  child.stderr.on('data', keep('stderr'));
  child.exited = new Promise((resolve) => child.once('exit', resolve));
  started.push(child);
  return child;
}

/** Stops a child: SIGTERM, then SIGKILL after 3 s. */
async function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => { try { child.kill('SIGKILL'); } catch { /* gone */ } }, 3000);
  await child.exited;
  clearTimeout(timer);
}

/** A port no one listens on right now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.on('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** True once something accepts TCP connections on 127.0.0.1:`port`. */
function accepts(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  });
}

async function until(what, check, timeout = 15_000) {
  const end = Date.now() + timeout;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A plain GET on 127.0.0.1:`port`: `{ status, body }`, or null when nothing answers. */
function get(port, pathname) {
  return new Promise((resolve) => {
    const request = http.get({ host: '127.0.0.1', port, path: pathname, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    request.on('error', () => resolve(null));
    request.on('timeout', () => { request.destroy(); resolve(null); });
  });
}

async function startRedis() {
  const port = await freePort();
  const dir = path.join(work, 'redis');
  fs.mkdirSync(dir, { recursive: true });
  const child = launch(REDIS_SERVER, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--dir', dir], 'redis');
  await until('redis-server to listen', () => accepts(port), 10_000);
  return { child, url: `redis://127.0.0.1:${port}` };
}

/** A roomcast node of the cluster on 127.0.0.1:`port`, ready once its /healthz says Redis is reached. */
async function startNode(redisUrl, nodeId, port) {
  const child = launch(BIN, ['--addr', `127.0.0.1:${port}`, '--redis', redisUrl, '--node-id', nodeId,
    '--node-heartbeat', '1'], nodeId);
  const node = { child, id: nodeId, port };
  try {
    await until(`node ${nodeId} to answer /healthz 200`, async () => {
      if (child.exitCode !== null) throw new Error(`node ${nodeId} exited with ${child.exitCode}`);
      return (await get(port, '/healthz'))?.status === 200;
    });
  } catch (e) {
    throw new Error(`${e.message}\n${child.output.join('')}`);
  }
  return node;
}

/** The number of chat WebSockets a node holds, from its own /metrics. */
async function websockets(node) {
  const answer = await get(node.port, '/metrics');
  assert.ok(answer && answer.status === 200, `node ${node.id} answers /metrics`);
  const line = answer.body.split('\n').find((l) => l.startsWith('roomcast_open_websockets'));
  assert.ok(line, `node ${node.id}: roomcast_open_websockets in /metrics`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** The nginx configuration of the test: the template with this run's addresses. */
function nginxConfig(nodeA, nodeB, listenPort) {
  return fs.readFileSync(TEMPLATE, 'utf8')
    .replace('@NODE_A@', `127.0.0.1:${nodeA}`)
    .replace('@NODE_B@', `127.0.0.1:${nodeB}`)
    .replace('@LISTEN@', `127.0.0.1:${listenPort}`)
    .replace('@SERVER_NAME@', 'localhost');
}

async function startNginx(nodeA, nodeB) {
  const port = await freePort();
  const dir = path.join(work, 'nginx');
  fs.mkdirSync(path.join(dir, 'tmp'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'nginx.conf'), nginxConfig(nodeA, nodeB, port));
  const child = launch(NGINX, ['-p', `${dir}/`, '-c', path.join(dir, 'nginx.conf'), '-g',
    `daemon off; pid ${path.join(dir, 'nginx.pid')};`], 'nginx');
  try {
    await until('nginx to listen', async () => {
      if (child.exitCode !== null) throw new Error(`nginx exited with ${child.exitCode}`);
      return accepts(port);
    }, 10_000);
  } catch (e) {
    const log = path.join(dir, 'error.log');
    throw new Error(`${e.message}\n${child.output.join('')}${fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : ''}`);
  }
  return { child, port, base: `http://127.0.0.1:${port}/` };
}

// ---------------------------------------------------------------------------------------------------------------
// Pages

const LAUNCH_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

let browser = null;

/** A fresh context and page that records any dialog (alert) or uncaught page error. */
async function openPage(url) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  page.dialogs = [];
  page.errors = [];
  page.on('dialog', async (d) => {
    page.dialogs.push(`${d.type()}: ${d.message()}`);
    await d.dismiss().catch(() => {});
  });
  page.on('pageerror', (e) => page.errors.push(String(e && e.stack || e)));
  await page.goto(url, { waitUntil: 'load' });
  return page;
}

function assertClean(page, who) {
  assert.deepEqual(page.dialogs, [], `${who}: a dialog (alert) fired: ${page.dialogs.join(' | ')}`);
  assert.deepEqual(page.errors, [], `${who}: uncaught page errors: ${page.errors.join(' | ')}`);
}

async function isOnline(page) {
  return page.evaluate(() => document.getElementById('status').classList.contains('online')
    && !document.getElementById('msgInput').disabled);
}

async function waitOnline(page, who, timeout) {
  try {
    await page.waitForFunction(() => document.getElementById('status').classList.contains('online')
      && !document.getElementById('msgInput').disabled, null, { timeout });
  } catch (e) {
    throw new Error(`${who} did not come back online within ${timeout} ms (status "${await page.textContent('#status')}")`);
  }
}

async function waitOffline(page, who) {
  try {
    await page.waitForFunction(() => !document.getElementById('status').classList.contains('online'), null,
      { timeout: 5000 });
  } catch (e) {
    throw new Error(`${who}'s page did not notice that its node died: ${e.message}`);
  }
}

async function join(page, name, room) {
  await page.fill('#userId', name);
  await page.fill('#room', room);
  await page.click('#joinBtn');
  await waitOnline(page, name, 10_000);
}

async function say(page, text) {
  await page.fill('#msgInput', text);
  await page.press('#msgInput', 'Enter');
}

/** The room's messages a page shows (settled bubbles with a seq), in the order shown: `[{ seq, body }]`. */
async function shown(page) {
  return page.$$eval('#messages .msg[data-seq]:not(.pending)', (els) => els.map((e) => ({
    seq: Number(e.dataset.seq),
    body: e.querySelector('.body')?.textContent ?? '',
  })));
}

/** Waits until a page shows every line of `texts` (settled), then lets late duplicates arrive. */
async function waitShowsAll(page, who, texts, timeout = 20_000) {
  try {
    await page.waitForFunction((texts) => {
      const bodies = new Set([...document.querySelectorAll('#messages .msg[data-seq]:not(.pending) .body')]
        .map((e) => e.textContent));
      return texts.every((t) => bodies.has(t));
    }, texts, { timeout });
  } catch (e) {
    const have = new Set((await shown(page)).map((m) => m.body));
    throw new Error(`${who} is missing ${texts.filter((t) => !have.has(t)).join(' | ')} after ${timeout} ms`);
  }
}

// ---------------------------------------------------------------------------------------------------------------

before(async () => {
  const missing = missingParts();
  if (missing.length > 0) {
    const why = `cluster e2e needs ${missing.join('; ')}`;
    if (IN_CI) throw new Error(`${why} (CI=true: a missing part fails the test)`);
    console.log(`!!! SKIPPED the cluster browser test: ${why}`);
    return;
  }
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: LAUNCH_ARGS, timeout: 30_000 });
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  await Promise.all(started.map(stop));
  clearTimeout(WATCHDOG);
});

test('the nginx example in docs/scaling.md is the tested configuration', () => {
  // The lines between the markers, less the markers' own indentation (the doc shows the block unindented).
  const part = (text) => {
    const lines = text.split('\n');
    const begin = lines.findIndex((l) => l.trim() === '# --- begin roomcast cluster ---');
    const end = lines.findIndex((l) => l.trim() === '# --- end roomcast cluster ---');
    assert.ok(begin >= 0 && end > begin, 'the cluster markers are there');
    const indent = lines[begin].length - lines[begin].trimStart().length;
    return lines.slice(begin, end + 1)
      .map((l) => (l.slice(0, indent).trim() === '' ? l.slice(indent) : l).trimEnd())
      .join('\n');
  };
  const documented = fs.readFileSync(SCALING_DOC, 'utf8');
  const tested = fs.readFileSync(TEMPLATE, 'utf8')
    .replace('@NODE_A@', '10.0.0.11:8080')
    .replace('@NODE_B@', '10.0.0.12:8080')
    .replace('@LISTEN@', '80')
    .replace('@SERVER_NAME@', 'chat.example.com');
  assert.equal(part(documented), part(tested),
    'docs/scaling.md\'s nginx example differs from tests/nginx/cluster.conf.template (with the doc\'s values)');
});

test('two pages chat through nginx across two nodes; a killed node\'s pages come back by themselves and show every message once', { timeout: 180_000 }, async (t) => {
  if (!browser) {
    t.skip(`needs ${missingParts().join('; ')}`);
    return;
  }
  const redis = await startRedis();
  const [portA, portB] = [await freePort(), await freePort()];
  const nodeA = await startNode(redis.url, 'node-a', portA);
  const nodeB = await startNode(redis.url, 'node-b', portB);
  const proxy = await startNginx(portA, portB);
  const room = 'across';
  const sent = [];           // every room line, in the order it was said (each said once)
  const sayLogged = async (page, text) => { sent.push(text); await say(page, text); };

  // 1. Two pages through nginx, one on each node.
  const ann = await openPage(proxy.base);
  await join(ann, 'ann', room);
  const annOnA = (await websockets(nodeA)) === 1;
  const [annNode, bobNode] = annOnA ? [nodeA, nodeB] : [nodeB, nodeA];
  assert.equal(await websockets(annNode), 1, `ann's WebSocket is on one node`);
  const bob = await openPage(proxy.base);
  await join(bob, 'bob', room);
  assert.equal(await websockets(bobNode), 1,
    `least_conn puts bob on the other node than ann (${annNode.id} holds ${await websockets(annNode)})`);
  t.diagnostic(`ann is on ${annNode.id}, bob on ${bobNode.id}`);
  await sayLogged(ann, 'hello from ann, across nodes');
  await sayLogged(bob, 'hello from bob, across nodes');
  await waitShowsAll(ann, 'ann', sent);
  await waitShowsAll(bob, 'bob', sent);

  // 2. ann's node dies. ann's page comes back through nginx, to bob's node.
  annNode.child.kill('SIGKILL');
  await annNode.child.exited;
  const killedAt = Date.now();
  await waitOffline(ann, 'ann');
  assert.ok(await isOnline(bob), 'bob, on the other node, stays online');
  await sayLogged(bob, 'bob while ann is away 1');
  await sayLogged(bob, 'bob while ann is away 2');
  await waitShowsAll(bob, 'bob', sent);
  // Typed while offline: the page keeps it and sends it once it has rejoined.
  await sayLogged(ann, 'ann typed this while offline');
  await waitOnline(ann, 'ann', 30_000);
  t.diagnostic(`ann was back ${Date.now() - killedAt} ms after her node was killed`);
  assert.equal(await websockets(bobNode), 2, `ann's page reconnected to ${bobNode.id}, the node still alive`);
  await sayLogged(ann, 'ann is back');
  await waitShowsAll(ann, 'ann', sent);
  await waitShowsAll(bob, 'bob', sent);

  // 3. The dead node comes back (a new node id, the same port); cat lands on it.
  const revived = await startNode(redis.url, 'node-a2', annNode.port);
  // nginx skips a node for fail_timeout (2 s) after it refused a connection; wait that out so least_conn sees it.
  await new Promise((r) => setTimeout(r, 2500));
  const cat = await openPage(proxy.base);
  await join(cat, 'cat', room);
  assert.equal(await websockets(revived), 1, `cat's page went to ${revived.id}, the node with no connection`);
  const catFrom = sent.length;
  await sayLogged(cat, 'cat says hi from the revived node');
  await sayLogged(bob, 'bob answers cat');
  await waitShowsAll(cat, 'cat', sent.slice(catFrom));
  await waitShowsAll(ann, 'ann', sent);

  // 4. bob's node, which now holds ann and bob, dies. Both pages come back by themselves, to the revived node.
  bobNode.child.kill('SIGKILL');
  await bobNode.child.exited;
  const secondKillAt = Date.now();
  await waitOffline(ann, 'ann');
  await waitOffline(bob, 'bob');
  for (let i = 1; i <= 3; i++) await sayLogged(cat, `cat while both are away ${i}`);
  await waitShowsAll(cat, 'cat', sent.slice(catFrom));
  // Usually both are still waiting out their 1 s backoff here; on a slow machine they may be back already, and
  // then the lines reach them live: either way each must show them once.
  const awayWhileCatSpoke = !(await isOnline(ann)) && !(await isOnline(bob));
  await sayLogged(bob, 'bob typed this while offline');
  await waitOnline(ann, 'ann', 30_000);
  await waitOnline(bob, 'bob', 30_000);
  t.diagnostic(`both were back ${Date.now() - secondKillAt} ms after their node was killed; ` +
    `cat's lines were ${awayWhileCatSpoke ? 'all published while both were away' : 'not all published while both were away'}`);
  assert.equal(await websockets(revived), 3, `all three pages are on ${revived.id}`);
  await sayLogged(ann, 'ann, after the second failure');
  await sayLogged(bob, 'bob, after the second failure');
  await waitShowsAll(ann, 'ann', sent);
  await waitShowsAll(bob, 'bob', sent);
  await waitShowsAll(cat, 'cat', sent.slice(catFrom));
  await ann.waitForTimeout(1000); // room for a late duplicate

  // Counting: each page shows each line once, under one seq each, and ann and bob show seq 1..N, none missing.
  for (const [page, who, expected] of [[ann, 'ann', sent], [bob, 'bob', sent], [cat, 'cat', sent.slice(catFrom)]]) {
    const list = await shown(page);
    const bodies = list.map((m) => m.body);
    const seqs = list.map((m) => m.seq);
    assert.equal(new Set(seqs).size, seqs.length, `${who} shows no seq twice: ${seqs.join(',')}`);
    for (const text of expected) {
      const times = bodies.filter((b) => b === text).length;
      assert.equal(times, 1, `${who} shows "${text}" ${times} times`);
    }
    assert.equal(list.length, expected.length, `${who} shows ${list.length} room lines, ${expected.length} were said`);
    const sorted = [...seqs].sort((x, y) => x - y);
    const first = sorted[0];
    assert.deepEqual(sorted, sorted.map((_, i) => first + i), `${who}'s seqs have no gap: ${sorted.join(',')}`);
    if (who !== 'cat') assert.equal(first, 1, `${who} shows the room from its first message`);
    assertClean(page, who);
  }
  t.diagnostic(`${sent.length} lines said; ann and bob show seq 1..${sent.length} once each, cat the ` +
    `${sent.length - catFrom} said after it joined`);
  for (const page of [ann, bob, cat]) await page.context().close();
  await stop(proxy.child);
  await stop(revived.child);
  await stop(redis.child);
});
