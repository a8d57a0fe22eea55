/**
 * Helpers of the fault and abuse suite (issue 14; test/faults-*.test.ts): backends in child
 * processes (killed, SIGSTOPped, restarted by their PID), raw-socket backends that misbehave
 * (silent, garbage, reset mid-body), sessionlb as a child process (`dist/cli.js run`), a bounded
 * load loop that classifies every failure by cause, and a streamed upload with a running hash.
 *
 * Everything listens on 127.0.0.1; every process started here is killed by its own PID in the
 * cleanup the caller registers (`cleanup.push(...)` of test/helpers/scope.ts).
 */
import http from 'node:http';
import net from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { freePort, request } from './net.js';
import { startProxyProcess, writeConfig, type RunningChild } from './child.js';
import { scrape, sum, type Sample } from './prom.js';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every `everyMs` until true or `timeoutMs` passed; returns whether it became true. */
export async function until(check: () => boolean | Promise<boolean>, timeoutMs = 10_000, everyMs = 25): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return true;
    await sleep(everyMs);
  }
  return check();
}

/** The p-th percentile (0..100) of `values` (nearest rank); 0 for none. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

// ---------------------------------------------------------------------------------------------
// Backends in child processes
// ---------------------------------------------------------------------------------------------

/**
 * A node HTTP backend in its own process (so that it can be SIGKILLed or SIGSTOPped by PID).
 * argv: name, port, options JSON (`delay` for every request, `trickle` and `trickleMs` for /big). Reads the whole body, then answers "<name> <bytes received>" with
 * `X-Backend: <name>`; `/big` answers 256 KiB; `?delay=MS` waits before answering;
 * `?trickle=N` sends the body in N pieces 50 ms (`trickleMs`) apart; `/session...` sets a PHP-like
 * PHPSESSID when the request has none.
 */
const BACKEND_SCRIPT = `
const http = require('node:http');
const crypto = require('node:crypto');
const [name, port, optionsJson] = process.argv.slice(1);
const options = JSON.parse(optionsJson || '{}');
const big = Buffer.alloc(256 * 1024, 98);
const alphabet = '0123456789abcdefghijklmnopqrstuv';
const newId = () => { let s = ''; for (const b of crypto.randomBytes(26)) s += alphabet[b & 31]; return s; };
const server = http.createServer((req, res) => {
  let n = 0;
  req.on('data', (c) => { n += c.length; });
  req.on('end', () => {
    const url = new URL(req.url, 'http://x');
    const delay = Number(url.searchParams.get('delay') || options.delay || 0);
    const trickle = Number(url.searchParams.get('trickle') || (url.pathname.startsWith('/big') ? options.trickle : 0) || 0);
    const trickleMs = Number(options.trickleMs || 50);
    const send = () => {
      const headers = { 'X-Backend': name, 'Content-Type': 'text/plain' };
      if (url.pathname.startsWith('/session') && !/(?:^|;\\s*)PHPSESSID=/.test(req.headers.cookie || '')) {
        headers['Set-Cookie'] = 'PHPSESSID=' + newId() + '; path=/; HttpOnly';
      }
      const body = url.pathname.startsWith('/big') ? big : Buffer.from(name + ' ' + n);
      headers['Content-Length'] = String(body.length);
      res.writeHead(200, headers);
      if (trickle <= 1) { res.end(body); return; }
      const piece = Math.ceil(body.length / trickle);
      let off = 0;
      const next = () => {
        if (res.destroyed) return;
        const end = Math.min(body.length, off + piece);
        const last = end >= body.length;
        if (last) res.end(body.subarray(off, end)); else res.write(body.subarray(off, end));
        off = end;
        if (!last) setTimeout(next, trickleMs);
      };
      next();
    };
    if (delay > 0) setTimeout(send, delay); else send();
  });
});
server.keepAliveTimeout = 120000;
server.listen(Number(port), '127.0.0.1', () => process.stdout.write('ready\\n'));
`;

