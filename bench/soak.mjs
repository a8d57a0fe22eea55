#!/usr/bin/env node
/**
 * Issue 14: the soak. sessionlb (`dist/cli.js run`, a child process) in front of four node
 * backends (child processes) with sticky `learn` sessions in a real memcached, under mixed load
 * for `--minutes` (default 10), with a fault every `--fault-every` seconds (default 15) taken in
 * turn from: a backend SIGKILLed (restarted 5 s later), memcached SIGSTOPped for 5 s, a valid
 * reload (SIGHUP), a backend SIGSTOPped for 4 s, memcached killed (restarted 3 s later), an
 * invalid reload (`--faults a,b` keeps only some of them; `--no-faults` none). Every
 * `--report-every` seconds (default 30) it prints requests, errors by cause, p50/p99/max,
 * sessionlb's RSS (VmRSS of /proc/PID/status) and the faults of the interval; a summary at the
 * end. Should sessionlb exit by itself, the run stops and its event log is printed. Not part of
 * `npm test` (not in CI).
 *
 *   npm run soak                       # = tsc -p tsconfig.json && node bench/soak.mjs (10 minutes)
 *   npm run soak -- --minutes 2        # shorter
 *   node bench/soak.mjs --minutes 1 --concurrency 16 --workers 2 --json /tmp/soak.json
 *
 * Load (per request, at random): 40% GET /app with a known session (must stay on its backend
 * unless that one failed), 20% GET /app without a cookie (a new session), 15% POST 16 KiB,
 * 5% POST 200 KiB (streamed, not retried once sent), 12% GET /big (1 MiB), 5% GET /slow (200 ms),
 * 3% GET with a valid session id nobody bound.
 *
 * Bounded: it stops by itself after the given minutes (a hard stop 90 s later kills what is
 * left). Everything listens on 127.0.0.1; every process it starts is killed by its own PID.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import { join } from 'node:path';
import { ROOT, children, freePort, killAllNow, sleep, startChild, startMemcached, stopChild, which } from './lib.mjs';

// ------------------------------------------------------------------------------------------------
// Options
// ------------------------------------------------------------------------------------------------

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = Number(process.argv[i + 1]);
  if (!Number.isFinite(v) || v <= 0) {
    process.stderr.write(`soak: --${name} needs a positive number\n`);
    process.exit(2);
  }
  return v;
}
const jsonIndex = process.argv.indexOf('--json');
const JSON_OUT = jsonIndex >= 0 ? process.argv[jsonIndex + 1] : null;
if (process.argv.includes('--help')) {
  process.stdout.write('usage: node bench/soak.mjs [--minutes 10] [--concurrency 32] [--workers 1] [--report-every 30] [--fault-every 15] [--faults backend-kill,memcached-stop,reload,backend-stop,memcached-kill,invalid-reload] [--no-faults] [--json FILE]\n');
  process.exit(0);
}
const MINUTES = option('minutes', 10);
const CONCURRENCY = Math.trunc(option('concurrency', 32));
const WORKERS = Math.trunc(option('workers', 1));
const REPORT_EVERY_S = option('report-every', 30);
const FAULT_EVERY_S = option('fault-every', 15);
const STORE_TIMEOUT_MS = 50;
const NO_FAULTS = process.argv.includes('--no-faults');
const FAULT_KINDS = ['backend-kill', 'memcached-stop', 'reload', 'backend-stop', 'memcached-kill', 'invalid-reload'];
const faultsIndex = process.argv.indexOf('--faults');
const SELECTED_FAULTS = faultsIndex >= 0 ? String(process.argv[faultsIndex + 1] ?? '').split(',').filter(Boolean) : FAULT_KINDS;
for (const f of SELECTED_FAULTS) {
  if (!FAULT_KINDS.includes(f)) {
    process.stderr.write(`soak: unknown fault "${f}" (known: ${FAULT_KINDS.join(', ')})\n`);
    process.exit(2);
  }
}

const CLI = join(ROOT, 'dist', 'cli.js');
if (!existsSync(CLI)) {
  process.stderr.write('soak: dist/cli.js is missing: run `npm run soak` (it builds) or `npm run build`\n');
  process.exit(2);
}
/** memcached on PATH, else Debian's locations (as test/helpers/memcached.ts finds it). */
const MEMCACHED = which('memcached') ?? ['/usr/bin/memcached', '/usr/sbin/memcached', '/usr/local/bin/memcached'].find((p) => existsSync(p)) ?? null;
if (MEMCACHED === null) {
  process.stderr.write('soak: memcached is needed (Debian: apt-get install memcached)\n');
  process.exit(2);
}

