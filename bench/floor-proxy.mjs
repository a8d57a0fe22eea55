#!/usr/bin/env node
/**
 * The least work a proxy with node:http on the client side can do: the ceiling for issue 7's
 * goals 1 and 3 (docs/decisions/bench-journal.md, "What bounds goals 1-3"). NOT a proxy to use:
 * it forwards no request header, no body, understands only a Content-Length response that arrives
 * in one read, and has no timeouts, retries or error handling. What it keeps is what any such
 * proxy must do per request: llhttp parses the request, one write sends a request head upstream
 * on a pooled keep-alive socket, one read gets the answer, one write (writeHead + end) answers
 * the client.
 * Like sessionlb (src/proxy/upstream/write-batch.ts) it issues the writes of one event-loop turn
 * together at its end; FLOOR_IMMEDIATE=1 writes each one at once instead.
 *
 *   node bench/floor-proxy.mjs PORT UPSTREAM_PORT[*WEIGHT] ...
 *   e.g. node bench/floor-proxy.mjs 18100 18081*3 18082 18083 18084
 *
 * Loopback only. Backends are picked in weighted round robin (a flat array, not smooth).
 */
import http from 'node:http';
import net from 'node:net';

const [port, ...ups] = process.argv.slice(2);
if (!port || ups.length === 0) {
  console.error('usage: floor-proxy.mjs PORT UPSTREAM_PORT[*WEIGHT] ...');
  process.exit(2);
}
const ring = [];
for (const u of ups) {
  const [p, w = '1'] = u.split('*');
  const pool = { port: Number(p), idle: [] };
  for (let i = 0; i < Number(w); i++) ring.push(pool);
}
let next = 0;
const HEAD = 'GET / HTTP/1.1\r\nHost: backend\r\n\r\n';
const immediate = process.env.FLOOR_IMMEDIATE === '1';

/** Writes of this turn: upstream sockets to send HEAD on, and [res, body] pairs to end. */
const upstreamWrites = [];
const clientWrites = [];
let flushScheduled = false;
function flush() {
  flushScheduled = false;
  for (const socket of upstreamWrites) socket.write(HEAD, 'latin1');
  for (let i = 0; i < clientWrites.length; i += 2) clientWrites[i].end(clientWrites[i + 1]);
  upstreamWrites.length = 0;
  clientWrites.length = 0;
}
function scheduleFlush() {
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flush);
  }
}

function onUpstreamData(data) {
  const { res } = this;
  this.res = null;
  const text = data.latin1Slice(0, data.length);
  const end = text.indexOf('\r\n\r\n');
  const at = text.indexOf('\r\nContent-Length: ');
  const length = Number.parseInt(text.slice(at + 18, text.indexOf('\r\n', at + 18)), 10);
  if (end < 0 || at < 0 || data.length !== end + 4 + length) {
    res.writeHead(502).end();
    this.destroy();
    return;
  }
  this.pool.idle.push(this);
  res.writeHead(200, ['Content-Type', 'text/plain', 'Content-Length', String(length)]);
  const body = data.subarray(end + 4);
  if (immediate) {
    res.end(body);
  } else {
    clientWrites.push(res, body);
    scheduleFlush();
  }
}

function upstreamFor(pool) {
  const idle = pool.idle.pop();
  if (idle !== undefined) return idle;
  const socket = net.connect({ host: '127.0.0.1', port: pool.port, noDelay: true });
  socket.pool = pool;
  socket.res = null;
  socket.on('data', onUpstreamData);
  socket.on('error', () => socket.res?.writeHead(502).end());
  return socket;
}

http.createServer({ noDelay: true, keepAliveTimeout: 75_000 }, (req, res) => {
  const pool = ring[next];
  next = next + 1 === ring.length ? 0 : next + 1;
  const socket = upstreamFor(pool);
  socket.res = res;
  if (immediate) {
    socket.write(HEAD, 'latin1');
  } else {
    upstreamWrites.push(socket);
    scheduleFlush();
  }
  req.resume();
}).listen(Number(port), '127.0.0.1');

process.on('SIGTERM', () => process.exit(0));
