/**
 * `streams`: the TCP (L4) proxy (nginx `stream {}`), in-process, with real TCP backends on
 * loopback. Every load is bounded in count and time; no timing assertions beyond generous bounds.
 */
import net from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { SessionLB } from '../src/runtime/sessionlb.js';
import { silentLog } from '../src/observability/log.js';
import { freePort, request, tally } from './helpers/net.js';
import { captureLog, waitFor } from './helpers/capture-log.js';
import { parseMetrics, sum } from './helpers/prom.js';
import { configProblems } from './helpers/config.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

interface TcpBackend {
  name: string;
  port: number;
  address: string;
  server: net.Server;
  connections: number;
}

/**
 * A TCP backend. `mode`: "name" writes its name and a newline, then echoes; "echo" echoes;
 * "count" reads until the client's FIN, then answers how many bytes it got and ends.
 */
async function tcpBackend(name: string, mode: 'name' | 'echo' | 'count' = 'name'): Promise<TcpBackend> {
  const port = await freePort();
  const b: TcpBackend = { name, port, address: `127.0.0.1:${port}`, server: undefined as unknown as net.Server, connections: 0 };
  const sockets = new Set<net.Socket>();
  b.server = net.createServer({ allowHalfOpen: true }, (socket) => {
    b.connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    if (mode === 'count') {
      let n = 0;
      socket.on('data', (d: Buffer) => { n += d.length; });
      socket.on('end', () => socket.end(`got ${n} bytes from ${name}`));
      return;
    }
    if (mode === 'name') socket.write(`${name}\n`);
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => b.server.listen(port, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    b.server.close(() => resolve());
  }));
  return b;
}

async function startStreamLB(raw: Record<string, unknown>): Promise<{ lb: SessionLB; adminPort: number }> {
  const adminPort = await freePort();
  const lb = new SessionLB(await loadConfig({ admin: { listen: `127.0.0.1:${adminPort}` }, ...raw }, '<test>'), { log: silentLog() });
  await lb.start();
  cleanups.push(() => lb.stop(2000));
  return { lb, adminPort };
}

/** Connects, reads the first line the backend writes (its name), closes. */
function firstLine(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        s.end();
        resolve(buf.slice(0, nl));
      }
    });
    s.on('error', reject);
    s.on('close', () => resolve(buf === '' ? '<closed>' : buf));
  });
}

/** A client that keeps a connection open: write, then read `n` bytes back. */
class Client {
  readonly socket: net.Socket;
  private buf = Buffer.alloc(0);
  private waiting: { n: number; resolve: (b: Buffer) => void } | null = null;
  closed: Promise<void>;

  constructor(port: number) {
    this.socket = net.connect({ port, host: '127.0.0.1' });
    this.socket.on('error', () => undefined);
    this.socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.check();
    });
    this.closed = new Promise((resolve) => this.socket.once('close', () => resolve()));
    cleanups.push(() => { this.socket.destroy(); });
  }

  private check(): void {
    if (this.waiting !== null && this.buf.length >= this.waiting.n) {
      const out = this.buf.subarray(0, this.waiting.n);
      this.buf = this.buf.subarray(this.waiting.n);
      const w = this.waiting;
      this.waiting = null;
      w.resolve(out);
    }
  }

  read(n: number): Promise<Buffer> {
    return new Promise((resolve) => {
      this.waiting = { n, resolve };
      this.check();
    });
  }

  async roundTrip(text: string): Promise<string> {
    this.socket.write(text);
    return (await this.read(Buffer.byteLength(text))).toString();
  }
}