const TMP = mkdtempSync(join(os.tmpdir(), 'sessionlb-soak-'));
const out = (line) => process.stdout.write(`${line}\n`);
let finished = false;
const cleanupTmp = () => rmSync(TMP, { recursive: true, force: true });
const interrupted = (code) => () => { killAllNow(); cleanupTmp(); process.exit(code); };
process.on('SIGINT', interrupted(130));
process.on('SIGTERM', interrupted(143));
// The hard bound: whatever happens, nothing outlives MINUTES + 90 s.
setTimeout(() => {
  if (finished) return;
  out('soak: hard time limit reached; killing its processes');
  interrupted(1)();
}, (MINUTES * 60 + 90) * 1000).unref();

// ------------------------------------------------------------------------------------------------
// Backends (child processes, so that they can be SIGKILLed / SIGSTOPped by PID)
// ------------------------------------------------------------------------------------------------

const BACKEND_SCRIPT = `
const http = require('node:http');
const crypto = require('node:crypto');
const [name, port] = process.argv.slice(1);
const big = Buffer.alloc(1 << 20, 98);
const alphabet = '0123456789abcdefghijklmnopqrstuv';
const newId = () => { let s = ''; for (const b of crypto.randomBytes(26)) s += alphabet[b & 31]; return s; };
const server = http.createServer((req, res) => {
  let n = 0;
  const hash = crypto.createHash('sha256');
  req.on('data', (c) => { n += c.length; hash.update(c); });
  req.on('end', () => {
    const url = new URL(req.url, 'http://x');
    const send = () => {
      const headers = { 'X-Backend': name, 'Content-Type': 'text/plain' };
      if (url.pathname === '/app' && !/(?:^|;\\s*)PHPSESSID=/.test(req.headers.cookie || '')) {
        headers['Set-Cookie'] = 'PHPSESSID=' + newId() + '; path=/; HttpOnly';
      }
      const body = url.pathname === '/big' ? big
        : req.method === 'POST' ? Buffer.from(name + ' ' + n + ' ' + hash.digest('hex'))
        : Buffer.from(name + ' ok');
      headers['Content-Length'] = String(body.length);
      res.writeHead(200, headers);
      res.end(body);
    };
    if (url.pathname === '/slow') setTimeout(send, 200); else send();
  });
});
server.keepAliveTimeout = 120000;
server.listen(Number(port), '127.0.0.1', () => process.stdout.write('ready\\n'));
`;

class Backend {
  constructor(name, port) {
    this.name = name;
    this.port = port;
    this.address = `127.0.0.1:${port}`;
    this.child = null;
  }

  get alive() {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  async start() {
    const child = spawn(process.execPath, ['-e', BACKEND_SCRIPT, this.name, String(this.port)], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.add(child);
    child.exited = new Promise((res) => child.once('exit', (code, signal) => { children.delete(child); res({ code, signal }); }));
    this.child = child;
    await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`backend ${this.name} did not start`)), 10_000);
      child.stdout.once('data', () => { clearTimeout(t); resolve(); });
      child.once('exit', () => { clearTimeout(t); reject(new Error(`backend ${this.name} exited at start`)); });
    });
    child.stdout.resume();
  }

  async kill() {
    if (!this.alive) return;
    process.kill(this.child.pid, 'SIGCONT');
    process.kill(this.child.pid, 'SIGKILL');
    await this.child.exited;
  }

  signal(sig) {
    if (this.alive) process.kill(this.child.pid, sig);
  }
}

// ------------------------------------------------------------------------------------------------
// Start everything
// ------------------------------------------------------------------------------------------------