export class ChildBackend {
  proc: ChildProcess | null = null;
  readonly address: string;

  constructor(readonly name: string, readonly port: number, readonly options: { delay?: number; trickle?: number; trickleMs?: number } = {}) {
    this.address = `127.0.0.1:${port}`;
  }

  get pid(): number {
    return this.proc!.pid!;
  }

  get running(): boolean {
    return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Starts (or starts again, on the same port) and waits until it listens (10 s at most). */
  async start(): Promise<void> {
    const proc = spawn(process.execPath, ['-e', BACKEND_SCRIPT, this.name, String(this.port), JSON.stringify(this.options)], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    let err = '';
    proc.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`backend ${this.name} did not start: ${err}`)), 10_000);
      proc.stdout!.once('data', () => { clearTimeout(timer); resolve(); });
      proc.once('exit', (code) => { clearTimeout(timer); reject(new Error(`backend ${this.name} exited (${code}): ${err}`)); });
    });
    proc.removeAllListeners('exit');
    proc.stdout!.resume();
  }

  /** Sends `signal` to this backend's PID (SIGCONT first for SIGKILL, so a stopped process dies at once) and waits for the exit. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const proc = this.proc;
    if (proc === null || !this.running) return;
    const gone = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    process.kill(proc.pid!, 'SIGCONT');
    process.kill(proc.pid!, signal);
    await gone;
  }

  pause(): void {
    if (this.running) process.kill(this.pid, 'SIGSTOP');
  }

  resume(): void {
    if (this.running) process.kill(this.pid, 'SIGCONT');
  }
}

/** Starts child-process backends; their kill is pushed on `cleanup`. */
export async function childBackends(
  names: string[], cleanup: (() => Promise<void>)[], options: Record<string, { delay?: number; trickle?: number; trickleMs?: number }> = {},
): Promise<ChildBackend[]> {
  const out: ChildBackend[] = [];
  for (const name of names) {
    const b = new ChildBackend(name, await freePort(), options[name]);
    cleanup.push(() => b.kill());
    await b.start();
    out.push(b);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Raw-socket backends that misbehave
// ---------------------------------------------------------------------------------------------

export interface RawBackend {
  address: string;
  port: number;
  /** Connections accepted so far. */
  connections: number;
  /** Request heads received so far. */
  requests: string[];
}

/**
 * A TCP server on loopback; `onRequest(head, socket, n)` is called for each request head
 * (requests here carry no body) and `onConnect(socket, n)` on each connection. Closed by cleanup.
 */
export async function rawBackend(
  cleanup: (() => Promise<void>)[],
  handlers: { onConnect?: (socket: net.Socket, n: number) => void; onRequest?: (head: string, socket: net.Socket, n: number) => void },
): Promise<RawBackend> {
  const sockets = new Set<net.Socket>();
  const port = await freePort();
  const rb: RawBackend = { address: `127.0.0.1:${port}`, port, connections: 0, requests: [] };
  const server = net.createServer((socket) => {
    const n = rb.connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    handlers.onConnect?.(socket, n);
    let buf = '';
    socket.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        rb.requests.push(head);
        handlers.onRequest?.(head, socket, n);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  cleanup.push(() => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  }));
  return rb;
}

// ---------------------------------------------------------------------------------------------
// sessionlb as a child process
// ---------------------------------------------------------------------------------------------

export interface LBChild extends RunningChild {
  port: number;
  adminPort: number;
  url: string;
  file: string;
  /** Rewrites the config file (object or raw text). */
  write(config: Record<string, unknown> | string): void;
  metrics(): Promise<Sample[]>;
  status(): Promise<StatusDoc>;
}

export interface StatusServer {
  address: string;
  state: string;
  requests: number;
  failures: number;
  fails: number;
  active: number;
}

export interface StatusDoc {
  reloads: { success: number; failure: number };
  upstreams: Record<string, { servers: StatusServer[] }>;
  workers?: Array<{ id: number; pid: number; answered: boolean }>;
}

/**
 * Starts `node dist/cli.js run` on a config built by `make(port, adminPort)` (written to a temp
 * file), waits until the port accepts and (with workers) every worker answers; killed by PID in cleanup.
 */
export async function startLBChild(
  cleanup: (() => Promise<void>)[],
  make: (port: number, adminPort: number) => Record<string, unknown>,
): Promise<LBChild> {
  const port = await freePort();
  const adminPort = await freePort();
  const config = make(port, adminPort);
  const file = writeConfig(config);
  const running = await startProxyProcess(file, port);
  cleanup.push(() => running.kill());
  const admin = `http://127.0.0.1:${adminPort}`;
  const child: LBChild = {
    ...running,
    port,
    adminPort,
    url: `http://127.0.0.1:${port}`,
    file,
    write: (c) => writeFileSync(file, typeof c === 'string' ? c : JSON.stringify(c, null, 2)),
    metrics: () => scrape(adminPort),
    status: async () => JSON.parse((await request(`${admin}/status`)).body) as StatusDoc,
  };
  const workers = typeof config.workers === 'number' ? config.workers : 1;
  if (workers > 1) {
    const ready = await until(async () => {
      const s = await child.status().catch(() => null);
      return (s?.workers ?? []).filter((w) => w.answered).length === workers;
    }, 15_000, 50);
    if (!ready) throw new Error(`sessionlb workers did not all start: ${running.stderr().slice(-2000)}`);
  }
  return child;
}

/** A server's entry in /status. */
export async function serverState(lb: LBChild, upstream: string, address: string): Promise<StatusServer | undefined> {
  return (await lb.status()).upstreams[upstream]?.servers.find((s) => s.address === address);
}

/** Samples `read()` every `everyMs` in the background until stopped: what a gauge went through. */
export function watch(read: () => Promise<number>, everyMs = 50): { values: number[]; stop(): Promise<number[]> } {
  const values: number[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const v = await read().catch(() => NaN);
      if (!Number.isNaN(v)) values.push(v);
      await sleep(everyMs);
    }
  })();
  return { values, stop: async () => { running = false; await loop; return values; } };
}

