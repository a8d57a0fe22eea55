#!/usr/bin/env node
/**
 * A small bounded load generator for the L4 source-affinity scenario (`stream-source`, issue 18):
 * wrk cannot choose its source address, this can. Each connection is made from the next of
 * ADDRESSES loopback source addresses (`localAddress` 127.20.x.y: the whole of 127.0.0.0/8 is
 * routed to `lo` on Linux, no setup needed), sends one HTTP/1.1 request with `Connection: close`,
 * reads the response to the end and closes; CONCURRENCY such connections are in flight, for
 * SECONDS seconds (then in-flight connections finish, at most 5 s more).
 *
 *   node bench/l4-clients.mjs PORT [--concurrency 64] [--seconds 10] [--addresses 10000] [--path /]
 *                                  [--max 5000000] [--host 127.0.0.1]
 *
 * Prints one JSON line: {connections, seconds, rate, p50, p99 (ms, connect to last byte), non2xx,
 * errors, addresses}. It is node: one core of it makes perhaps 10-20k connections/s, so it can be
 * the bottleneck; compare the proxy's CPU per connection (bench/run.mjs's CPU/req column).
 */
import net from 'node:net';

const argv = process.argv.slice(2);
const port = Number(argv[0]);
const opt = (name, def) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1] : def;
};
const CONCURRENCY = Math.min(4096, Math.max(1, Number(opt('concurrency', 64))));
const SECONDS = Math.min(600, Math.max(0.1, Number(opt('seconds', 10))));
const ADDRESSES = Math.min(254 * 256, Math.max(1, Number(opt('addresses', 10_000))));
const MAX = Math.max(1, Number(opt('max', 5_000_000)));
const HOST = opt('host', '127.0.0.1');
const PATH = opt('path', '/');
const CONN_TIMEOUT_MS = 5000;
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  process.stderr.write('usage: node bench/l4-clients.mjs PORT [--concurrency N] [--seconds S] [--addresses N] [--path /]\n');
  process.exit(2);
}

/** Source address i (0-based): 127.20.(i / 254).(i % 254 + 1), never .0 or .255. */
const addresses = Array.from({ length: ADDRESSES }, (_, i) => `127.20.${Math.floor(i / 254)}.${(i % 254) + 1}`);
const request = Buffer.from(`GET ${PATH} HTTP/1.1\r\nHost: ${HOST}:${port}\r\nUser-Agent: l4-clients\r\nConnection: close\r\n\r\n`);

const latencies = new Float64Array(Math.min(MAX, 4_000_000));
let done = 0;
let started = 0;
let non2xx = 0;
let errors = 0;
let next = 0;
const errorKinds = new Map();
const t0 = process.hrtime.bigint();
const deadline = t0 + BigInt(Math.round(SECONDS * 1e9));
let stopping = false;
let tEnd = 0n;

function one() {
  if (stopping || started >= MAX || process.hrtime.bigint() >= deadline) {
    stopping = true;
    return;
  }
  started++;
  const localAddress = addresses[next];
  next = (next + 1) % ADDRESSES;
  const begin = process.hrtime.bigint();
  let first = null;
  let finished = false;
  const sock = net.connect({ host: HOST, port, localAddress, noDelay: true });
  const timer = setTimeout(() => sock.destroy(new Error('timeout')), CONN_TIMEOUT_MS);
  const finish = (err) => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    const end = process.hrtime.bigint();
    if (err || first === null) {
      errors++;
      const k = err ? (err.code ?? err.message) : 'empty response';
      errorKinds.set(k, (errorKinds.get(k) ?? 0) + 1);
    } else {
      if (!/^HTTP\/1\.[01] 2/.test(first)) non2xx++;
      if (done < latencies.length) latencies[done] = Number(end - begin) / 1e6;
      done++;
    }
    tEnd = end;
    sock.destroy();
    one();
  };
  sock.on('connect', () => sock.write(request));
  sock.on('data', (d) => { if (first === null) first = d.toString('latin1', 0, Math.min(d.length, 16)); });
  sock.on('end', () => finish(null));
  sock.on('error', (e) => finish(e));
  sock.on('close', () => finish(null));
}

for (let i = 0; i < CONCURRENCY; i++) one();
// Hard bound: whatever is still open SECONDS + 5 s after the start is abandoned.
const hard = setTimeout(() => report(true), SECONDS * 1000 + CONN_TIMEOUT_MS + 500);
hard.unref();
process.on('beforeExit', () => report(false));

let reported = false;
function report(abandoned) {
  if (reported) return;
  reported = true;
  const wall = Number((tEnd > t0 ? tEnd : process.hrtime.bigint()) - t0) / 1e9;
  const n = Math.min(done, latencies.length);
  const sorted = latencies.subarray(0, n).sort();
  const pct = (p) => (n === 0 ? NaN : sorted[Math.min(n - 1, Math.floor((p / 100) * n))]);
  const out = {
    connections: done,
    seconds: wall,
    rate: done / wall,
    p50: pct(50),
    p99: pct(99),
    non2xx,
    errors: errors + (abandoned ? started - done - errors : 0),
    errorKinds: Object.fromEntries(errorKinds),
    addresses: Math.min(ADDRESSES, started),
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.exit(0);
}