const backends = [];
for (const name of ['a', 'b', 'c', 'd']) {
  const b = new Backend(name, await freePort());
  await b.start();
  backends.push(b);
}
let memcached = await startMemcached(MEMCACHED, { memoryMiB: 64, cpu: null, logFile: join(TMP, 'memcached.log') });
const MC_PORT = memcached.port;
/** Starts memcached again on its port (after a kill). */
async function restartMemcached() {
  const args = ['-l', '127.0.0.1', '-p', String(MC_PORT), '-U', '0', '-t', '1', '-m', '64', '-c', '1024'];
  if (process.getuid?.() === 0) args.push('-u', 'nobody');
  const child = startChild(MEMCACHED, args, { logFile: join(TMP, 'memcached.log') });
  memcached = { port: MC_PORT, child };
  await sleep(200);
}

const PORT = await freePort();
const ADMIN = await freePort();
const CONFIG = join(TMP, 'sessionlb.json');
function config(weights = [1, 1, 1, 1]) {
  return {
    workers: WORKERS,
    accessLog: false,
    shutdownTimeout: '10s',
    clientMaxBodySize: '8m',
    servers: [{ listen: [`127.0.0.1:${PORT}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
    sessionStore: { type: 'memcached', servers: [`127.0.0.1:${MC_PORT}`], timeout: `${STORE_TIMEOUT_MS}ms`, maxFails: 5, failTimeout: '2s', hashKey: 'soak-hash-key-0123456789' },
    upstreams: {
      backend: {
        sticky: { mode: 'learn', cookie: 'PHPSESSID' },
        servers: backends.map((b, i) => ({ address: b.address, weight: weights[i], failTimeout: '3s' })),
        timeouts: { connect: '1s', read: '2s', send: '5s' },
        healthCheck: { type: 'http', path: '/health', interval: '1s', timeout: '500ms' },
      },
    },
    admin: { listen: `127.0.0.1:${ADMIN}` },
  };
}
writeFileSync(CONFIG, JSON.stringify(config(), null, 2));
const lb = startChild(process.execPath, ['--max-semi-space-size=8', CLI, 'run', '--config', CONFIG], { logFile: join(TMP, 'sessionlb.log') });
{
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (lb.exitCode !== null) throw new Error(`sessionlb exited at start: ${readFileSync(join(TMP, 'sessionlb.log'), 'utf8').slice(-2000)}`);
    const s = await get(`http://127.0.0.1:${ADMIN}/status`).catch(() => null);
    if (s?.status === 200) {
      const doc = JSON.parse(s.body);
      if (WORKERS <= 1 || (doc.workers ?? []).filter((w) => w.answered).length === WORKERS) break;
    }
    if (Date.now() > deadline) throw new Error('sessionlb did not start in 20 s');
    await sleep(100);
  }
}

function get(url) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: 5000 }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/** VmRSS in MiB of sessionlb: the process, plus its workers when there are any. */
async function rssMiB() {
  const pids = [lb.pid];
  if (WORKERS > 1) {
    const s = await get(`http://127.0.0.1:${ADMIN}/status`).catch(() => null);
    if (s?.status === 200) for (const w of JSON.parse(s.body).workers ?? []) pids.push(w.pid);
  }
  let total = 0;
  for (const pid of pids) {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) total += Number(m[1]) / 1024;
    } catch { /* gone */ }
  }
  return total;
}

/** CPU seconds (user + system) used so far by `pid`, from /proc/PID/stat; NaN when gone. */
function cpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100 on Linux)
  } catch {
    return NaN;
  }
}

/** The sum of every series of metric `name` on /metrics (NaN when it cannot be read). */
async function metricSum(name) {
  const s = await get(`http://127.0.0.1:${ADMIN}/metrics`).catch(() => null);
  if (s === null || s.status !== 200) return NaN;
  let total = 0;
  for (const m of s.body.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))) total += Number(m[1]);
  return total;
}
const circuitOpen = () => metricSum('sessionlb_session_store_circuit_open');

// ------------------------------------------------------------------------------------------------
// Load
// ------------------------------------------------------------------------------------------------

const POST_SMALL = randomBytes(16 * 1024);
const POST_LARGE = randomBytes(200 * 1024);
const sha = (b) => createHash('sha256').update(b).digest('hex');
const POST_SMALL_SHA = sha(POST_SMALL);
const POST_LARGE_SHA = sha(POST_LARGE);
const alphabet = '0123456789abcdefghijklmnopqrstuv';
const newId = () => { let s = ''; for (const b of randomBytes(26)) s += alphabet[b & 31]; return s; };

/** Known sessions: id -> backend that has it. At most 2,000 (oldest replaced). */
const sessions = [];
const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });

function pick() {
  const r = Math.random() * 100;
  if (r < 40 && sessions.length > 0) return 'session';
  if (r < 60) return 'new';
  if (r < 75) return 'post16k';
  if (r < 80) return 'post200k';
  if (r < 92) return 'big';
  if (r < 97) return 'slow';
  return 'unknown';
}

/** One request of `kind`; resolves {kind, ms, error?, moved?}. */
function one(kind) {
  const started = performance.now();
  const headers = {};
  let path = '/app';
  let method = 'GET';
  let body = null;
  let session = null;
  if (kind === 'session') {
    session = sessions[Math.floor(Math.random() * sessions.length)];
    headers.Cookie = `PHPSESSID=${session.id}`;
  } else if (kind === 'unknown') {
    headers.Cookie = `PHPSESSID=${newId()}`;
  } else if (kind === 'post16k' || kind === 'post200k') {
    method = 'POST';
    path = '/upload';
    body = kind === 'post16k' ? POST_SMALL : POST_LARGE;
    headers['Content-Length'] = String(body.length);
    headers['Content-Type'] = 'application/octet-stream';
  } else if (kind === 'big') {
    path = '/big';
  } else if (kind === 'slow') {
    path = '/slow';
  }
  return new Promise((resolve) => {
    let settled = false;
    const done = (r) => {
      if (settled) return;
      settled = true;
      resolve({ kind, ms: performance.now() - started, ...r });
    };
    const req = http.request({ host: '127.0.0.1', port: PORT, path, method, headers, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', (e) => done({ error: `incomplete body (${e.code ?? e.message})` }));
      res.on('close', () => { if (!res.complete) done({ error: 'incomplete body' }); });
      res.on('end', () => {
        if (!res.complete) return done({ error: 'incomplete body' });
        if (res.statusCode !== 200) return done({ error: `status ${res.statusCode}` });
        const b = Buffer.concat(chunks);
        const backend = String(res.headers['x-backend'] ?? '');
        if (kind === 'big') {
          if (b.length !== 1 << 20 || b[0] !== 98 || b[b.length - 1] !== 98) return done({ error: 'bad body' });
        } else if (method === 'POST') {
          const expected = `${backend} ${body.length} ${kind === 'post16k' ? POST_SMALL_SHA : POST_LARGE_SHA}`;
          if (b.toString() !== expected) return done({ error: 'bad body' });
        } else if (b.toString() !== `${backend} ok`) {
          return done({ error: 'bad body' });
        }
        const cookie = /PHPSESSID=([^;]+)/.exec(String(res.headers['set-cookie'] ?? ''));
        if (kind === 'new') {
          if (cookie === null) return done({ error: 'new session without cookie' });
          if (sessions.length < 2000) sessions.push({ id: cookie[1], home: backend });
          else sessions[Math.floor(Math.random() * sessions.length)] = { id: cookie[1], home: backend };
        }
        let moved = false;
        if (session !== null && backend !== session.home) {
          moved = true;
          session.home = backend; // rebound: it stays there from now on
        }
        done({ moved });
      });
    });
    req.setTimeout(15_000, () => req.destroy(new Error('client timeout')));
    req.on('error', (e) => done({ error: e.message === 'client timeout' ? 'client timeout' : (e.code ?? e.message) }));
    req.end(body ?? undefined);
  });
}

// ------------------------------------------------------------------------------------------------
// Faults
// ------------------------------------------------------------------------------------------------