/** The sum of a metric's series matching `labels`, scraped now. */
export async function metric(lb: LBChild, name: string, labels: Record<string, string> = {}): Promise<number> {
  return sum(await lb.metrics(), name, labels);
}

// ---------------------------------------------------------------------------------------------
// A bounded load loop
// ---------------------------------------------------------------------------------------------

export interface Spec {
  path?: string;
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Anything the caller wants back with the shot. */
  tag?: string;
}

export interface Shot {
  i: number;
  tag?: string;
  status: number;
  ms: number;
  /** performance.now() when it was sent / when it finished. */
  startedAt: number;
  endedAt: number;
  backend: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** Set when the request failed: the cause (`status 502`, `ECONNRESET`, `incomplete body`, a check's message...). */
  failure?: string;
}

export interface LoadOptions {
  url: string;
  total: number;
  concurrency: number;
  /** No new request after this long (the loop is bounded in time as well as in count). */
  timeLimitMs: number;
  spec?: (i: number) => Spec;
  /** Extra validation of a 200: a failure cause, or null. */
  check?: (shot: Shot) => string | null;
  /** Called with every finished shot (e.g. to trigger a fault at the right moment). */
  onShot?: (shot: Shot) => void;
  /** Stop issuing requests when this returns true. */
  stop?: () => boolean;
  requestTimeoutMs?: number;
  keepAlive?: boolean;
}

export interface LoadResult {
  shots: Shot[];
  requests: number;
  failed: number;
  /** Failures by cause. */
  failures: Record<string, number>;
  p50: number;
  p99: number;
  max: number;
  elapsedMs: number;
  /** Requests per backend (X-Backend of the 200s). */
  byBackend: Record<string, number>;
}

/** One request; never rejects: failures are in `shot.failure`. */
export function shoot(url: string, spec: Spec, agent: http.Agent | false, i: number, timeoutMs: number): Promise<Shot> {
  const startedAt = performance.now();
  return new Promise((resolve) => {
    let settled = false;
    const done = (partial: Partial<Shot>): void => {
      if (settled) return;
      settled = true;
      const endedAt = performance.now();
      resolve({
        i, tag: spec.tag, status: 0, backend: '', headers: {}, body: Buffer.alloc(0), ...partial, startedAt, endedAt, ms: endedAt - startedAt,
      });
    };
    const headers: Record<string, string> = { ...spec.headers };
    if (spec.body !== undefined && headers['Content-Length'] === undefined && headers['Transfer-Encoding'] === undefined) {
      headers['Content-Length'] = String(Buffer.byteLength(spec.body));
    }
    const req = http.request(`${url}${spec.path ?? '/'}`, { agent, method: spec.method ?? 'GET', headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      const finish = (err?: Error): void => {
        const body = Buffer.concat(chunks);
        const status = res.statusCode ?? 0;
        const base = { status, headers: res.headers, body, backend: String(res.headers['x-backend'] ?? '') };
        if (err !== undefined || !res.complete) done({ ...base, failure: `incomplete body (${err?.message ?? 'closed'})` });
        else if (status !== 200) done({ ...base, failure: `status ${status}` });
        else done(base);
      };
      res.on('end', () => finish());
      res.on('error', (err) => finish(err));
      res.on('close', () => finish(new Error('closed early')));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error('client timeout')));
    req.on('error', (err: NodeJS.ErrnoException) => done({ failure: err.code ?? err.message }));
    req.end(spec.body);
  });
}

/** Runs `total` requests with `concurrency` in flight (keep-alive by default), bounded by `timeLimitMs`. */
export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const agent = o.keepAlive === false ? false : new http.Agent({ keepAlive: true, maxSockets: o.concurrency });
  const shots: Shot[] = [];
  const started = performance.now();
  const deadline = Date.now() + o.timeLimitMs;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < o.total && Date.now() < deadline && !(o.stop?.() ?? false)) {
      const i = next++;
      const shot = await shoot(o.url, o.spec?.(i) ?? {}, agent, i, o.requestTimeoutMs ?? 15_000);
      if (shot.failure === undefined && o.check !== undefined) {
        const problem = o.check(shot);
        if (problem !== null) shot.failure = problem;
      }
      shots.push(shot);
      o.onShot?.(shot);
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, worker));
  if (agent !== false) agent.destroy();
  return summarize(shots, performance.now() - started);
}