describe('streams: balancing and failover', () => {
  it('spreads connections by weight (3,1,1,1 over 60 sessions: exactly 30/10/10/10) and counts them in /metrics', async () => {
    const bs = await Promise.all(['a', 'b', 'c', 'd'].map((n) => tcpBackend(n)));
    const port = await freePort();
    const { adminPort } = await startStreamLB({
      streams: [{ listen: [`127.0.0.1:${port}`], proxyPass: 'pool' }],
      upstreams: { pool: { servers: bs.map((b, i) => ({ address: b.address, weight: i === 0 ? 3 : 1 })) } },
    });
    const seen: string[] = [];
    for (let i = 0; i < 60; i++) seen.push(await firstLine(port));
    expect(tally(seen)).toEqual({ a: 30, b: 10, c: 10, d: 10 });

    const listen = `127.0.0.1:${port}`;
    await waitFor(async () => {
      const m = parseMetrics((await request(`http://127.0.0.1:${adminPort}/metrics`)).body);
      return sum(m, 'sessionlb_stream_sessions_total', { listen, upstream: 'pool', status: '200' }) === 60;
    }, 5000);
    const m = parseMetrics((await request(`http://127.0.0.1:${adminPort}/metrics`)).body);
    expect(sum(m, 'sessionlb_stream_sessions_total', { listen, upstream: 'pool', status: '200' })).toBe(60);
    // Each backend wrote "x\n" (2 bytes) to each client; clients sent nothing.
    expect(sum(m, 'sessionlb_stream_bytes_total', { listen, direction: 'sent' })).toBe(120);
    expect(sum(m, 'sessionlb_stream_bytes_total', { listen, direction: 'received' })).toBe(0);
    expect(sum(m, 'sessionlb_upstream_active_connections', { upstream: 'pool' })).toBe(0);
    const status = JSON.parse((await request(`http://127.0.0.1:${adminPort}/status`)).body) as { streams: unknown };
    expect(status.streams).toEqual([{ listen: [listen], upstream: 'pool', proxyConnectTimeoutMs: 60_000, proxyTimeoutMs: 600_000 }]);
  });

  it('a session holds its server for its whole life: maxConns and active connections count sessions', async () => {
    const a = await tcpBackend('a');
    const b = await tcpBackend('b');
    const port = await freePort();
    const { lb } = await startStreamLB({
      streams: [{ listen: [`127.0.0.1:${port}`], proxyPass: 'pool' }],
      upstreams: { pool: { servers: [{ address: a.address, weight: 10, maxConns: 1 }, { address: b.address }] } },
    });
    const first = new Client(port);
    expect((await first.read(2)).toString()).toBe('a\n');
    // a is at maxConns while the first session lasts: the next ones go to b.
    expect(await firstLine(port)).toBe('b');
    expect(await firstLine(port)).toBe('b');
    const peerA = lb.upstreams.get('pool')!.find(a.address)!;
    expect(peerA.active).toBe(1);
    first.socket.end();
    await first.closed;
    await waitFor(() => peerA.active === 0, 5000);
    expect(peerA.active).toBe(0);
    expect(await firstLine(port)).toBe('a');
  });

  it('hash $remote_addr keeps a client on one server', async () => {
    const bs = await Promise.all(['a', 'b', 'c'].map((n) => tcpBackend(n)));
    const port = await freePort();
    await startStreamLB({
      streams: [{ listen: [`127.0.0.1:${port}`], proxyPass: 'pool' }],
      upstreams: { pool: { balance: { hash: '$remote_addr', consistent: true }, servers: bs.map((b) => ({ address: b.address })) } },
    });
    const seen: string[] = [];
    for (let i = 0; i < 12; i++) seen.push(await firstLine(port));
    expect(Object.keys(tally(seen))).toHaveLength(1);
  });

  it('moves on to the next server when one refuses, marks it failed (maxFails), logs 502 only when none is left', async () => {
    const good = await tcpBackend('good');
    const deadPort = await freePort(); // nothing listens there: connections are refused
    const port = await freePort();
    const noRetryPort = await freePort();
    const dir = await mkdtemp(join(tmpdir(), 'sessionlb-stream-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const logFile = join(dir, 'access.log');
    const { lb, adminPort } = await startStreamLB({
      accessLog: { path: logFile },
      streams: [
        { listen: [`127.0.0.1:${port}`], proxyPass: 'pool' },
        { listen: [`127.0.0.1:${noRetryPort}`], proxyPass: `127.0.0.1:${deadPort}`, nextUpstream: false },
      ],
      upstreams: {
        pool: { servers: [{ address: `127.0.0.1:${deadPort}`, weight: 5, maxFails: 1, failTimeout: '30s' }, { address: good.address }] },
      },
    });
    // The dead one has the larger weight: it is picked first, refuses, and the session goes to the good one.
    const seen: string[] = [];
    for (let i = 0; i < 10; i++) seen.push(await firstLine(port));
    expect(tally(seen)).toEqual({ good: 10 });
    const dead = lb.upstreams.get('pool')!.find(`127.0.0.1:${deadPort}`)!;
    expect(dead.status(Date.now())).toBe('failed');
    expect(dead.state.failedRequests).toBe(1); // marked failed after one refusal, then skipped for failTimeout

    // No next upstream: the client connection is closed (status 502).
    expect(await firstLine(noRetryPort)).toBe('<closed>');

    const m = parseMetrics((await request(`http://127.0.0.1:${adminPort}/metrics`)).body);
    expect(sum(m, 'sessionlb_upstream_failures_total', { upstream: 'pool', server: `127.0.0.1:${deadPort}`, reason: 'refused' })).toBe(1);
    expect(sum(m, 'sessionlb_stream_sessions_total', { listen: `127.0.0.1:${noRetryPort}`, status: '502' })).toBe(1);

    await lb.stop(2000);
    const lines = (await readFile(logFile, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const first = lines.find((l) => l.server_port === port)!;
    expect(first).toMatchObject({
      remote_addr: '127.0.0.1', server_addr: '127.0.0.1', protocol: 'TCP', status: 200, bytes_sent: 5, bytes_received: 0,
      upstream_addr: `127.0.0.1:${deadPort}, ${good.address}`, upstream_name: 'pool',
    });
    expect(first.upstream_connect_time).toMatch(/^-, \d+\.\d{3}$/);
    expect(lines.find((l) => l.server_port === noRetryPort)).toMatchObject({ status: 502, upstream_addr: `127.0.0.1:${deadPort}` });
  });

  it('gives up on a server that does not answer within proxyConnectTimeout and tries the next', async () => {
    // A listener whose process never accepts (its event loop is blocked) and whose backlog is full: SYNs go unanswered.
    const blackholePort = await freePort();
    const child: ChildProcess = spawn(process.execPath, ['-e', `
      const s = require('node:net').createServer();
      s.listen({ port: ${blackholePort}, host: '127.0.0.1', backlog: 1 }, () => {
        process.stdout.write('ready\\n');
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60000);
      });`], { stdio: ['ignore', 'pipe', 'ignore'] });
    cleanups.push(() => { child.kill('SIGKILL'); }); // by PID: the process this test started
    await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
    const fillers: net.Socket[] = [];
    for (let i = 0; i < 4; i++) {
      const f = net.connect(blackholePort, '127.0.0.1');
      f.on('error', () => undefined);
      fillers.push(f);
    }
    cleanups.push(() => { for (const f of fillers) f.destroy(); });
    await new Promise((r) => setTimeout(r, 200));

    const good = await tcpBackend('good');
    const port = await freePort();
    const { lb } = await startStreamLB({
      streams: [{ listen: [`127.0.0.1:${port}`], proxyPass: 'pool', proxyConnectTimeout: '300ms' }],
      upstreams: { pool: { servers: [{ address: `127.0.0.1:${blackholePort}`, weight: 10 }, { address: good.address }] } },
    });
    const started = Date.now();
    expect(await firstLine(port)).toBe('good');
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(250);
    expect(took).toBeLessThan(5000);
    const hole = lb.upstreams.get('pool')!.find(`127.0.0.1:${blackholePort}`)!;
    expect(hole.status(Date.now())).toBe('failed');
    expect(hole.active).toBe(0);
  });
});

describe('streams: piping', () => {
  it('closes a session idle for proxyTimeout, not one that keeps talking', async () => {
    const echo = await tcpBackend('echo', 'echo');
    const port = await freePort();
    await startStreamLB({
      streams: [{ listen: [`127.0.0.1:${port}`], proxyPass: echo.address, proxyTimeout: '400ms' }],
    });
    const busy = new Client(port);
    const idle = new Client(port);
    expect(await idle.roundTrip('hello')).toBe('hello');
    const started = Date.now();
    // The busy one talks every 100 ms for ~1 s: more than twice the idle timeout.
    for (let i = 0; i < 10; i++) {
      expect(await busy.roundTrip(`ping ${i}`)).toBe(`ping ${i}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await idle.closed;
    const idleFor = Date.now() - started;
    expect(idleFor).toBeGreaterThanOrEqual(350);
    expect(idleFor).toBeLessThan(5000);
    expect(busy.socket.destroyed).toBe(false);
    expect(await busy.roundTrip('still here')).toBe('still here');
  });

  it('half-close: the client ends its side and still receives the reply', async () => {
    const counter = await tcpBackend('counter', 'count');
    const port = await freePort();
    await startStreamLB({ streams: [{ listen: [`127.0.0.1:${port}`], proxyPass: counter.address }] });
    const reply = await new Promise<string>((resolve, reject) => {
      const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
      let out = '';
      s.setEncoding('utf8');
      s.on('data', (d: string) => { out += d; });
      s.on('end', () => { s.end(); resolve(out); });
      s.on('error', reject);
      s.write('x'.repeat(1000));
      s.end('y'.repeat(24));
    });
    expect(reply).toBe('got 1024 bytes from counter');
  });

  it('a client that connects and closes at once (a TCP health check) leaves nothing open: its FIN reaches the server', async () => {
    // The FIN arrives while the proxy is still connecting upstream; node emits the client's 'end'
    // before the session listens for it. Lost, it left both connections open until proxyTimeout.
    const counter = await tcpBackend('counter', 'count');
    const port = await freePort();
    const { lb } = await startStreamLB({ streams: [{ listen: [`127.0.0.1:${port}`], proxyPass: counter.address }] });
    const replies = await Promise.all(Array.from({ length: 20 }, () => new Promise<string>((resolve, reject) => {
      const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }, () => s.end());
      let out = '';
      s.setEncoding('utf8');
      s.on('data', (d: string) => { out += d; });
      s.on('end', () => { s.end(); resolve(out); });
      s.on('error', reject);
    })));
    expect(replies).toEqual(Array(20).fill('got 0 bytes from counter'));
    expect(await waitFor(() => lb.streams.sessionCount() === 0, 5000)).toBe(true);
  }, 15_000);

  it('small and large reads in any mix keep their order both ways', async () => {
    // Reads up to 4 KiB are copied and written with the event-loop turn's other writes, larger ones
    // at once: sizes that straddle that limit, sent in bursts, must still arrive whole and in order.
    const echo = await tcpBackend('echo', 'echo');
    const port = await freePort();
    await startStreamLB({ streams: [{ listen: [`127.0.0.1:${port}`], proxyPass: echo.address }] });
    const sizes = [1, 4096, 4097, 17, 65_536, 3, 70_000, 4095, 9000, 1, 1, 2];
    const sentHash = createHash('sha256');
    const gotHash = createHash('sha256');
    let total = 0;
    const received = await new Promise<number>((resolve, reject) => {
      const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
      let got = 0;
      s.on('data', (d: Buffer) => { got += d.length; gotHash.update(d); });
      s.on('end', () => { s.end(); resolve(got); });
      s.on('error', reject);
      void (async () => {
        for (let round = 0; round < 40; round++) {
          for (let k = 0; k < sizes.length; k++) {
            const chunk = Buffer.alloc(sizes[(k + round) % sizes.length]!, (round * 13 + k) & 255);
            total += chunk.length;
            sentHash.update(chunk);
            s.write(chunk);
          }
          if (round % 3 === 0) await new Promise((r) => setImmediate(r));
        }
        s.end();
      })();
    });
    expect(received).toBe(total);
    expect(gotHash.digest('hex')).toBe(sentHash.digest('hex'));
  });

  it('passes 50 MiB each way with back-pressure (a slow reader does not make the proxy buffer it)', async () => {
    const echo = await tcpBackend('echo', 'echo');
    const port = await freePort();
    const { lb } = await startStreamLB({ streams: [{ listen: [`127.0.0.1:${port}`], proxyPass: echo.address }] });
    const total = 50 * 1024 * 1024;
    // Every chunk differs, so a reordered, repeated or overwritten buffer changes the digest.
    const chunks = Array.from({ length: 16 }, (_, k) => Buffer.from(Array.from({ length: 256 * 1024 }, (_v, j) => (j * 31 + k * 7) & 255)));
    const rssBefore = process.memoryUsage().rss;
    let maxBuffered = 0;
    let rssMax = rssBefore;
    const sampler = setInterval(() => {
      rssMax = Math.max(rssMax, process.memoryUsage().rss);
      for (const l of (lb.streams as unknown as { listeners: Map<string, { sessions: Set<{ client: net.Socket }> }> }).listeners.values()) {
        for (const s of l.sessions) maxBuffered = Math.max(maxBuffered, s.client.writableLength);
      }
    }, 10);
    cleanups.push(() => clearInterval(sampler));
    const sentHash = createHash('sha256');
    const gotHash = createHash('sha256');
    const received = await new Promise<number>((resolve, reject) => {
      const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
      let got = 0;
      s.on('data', (d: Buffer) => {
        got += d.length;
        gotHash.update(d);
        // A slow reader: stop for a moment every ~4 MiB.
        if (got % (4 * 1024 * 1024) < d.length) {
          s.pause();
          setTimeout(() => s.resume(), 30);
        }
      });
      s.on('end', () => { s.end(); resolve(got); });
      s.on('error', reject);
      let sent = 0;
      const pump = (): void => {
        while (sent < total) {
          const chunk = chunks[(sent / chunks[0]!.length) % chunks.length]!;
          sent += chunk.length;
          sentHash.update(chunk);
          if (!s.write(chunk)) {
            s.once('drain', pump);
            return;
          }
        }
        s.end();
      };
      pump();
    });
    clearInterval(sampler);
    expect(received).toBe(total);
    expect(gotHash.digest('hex')).toBe(sentHash.digest('hex'));
    // What the proxy holds for the slow client stays around socket buffer sizes, not the transfer.
    expect(maxBuffered).toBeLessThan(8 * 1024 * 1024);
    expect(rssMax - rssBefore).toBeLessThan(96 * 1024 * 1024);
  }, 30_000);
});

describe('streams: lifecycle', () => {
  it('reload adds and removes stream listeners; an established session on a removed one keeps running', async () => {
    const echo = await tcpBackend('echo', 'echo');
    const portA = await freePort();
    const portB = await freePort();
    const adminPort = await freePort();
    const base = { admin: { listen: `127.0.0.1:${adminPort}` }, upstreams: { e: { servers: [{ address: echo.address }] } } };
    const lb = new SessionLB(await loadConfig({ ...base, streams: [{ listen: [`127.0.0.1:${portA}`], proxyPass: 'e' }] }, '<test>'), { log: silentLog() });
    await lb.start();
    cleanups.push(() => lb.stop(2000));
    const old = new Client(portA);
    expect(await old.roundTrip('before')).toBe('before');

    await lb.reload(await loadConfig({ ...base, streams: [{ listen: [`127.0.0.1:${portB}`], proxyPass: 'e' }] }, '<test>'));
    expect([...lb.streams.addresses().keys()]).toEqual([`127.0.0.1:${portB}`]);
    expect(await old.roundTrip('after reload')).toBe('after reload');
    const fresh = new Client(portB);
    expect(await fresh.roundTrip('new listener')).toBe('new listener');
    // The removed listener takes no new connections.
    const refused = await new Promise<boolean>((resolve) => {
      const s = net.connect(portA, '127.0.0.1');
      s.on('connect', () => { s.destroy(); resolve(false); });
      s.on('error', () => resolve(true));
    });
    expect(refused).toBe(true);
    old.socket.end();
    await old.closed;
    fresh.socket.end();
    await fresh.closed;
    await waitFor(() => lb.streams.sessionCount() === 0, 5000);
    expect(lb.streams.sessionCount()).toBe(0);
  });

  it('stop waits for sessions up to shutdownTimeout, then closes them', async () => {
    const echo = await tcpBackend('echo', 'echo');
    const port = await freePort();
    const lb = new SessionLB(await loadConfig({ streams: [{ listen: [`127.0.0.1:${port}`], proxyPass: echo.address }] }, '<test>'), { log: silentLog() });
    await lb.start();
    const c = new Client(port);
    expect(await c.roundTrip('hi')).toBe('hi');
    const started = Date.now();
    await lb.stop(300);
    await c.closed;
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('logs "no live upstreams" and closes the client when every server is down', async () => {
    const port = await freePort();
    const { log, records } = captureLog();
    const lb = new SessionLB(await loadConfig({
      streams: [{ listen: [`127.0.0.1:${port}`], proxyPass: 'pool' }],
      upstreams: { pool: { servers: [{ address: '127.0.0.1:9', down: true }, { address: '127.0.0.1:10', down: true }] } },
    }, '<test>'), { log });
    await lb.start();
    cleanups.push(() => lb.stop(2000));
    expect(await firstLine(port)).toBe('<closed>');
    expect(records.some((r) => r.msg === 'no live upstreams while connecting to upstream "pool"')).toBe(true);
  });
});

describe('streams: configuration', () => {
  const problems = (raw: Record<string, unknown>): Promise<string[]> => configProblems(raw, 'f.json');
  const servers = [{ address: '127.0.0.1:5432' }];

  it('accepts a file with streams only, and applies nginx defaults', async () => {
    const c = await loadConfig({ streams: [{ listen: ['127.0.0.1:5433'], proxyPass: 'pg' }], upstreams: { pg: { servers } } });
    expect(c.servers).toEqual([]);
    expect(c.streams).toEqual([{
      index: 0, listen: [{ host: '127.0.0.1', port: 5433, key: '127.0.0.1:5433', proxyProtocol: false }], upstream: 'pg', route: null,
      connectTimeoutMs: 60_000, timeoutMs: 600_000, nextUpstream: true, nextUpstreamTries: 0, nextUpstreamTimeoutMs: 0, proxyProtocol: false, proxyProtocolFrom: [],
    }]);
    const single = await loadConfig({ streams: [{ listen: ['5433'], proxyPass: '127.0.0.1:5432', proxyTimeout: '0s' }] });
    expect(single.streams[0]!.upstream).toBe('127.0.0.1:5432');
    expect(single.upstreams.get('127.0.0.1:5432')!.implicit).toBe(true);
    expect(single.streams[0]!.timeoutMs).toBe(0);
  });

  it('reports what nginx stream forbids and every other problem with its JSON path', async () => {
    expect(await problems({})).toEqual(['$.servers: is required']);
    expect(await problems({ streams: [{ listen: ['127.0.0.1:5433'], proxyPass: 'pg' }], upstreams: { pg: { balance: 'ip_hash', servers } } }))
      .toEqual(['$.upstreams.pg.balance: "ip_hash" cannot be used by a stream ($.streams[0] uses this upstream; nginx\'s stream module has no ip_hash): use {"hash": "$remote_addr"}']);
    expect(await problems({ streams: [{ listen: ['127.0.0.1:5433'], proxyPass: 'pg' }], upstreams: { pg: { sticky: { mode: 'learn' }, servers } } }))
      .toEqual(['$.upstreams.pg.sticky.mode: "learn" reads HTTP cookies, but $.streams[0] uses this upstream: use "source" (the client address bound to a server in the session store), or give the stream an upstream of its own (same servers)']);
    expect(await problems({ streams: [{ listen: ['127.0.0.1:5433'], proxyPass: 'pg' }], upstreams: { pg: { balance: { hash: '$remote_addr$cookie_x' }, servers } } }))
      .toEqual(['$.upstreams.pg.balance.hash: $cookie_x is an HTTP variable, but $.streams[0] uses this upstream: a stream\'s hash key may use only $remote_addr']);
    expect(await problems({ streams: [{ listen: ['127.0.0.1:5433'], proxyPass: 'http://pg' }], upstreams: { pg: { servers } } }))
      .toEqual(['$.streams[0].proxyPass: a stream passes bytes, not HTTP: write the upstream name ("pg") or "host:port", without a scheme']);
    expect(await problems({ streams: [{ listen: ['127.0.0.1:5433'], proxyPass: 'nope' }] }))
      .toEqual(['$.streams[0].proxyPass: no upstream named "nope" (define it under $.upstreams, or use "host:port")']);
    expect(await problems({
      servers: [{ listen: ['127.0.0.1:8080'], locations: [{ path: '/', proxyPass: 'http://127.0.0.1:8000' }] }],
      admin: { listen: '127.0.0.1:9100' },
      streams: [{ listen: ['127.0.0.1:8080', '127.0.0.1:9100', '0.0.0.0:8080'], proxyPass: '127.0.0.1:5432', proxyConnectTimeout: '0s', nextUpstreamTries: -1 }],
    })).toEqual([
      '$.streams[0].nextUpstreamTries: must be an integer >= 0',
      '$.streams[0].listen[0]: 127.0.0.1:8080 is already a listen address of $.servers[0]',
      '$.streams[0].listen[1]: 127.0.0.1:9100 is already a listen address of $.admin.listen',
      '$.streams[0].proxyConnectTimeout: must be at least "1ms"',
      '$.servers[0].listen[0]: 127.0.0.1:8080 cannot be bound together with 0.0.0.0:8080 ($.streams[0].listen[2]); use the same address',
      '$.streams[0].listen[0]: 127.0.0.1:8080 cannot be bound together with 0.0.0.0:8080 ($.streams[0].listen[2]); use the same address',
    ]);
  });
});

describe('import-nginx: stream {}', () => {
  it('converts stream upstreams and servers into `upstreams` and `streams` that load', async () => {
    const { importNginx } = await import('../src/tools/import-nginx/import-nginx.js');
    const text = [
      'events {}',
      'stream {',
      '  proxy_connect_timeout 5s;',
      '  upstream pg {',
      '    least_conn;',
      '    server 10.0.0.5:5432 weight=2 max_fails=3 fail_timeout=30s;',
      '    server 10.0.0.6:5432 backup;',
      '  }',
      '  server {',
      '    listen 127.0.0.1:5433 reuseport;',
      '    proxy_pass pg;',
      '    proxy_timeout 30m;',
      '    proxy_next_upstream_tries 2;',
      '  }',
      '  server { listen 6380; proxy_pass 10.0.0.7:6379; proxy_next_upstream off; }',
      '  server { listen 5353 udp; proxy_pass 10.0.0.8:53; }',
      '}',
    ].join('\n');
    const r = importNginx(text, 'nginx.conf');
    expect(r.errors).toEqual([{ line: 16, message: '"listen 5353 udp": UDP is not supported by sessionlb (TCP only)' }, { line: 16, message: 'stream server without "listen": not converted' }]);
    expect(r.warnings).toContainEqual({ line: 10, message: '"listen": parameters "reuseport" are not supported by sessionlb; ignored' });
    expect(r.config).toEqual({
      workers: 1, // a whole nginx.conf without worker_processes: nginx's one worker
      streams: [
        { listen: ['127.0.0.1:5433'], proxyPass: 'pg', proxyConnectTimeout: '5s', proxyTimeout: '30m', nextUpstreamTries: 2 },
        { listen: ['6380'], proxyPass: '10.0.0.7:6379', proxyConnectTimeout: '5s', nextUpstream: false },
      ],
      upstreams: {
        pg: { balance: 'least_conn', servers: [{ address: '10.0.0.5:5432', weight: 2, maxFails: 3, failTimeout: '30s' }, { address: '10.0.0.6:5432', backup: true }] },
      },
    });
    const config = await loadConfig(r.config as Record<string, unknown>, 'imported.json');
    expect(config.streams.map((s) => [s.listen[0]!.key, s.upstream, s.connectTimeoutMs])).toEqual([
      ['127.0.0.1:5433', 'pg', 5000], ['0.0.0.0:6380', '10.0.0.7:6379', 5000],
    ]);
  });
});