const faultLog = []; // {at (s), what}
let interval = { faults: [] };
const t0 = performance.now();
const now = () => (performance.now() - t0) / 1000;
function note(what) {
  const e = { at: Number(now().toFixed(1)), what };
  faultLog.push(e);
  interval.faults.push(`${e.at}s ${what}`);
}
let weightsTurn = 0;
let faultTurn = 0;
let killTurn = 0;
let stopTurn = 0;
/** The fault of this turn; resolves when it is over (the process is back). Bounded: each waits a fixed few seconds. */
async function fault() {
  const k = FAULT_KINDS.indexOf(SELECTED_FAULTS[faultTurn++ % SELECTED_FAULTS.length]);
  if (k === 0) {
    const b = backends[killTurn++ % backends.length];
    note(`backend ${b.name} SIGKILL`);
    await b.kill();
    await sleep(5000);
    await b.start();
    note(`backend ${b.name} restarted`);
  } else if (k === 1) {
    note('memcached SIGSTOP');
    process.kill(memcached.child.pid, 'SIGSTOP');
    await sleep(5000);
    process.kill(memcached.child.pid, 'SIGCONT');
    note('memcached SIGCONT');
  } else if (k === 2) {
    const weights = [[3, 1, 1, 1], [1, 2, 2, 1], [1, 1, 1, 1]][weightsTurn++ % 3];
    writeFileSync(CONFIG, JSON.stringify(config(weights), null, 2));
    if (lb.exitCode === null && lb.signalCode === null) process.kill(lb.pid, 'SIGHUP');
    note(`reload (weights ${weights.join(',')})`);
  } else if (k === 3) {
    const b = backends[(stopTurn++ + 2) % backends.length];
    note(`backend ${b.name} SIGSTOP`);
    b.signal('SIGSTOP');
    await sleep(4000);
    b.signal('SIGCONT');
    note(`backend ${b.name} SIGCONT`);
  } else if (k === 4) {
    note('memcached SIGKILL');
    await stopChild(memcached.child, 'SIGKILL');
    await sleep(3000);
    await restartMemcached();
    note('memcached restarted');
  } else {
    writeFileSync(CONFIG, '{"servers": [], "upstreams": ');
    if (lb.exitCode === null && lb.signalCode === null) process.kill(lb.pid, 'SIGHUP');
    note('invalid reload');
    await sleep(500);
    writeFileSync(CONFIG, JSON.stringify(config([1, 1, 1, 1]), null, 2)); // the file as it runs, for the next turn
  }
}

// ------------------------------------------------------------------------------------------------
// Run
// ------------------------------------------------------------------------------------------------

let END = performance.now() + MINUTES * 60_000;
const LB_LOG = join(TMP, 'sessionlb.log');
/** The end of sessionlb's event log: its warnings and errors (pino levels 40+) and its last lines. */
function logTail(lines = 30) {
  let text = '';
  try { text = readFileSync(LB_LOG, 'utf8'); } catch { return '(no log)'; }
  const all = text.split('\n').filter((l) => l !== '');
  const bad = all.filter((l) => /"level":(40|50|60)/.test(l) || !l.startsWith('{'));
  return [...new Set([...bad.slice(-lines), ...all.slice(-10)])].join('\n');
}
let stoppingLb = false;
let crashed = null;
void lb.exited.then(({ code, signal }) => {
  if (stoppingLb) return;
  crashed = { at: Number(now().toFixed(1)), code, signal };
  note(`SESSIONLB EXITED (code ${code}, signal ${signal})`);
  out(`soak: sessionlb exited by itself at ${crashed.at} s (code ${code}, signal ${signal}); stopping the load. Its log:\n${logTail()}`);
  END = Math.min(END, performance.now());
});
const totals = { requests: 0, errors: {}, byKind: {}, moved: 0, latencies: [], fast: [] };
const freshInterval = () => ({ requests: 0, errors: {}, moved: 0, latencies: [], fast: [], faults: [], rssMax: 0, circuitMax: 0 });
interval = freshInterval();
const rows = [];
const rssSeries = [];

async function worker() {
  while (performance.now() < END) {
    const kind = pick();
    const r = await one(kind);
    totals.requests++;
    interval.requests++;
    interval.latencies.push(r.ms);
    if (kind !== 'slow') interval.fast.push(r.ms);
    if (totals.latencies.length < 2_000_000) {
      totals.latencies.push(r.ms);
      if (kind !== 'slow') totals.fast.push(r.ms);
    }
    const k = (totals.byKind[kind] ??= { requests: 0, errors: 0 });
    k.requests++;
    if (r.error !== undefined) {
      k.errors++;
      const cause = `${r.error} [${kind}]`;
      totals.errors[cause] = (totals.errors[cause] ?? 0) + 1;
      interval.errors[cause] = (interval.errors[cause] ?? 0) + 1;
    }
    if (r.moved) {
      totals.moved++;
      interval.moved++;
    }
  }
}

const maxOf = (arr) => arr.reduce((m, v) => (v > m ? v : m), 0);
const pct = (arr, p) => {
  if (arr.length === 0) return 0;
  const s = Float64Array.from(arr).sort();
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
};