export function summarize(shots: Shot[], elapsedMs: number): LoadResult {
  const failures: Record<string, number> = {};
  const byBackend: Record<string, number> = {};
  for (const s of shots) {
    if (s.failure !== undefined) failures[s.failure] = (failures[s.failure] ?? 0) + 1;
    else if (s.backend !== '') byBackend[s.backend] = (byBackend[s.backend] ?? 0) + 1;
  }
  const ms = shots.map((s) => s.ms);
  return {
    shots,
    requests: shots.length,
    failed: shots.filter((s) => s.failure !== undefined).length,
    failures,
    p50: percentile(ms, 50),
    p99: percentile(ms, 99),
    max: ms.length === 0 ? 0 : Math.max(...ms),
    elapsedMs,
    byBackend,
  };
}

/** One line for the console: what the lead copies into the closing note. */
export function report(label: string, r: LoadResult, extra: Record<string, unknown> = {}): string {
  const parts = [
    `requests ${r.requests}`, `failed ${r.failed}${r.failed > 0 ? ` ${JSON.stringify(r.failures)}` : ''}`,
    `p50 ${r.p50.toFixed(1)} ms`, `p99 ${r.p99.toFixed(1)} ms`, `max ${r.max.toFixed(1)} ms`,
    ...Object.entries(extra).map(([k, v]) => `${k} ${typeof v === 'string' ? v : JSON.stringify(v)}`),
  ];
  const line = `[faults] ${label}: ${parts.join(', ')}`;
  console.info(line);
  return line;
}