async function sampler() {
  while (performance.now() < END) {
    const rss = await rssMiB();
    rssSeries.push({ at: now(), rss });
    interval.rssMax = Math.max(interval.rssMax, rss);
    const c = await circuitOpen();
    if (!Number.isNaN(c)) interval.circuitMax = Math.max(interval.circuitMax, c);
    await sleep(1000);
  }
}

async function reporter() {
  let last = performance.now();
  let lastLbCpu = cpuSeconds(lb.pid);
  let lastSelfCpu = process.cpuUsage();
  let lastStoreErrors = await metricSum('sessionlb_session_store_errors_total');
  while (performance.now() < END) {
    const wake = performance.now() + REPORT_EVERY_S * 1000;
    while (performance.now() < Math.min(wake, END)) await sleep(Math.min(500, Math.max(1, Math.min(wake, END) - performance.now())));
    const i = interval;
    interval = freshInterval();
    const secs = (performance.now() - last) / 1000;
    last = performance.now();
    const rss = await rssMiB();
    const lbCpu = cpuSeconds(lb.pid);
    const selfCpu = process.cpuUsage();
    const lbCpuPct = Math.round((100 * (lbCpu - lastLbCpu)) / secs);
    const selfCpuPct = Math.round((selfCpu.user + selfCpu.system - lastSelfCpu.user - lastSelfCpu.system) / 1e4 / secs);
    lastLbCpu = lbCpu;
    lastSelfCpu = selfCpu;
    const storeErrors = await metricSum('sessionlb_session_store_errors_total');
    const storeErrorsDelta = storeErrors - lastStoreErrors;
    lastStoreErrors = storeErrors;
    const row = {
      lbCpuPct, loadCpuPct: selfCpuPct, storeErrors: storeErrorsDelta,
      t: Number(now().toFixed(0)), requests: i.requests, rps: Math.round(i.requests / secs), errors: i.errors, moved: i.moved,
      p50: pct(i.latencies, 50), p99: pct(i.latencies, 99), p99fast: pct(i.fast, 99), max: maxOf(i.latencies),
      rss, rssMax: Math.max(i.rssMax, rss), circuitMax: i.circuitMax, faults: i.faults,
    };
    rows.push(row);
    const errs = Object.entries(row.errors).map(([k, v]) => `${k} x${v}`).join(', ') || 'none';
    out(`[${String(row.t).padStart(4)} s] requests ${row.requests} (${row.rps}/s), errors: ${errs}; moved sessions ${row.moved}; `
      + `p50 ${row.p50.toFixed(1)} ms, p99 ${row.p99.toFixed(1)} ms (without /slow ${row.p99fast.toFixed(1)}), max ${row.max.toFixed(0)} ms; RSS ${row.rss.toFixed(0)} MiB (max ${row.rssMax.toFixed(0)}); `
      + `CPU sessionlb ${row.lbCpuPct}% (primary), load generator ${row.loadCpuPct}%; store errors ${row.storeErrors}, circuit ${row.circuitMax}; faults: ${row.faults.join('; ') || '-'}`);
  }
}

async function faults() {
  if (NO_FAULTS) return;
  await sleep(Math.min(FAULT_EVERY_S * 1000, 10_000)); // a healthy start first
  while (performance.now() < END - 8000) {
    const started = performance.now();
    await fault();
    const wait = FAULT_EVERY_S * 1000 - (performance.now() - started);
    if (wait > 0) await sleep(Math.min(wait, Math.max(0, END - 8000 - performance.now())));
  }
}

out(`soak: ${MINUTES} min, ${CONCURRENCY} clients, sessionlb pid ${lb.pid} (workers ${WORKERS}) on 127.0.0.1:${PORT}, 4 backends, memcached pid ${memcached.child.pid} `
  + `(store timeout ${STORE_TIMEOUT_MS} ms), a fault every ${FAULT_EVERY_S} s, a report every ${REPORT_EVERY_S} s`);
await Promise.all([...Array.from({ length: CONCURRENCY }, worker), sampler(), reporter(), faults()]);
agent.destroy();