/** Resident set size in MiB from /proc/PID/status, or NaN. */
export function rssMiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

// ---------------------------------------------------------------------------------------------
// A large streamed upload
// ---------------------------------------------------------------------------------------------

export interface UploadResult {
  status: number;
  body: string;
  sent: number;
  sha256: string;
  error?: string;
}

/**
 * Streams `total` bytes to `url` (POST; `Content-Length`, or chunked when `chunked`), generated
 * block by block (64 KiB, each numbered, so a lost, repeated or reordered block changes the hash)
 * and hashed as sent; nothing is held beyond one block. `onProgress(sent)` after each block;
 * when `gate(sent)` returns a promise, sending waits for it.
 */
export function upload(
  url: string, total: number,
  opts: { chunked?: boolean; onProgress?: (sent: number) => void; gate?: (sent: number) => Promise<void> | null; timeoutMs?: number } = {},
): Promise<UploadResult> {
  const seed = randomBytes(64 * 1024);
  const hash = createHash('sha256');
  return new Promise((resolve) => {
    let sent = 0;
    let settled = false;
    const done = (r: Omit<UploadResult, 'sent' | 'sha256'>): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ ...r, sent, sha256: hash.digest('hex') });
    };
    const headers: Record<string, string> = opts.chunked === true
      ? { 'Transfer-Encoding': 'chunked', 'Content-Type': 'application/octet-stream' }
      : { 'Content-Length': String(total), 'Content-Type': 'application/octet-stream' };
    const req = http.request(url, { method: 'POST', agent: false, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => done({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      res.on('error', (err) => done({ status: res.statusCode ?? 0, body: '', error: err.message }));
    });
    const timer = setTimeout(() => req.destroy(new Error('upload timed out')), opts.timeoutMs ?? 120_000);
    req.on('error', (err) => done({ status: 0, body: '', error: err.message }));
    let block = 0;
    const pump = (): void => {
      while (sent < total) {
        const size = Math.min(seed.length, total - sent);
        const b = Buffer.from(seed.subarray(0, size));
        if (size >= 8) b.writeBigUInt64BE(BigInt(block), 0);
        block++;
        hash.update(b);
        sent += size;
        opts.onProgress?.(sent);
        const wrote = req.write(b);
        const held = opts.gate?.(sent) ?? null;
        if (held !== null) {
          // Paused here until the caller lets it go (e.g. until a reload has happened).
          void held.then(() => (req.writableNeedDrain ? req.once('drain', pump) : pump()));
          return;
        }
        if (!wrote) {
          req.once('drain', pump);
          return;
        }
      }
      req.end();
    };
    pump();
  });
}

/** A backend (in this process) that hashes what it receives and answers `{"bytes": N, "sha256": "..."}`. */
export async function hashingBackend(cleanup: (() => Promise<void>)[]): Promise<{ address: string; received: () => number }> {
  let received = 0;
  const server = http.createServer((req, res) => {
    const hash = createHash('sha256');
    let bytes = 0;
    req.on('data', (c: Buffer) => { bytes += c.length; received += c.length; hash.update(c); });
    req.on('end', () => {
      const body = JSON.stringify({ bytes, sha256: hash.digest('hex') });
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  cleanup.push(() => new Promise<void>((resolve) => { server.close(() => resolve()); server.closeAllConnections(); }));
  return { address: `127.0.0.1:${port}`, received: () => received };
}

/** Can a new TCP connection be made to 127.0.0.1:port (refused = false; a connection that is accepted but never served still counts as true). */
export function connects(port: number, timeoutMs = 1000): Promise<'connected' | 'refused' | 'timeout'> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const timer = setTimeout(() => { s.destroy(); resolve('timeout'); }, timeoutMs);
    s.once('connect', () => { clearTimeout(timer); s.destroy(); resolve('connected'); });
    s.once('error', () => { clearTimeout(timer); resolve('refused'); });
  });
}