// Every faulted process is back (faults() finishes its turn); SIGTERM sessionlb: it must exit 0.
for (const b of backends) b.signal('SIGCONT');
const stopStarted = performance.now();
stoppingLb = true;
await stopChild(lb, 'SIGTERM', 20_000);
const exit = { code: lb.exitCode, signal: lb.signalCode, ms: Math.round(performance.now() - stopStarted) };
for (const b of backends) await b.kill();
await stopChild(memcached.child, 'SIGKILL');

const errorsTotal = Object.values(totals.errors).reduce((n, v) => n + v, 0);
const rssValues = rssSeries.map((s) => s.rss).filter((v) => v > 0);
const firstMinute = rssSeries.filter((s) => s.at <= 60).map((s) => s.rss);
const lastMinute = rssSeries.filter((s) => s.at >= now() - 60).map((s) => s.rss);
const avg = (a) => (a.length ? a.reduce((x, y) => x + y, 0) / a.length : 0);
const summary = {
  minutes: MINUTES, concurrency: CONCURRENCY, workers: WORKERS,
  requests: totals.requests, errors: errorsTotal, errorRate: totals.requests ? errorsTotal / totals.requests : 0,
  errorsByCause: totals.errors, byKind: totals.byKind, movedSessions: totals.moved,
  p50: pct(totals.latencies, 50), p99: pct(totals.latencies, 99), p99WithoutSlow: pct(totals.fast, 99), max: maxOf(totals.latencies),
  rss: { min: rssValues.reduce((m, v) => Math.min(m, v), Infinity), max: maxOf(rssValues), firstMinuteAvg: avg(firstMinute), lastMinuteAvg: avg(lastMinute) },
  faults: faultLog.length, sigtermExit: exit, crashed, rows,
};
out('');
out('## soak summary');
out(`- ${MINUTES} min, ${CONCURRENCY} clients, workers ${WORKERS}: ${summary.requests} requests, ${errorsTotal} errors (${(summary.errorRate * 100).toFixed(3)}%), `
  + `${totals.moved} session moves`);
out(`- latency: p50 ${summary.p50.toFixed(1)} ms, p99 ${summary.p99.toFixed(1)} ms (without the 200 ms /slow requests: ${summary.p99WithoutSlow.toFixed(1)} ms), max ${summary.max.toFixed(0)} ms`);
out(`- RSS: ${summary.rss.min.toFixed(0)}-${summary.rss.max.toFixed(0)} MiB (first minute avg ${summary.rss.firstMinuteAvg.toFixed(0)}, last minute avg ${summary.rss.lastMinuteAvg.toFixed(0)})`);
out(crashed === null
  ? `- faults injected: ${faultLog.length} events; SIGTERM at the end: exit ${exit.code} (signal ${exit.signal}) after ${exit.ms} ms`
  : `- faults injected: ${faultLog.length} events; SESSIONLB EXITED BY ITSELF at ${crashed.at} s (code ${crashed.code}, signal ${crashed.signal}): the run was cut short`);
out('- errors by cause [request kind]:');
for (const [k, v] of Object.entries(totals.errors).sort((x, y) => y[1] - x[1])) out(`  - ${k}: ${v}`);
if (errorsTotal === 0) out('  - none');
out('- requests by kind: ' + Object.entries(totals.byKind).map(([k, v]) => `${k} ${v.requests} (${v.errors} errors)`).join(', '));
out('');
out('| t (s) | requests | req/s | errors | p99 ms | p99 w/o /slow | max ms | RSS MiB | sessionlb CPU % | store errors | circuit | faults |');
out('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|');
for (const r of rows) {
  const e = Object.values(r.errors).reduce((n, v) => n + v, 0);
  out(`| ${r.t} | ${r.requests} | ${r.rps} | ${e} | ${r.p99.toFixed(1)} | ${r.p99fast.toFixed(1)} | ${r.max.toFixed(0)} | ${r.rss.toFixed(0)} | ${r.lbCpuPct} | ${r.storeErrors} | ${r.circuitMax} | ${r.faults.join('; ') || '-'} |`);
}
if (crashed !== null || exit.code !== 0) out(`\nsessionlb's log (warnings, errors, last lines):\n${logTail()}`);
if (JSON_OUT) writeFileSync(JSON_OUT, JSON.stringify(summary, null, 2));
finished = true;
killAllNow();
cleanupTmp();
process.exit(exit.code === 0 && crashed === null ? 0 : 1);
