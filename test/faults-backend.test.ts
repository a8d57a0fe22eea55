/**
 * Issue 14, fault and abuse suite: backends that die, hang, crawl, break off mid-body or answer
 * garbage, under a bounded load loop through sessionlb (`dist/cli.js run`, one process, as users
 * run it). Backends that are killed or stopped run in child processes and get their signals by
 * PID; the misbehaving ones are raw sockets in this process. Every figure is printed as a
 * `[faults]` line (requests, failures by cause, p99).
 */
import http from 'node:http';
import { describe, expect, it } from 'vitest';
import { useScope } from './helpers/scope.js';
import {
  childBackends, metric, rawBackend, report, runLoad, serverState, shoot, startLBChild, until,
  type LBChild, type Shot,
} from './helpers/faults.js';

const { cleanup } = useScope();

const BIG = 256 * 1024;

/** A config for the child: one location / to upstream "backend" (plus `more` upstreams / locations). */
function config(servers: Array<Record<string, unknown>>, upstream: Record<string, unknown> = {}, more: { locations?: Array<Record<string, unknown>>; upstreams?: Record<string, unknown> } = {}) {
  return (port: number, adminPort: number): Record<string, unknown> => ({
    workers: 1,
    accessLog: false,
    shutdownTimeout: '5s',
    servers: [{ listen: [`127.0.0.1:${port}`], locations: [...(more.locations ?? []), { path: '/', proxyPass: 'http://backend' }] }],
    upstreams: { backend: { servers, ...upstream }, ...more.upstreams },
    admin: { listen: `127.0.0.1:${adminPort}` },
  });
}

/** A 200 from a child backend carries its own body: 256 KiB of 'b' for /big, "<name> 0" otherwise. */
function checkBody(s: Shot): string | null {
  if (s.tag === 'big') return s.body.length === BIG && s.body.every((x) => x === 98) ? null : `bad big body (${s.body.length} bytes)`;
  return s.body.toString() === `${s.backend} 0` ? null : `bad body ${JSON.stringify(s.body.toString().slice(0, 40))}`;
}

const mixed = (i: number) => (i % 10 === 0 ? { path: '/big', tag: 'big' } : { path: `/page?i=${i}` });

async function assertAlive(lb: LBChild): Promise<void> {
  expect(lb.child.exitCode, `sessionlb exited: ${lb.stderr().slice(-1500)}`).toBeNull();
  expect(lb.child.signalCode).toBeNull();
  expect((await shoot(`http://127.0.0.1:${lb.adminPort}`, { path: '/healthz' }, false, 0, 5000)).status).toBe(200);
}

describe('backend killed', () => {
  it('SIGKILL of one of 3 backends mid-load: zero failed GETs, the dead one is marked failed and skipped, and used again once it is back', async () => {
    const bs = await childBackends(['a', 'b', 'c'], cleanup);
    const victim = bs[1]!;
    const lb = await startLBChild(cleanup, config(bs.map((b) => ({ address: b.address, failTimeout: '4s' }))));
    let killSent = 0;
    let killedAt = Infinity;
    const r = await runLoad({
      url: lb.url, total: 2000, concurrency: 16, timeLimitMs: 40_000, spec: mixed, check: checkBody,
      onShot: (s) => {
        if (killSent === 0 && s.i >= 500) {
          killSent = performance.now();
          void victim.kill('SIGKILL').then(() => { killedAt = performance.now(); });
        }
      },
    });
    // Marked failed: /status and the up gauge agree. (A marking lasts failTimeout, 4 s, and is renewed
    // when a request tries the server again after it: a few requests first, so that the reading is
    // not taken just as an old marking runs out.)
    let marked = { state: '', up: -1 };
    await until(async () => {
      await runLoad({ url: lb.url, total: 10, concurrency: 1, timeLimitMs: 5000, spec: mixed, check: checkBody });
      const [st, up] = await Promise.all([serverState(lb, 'backend', victim.address), metric(lb, 'sessionlb_upstream_server_up', { server: victim.address })]);
      marked = { state: st?.state ?? '', up };
      return marked.state === 'failed' && marked.up === 0;
    }, 10_000, 0);
    report('backend SIGKILLed mid-load (3 backends, 16 in flight)', r, { byBackend: r.byBackend });
    expect(r.failures).toEqual({});
    expect(r.requests).toBe(2000);
    expect(killSent).toBeGreaterThan(0);
    expect(r.byBackend.b).toBeGreaterThan(100); // it took its share before the kill
    // Nothing sent after its death was answered by it.
    expect(r.shots.filter((s) => s.startedAt > killedAt && s.backend === 'b')).toEqual([]);
    expect(marked).toEqual({ state: 'failed', up: 0 });
    expect(await metric(lb, 'sessionlb_upstream_failures_total', { server: victim.address })).toBeGreaterThanOrEqual(1);
    expect(await metric(lb, 'sessionlb_upstream_retries_total', { upstream: 'backend' })).toBeGreaterThanOrEqual(1);

    // Back on its port: after failTimeout sessionlb tries it again by itself, and it takes traffic.
    await victim.start();
    let revivedHits = 0;
    const back = await runLoad({
      url: lb.url, total: 20_000, concurrency: 8, timeLimitMs: 15_000, spec: mixed, check: checkBody,
      onShot: (s) => { if (s.backend === 'b') revivedHits++; },
      stop: () => revivedHits >= 20,
    });
    report('after the killed backend restarted', back, { byBackend: back.byBackend });
    expect(back.failures).toEqual({});
    expect(back.byBackend.b ?? 0).toBeGreaterThan(0);
    expect((await serverState(lb, 'backend', victim.address))?.state).toBe('up');
    await assertAlive(lb);
  });
});

describe('backend hung', () => {
  it('a SIGSTOPped backend and one that accepts but never answers, timeouts.read 300ms: every GET answered elsewhere, both marked failed', async () => {
    const [a, b, c] = await childBackends(['a', 'b', 'c'], cleanup);
    cleanup.push(async () => c!.resume()); // before its kill (cleanup runs in reverse)
    const silent = await rawBackend(cleanup, {}); // reads requests, never writes a byte
    const servers = [a!, b!, c!].map((x) => ({ address: x.address, failTimeout: '30s' }));
    servers.push({ address: silent.address, failTimeout: '30s' });
    const lb = await startLBChild(cleanup, config(servers, { timeouts: { read: '300ms' } }));
    let stoppedAt = Infinity;
    const r = await runLoad({
      url: lb.url, total: 1000, concurrency: 16, timeLimitMs: 40_000, spec: mixed, check: checkBody,
      onShot: (s) => {
        if (stoppedAt === Infinity && s.i >= 250) {
          c!.pause();
          stoppedAt = performance.now();
        }
      },
    });
    const slow = r.shots.filter((s) => s.ms >= 280).length;
    const timeouts = await metric(lb, 'sessionlb_upstream_failures_total', { reason: 'timeout' });
    report('backend SIGSTOPped + backend silent (4 servers, read 300ms, 16 in flight)', r, {
      'attempts timed out': timeouts, 'requests slower than the read timeout': slow, byBackend: r.byBackend,
    });
    expect(r.failures).toEqual({});
    expect(r.requests).toBe(1000);
    expect(silent.requests.length).toBeGreaterThanOrEqual(1); // the silent one was really tried
    expect(r.byBackend.c).toBeGreaterThan(20);
    expect(r.shots.filter((s) => s.startedAt > stoppedAt + 50 && s.backend === 'c')).toEqual([]);
    // A GET waits for at most the two hung servers once each: no request waited anywhere near 10x the read timeout.
    expect(r.max).toBeLessThan(3000);
    // Once marked failed (failTimeout 30s) they are skipped: only requests already sent to them when
    // their first timeout expired cost a timeout, at most one per client in flight for each.
    expect(timeouts).toBeGreaterThanOrEqual(2);
    expect(timeouts).toBeLessThanOrEqual(2 * 16);
    expect((await serverState(lb, 'backend', c!.address))?.state).toBe('failed');
    expect((await serverState(lb, 'backend', silent.address))?.state).toBe('failed');

    // The stopped process resumes and answers what it had queued; sessionlb has moved on and stays healthy.
    c!.resume();
    const after = await runLoad({ url: lb.url, total: 200, concurrency: 8, timeLimitMs: 20_000, spec: mixed, check: checkBody });
    expect(after.failures).toEqual({});
    await assertAlive(lb);
  });
});

describe('backend slow', () => {
  it('one backend 150ms late, one trickling /big past timeouts.read (each pause shorter): latency, no error, no failure counted, exact round robin', async () => {
    const bs = await childBackends(['a', 'b', 'c'], cleanup, { b: { delay: 150 }, c: { trickle: 6, trickleMs: 250 } });
    const lb = await startLBChild(cleanup, config(bs.map((x) => ({ address: x.address })), { timeouts: { read: '1s' } }));
    const r = await runLoad({ url: lb.url, total: 600, concurrency: 16, timeLimitMs: 40_000, spec: mixed, check: checkBody });
    const late = r.shots.filter((s) => s.backend === 'b').map((s) => s.ms);
    const trickledBig = r.shots.filter((s) => s.backend === 'c' && s.tag === 'big').map((s) => s.ms);
    report('slow backends (b: head 150ms late; c: /big in 6 pieces 250ms apart; read 1s)', r, {
      byBackend: r.byBackend, 'fastest of b': Math.min(...late).toFixed(0), 'fastest trickled /big': Math.min(...trickledBig).toFixed(0),
    });
    expect(r.failures).toEqual({});
    expect(r.requests).toBe(600);
    expect(Math.min(...late)).toBeGreaterThanOrEqual(140); // the delay was real...
    expect(trickledBig.length).toBeGreaterThan(5);
    expect(Math.min(...trickledBig)).toBeGreaterThanOrEqual(1200); // ...and so was the trickle: longer than timeouts.read in total
    // Slow is not failed: strict rotation, no failure counted.
    for (const name of ['a', 'b', 'c']) expect(Math.abs(r.byBackend[name]! - 200)).toBeLessThanOrEqual(1);
    expect(await metric(lb, 'sessionlb_upstream_failures_total')).toBe(0);
    expect(await metric(lb, 'sessionlb_upstream_retries_total')).toBe(0);
  });
});

describe('backend reset mid-body', () => {
  /** A raw backend under /flaky: writes a head and part of the body, then closes (FIN) or resets (RST). */
  async function flakyBackend() {
    const body = (n: number): string => 'x'.repeat(n);
    return rawBackend(cleanup, {
      onRequest: (head, socket) => {
        const target = head.split(' ')[1] ?? '';
        if (target.endsWith('/ok')) socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
        else if (target.endsWith('/cut-fin')) {
          socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n${body(100_000)}`);
          setTimeout(() => socket.end(), 20);
        } else if (target.endsWith('/cut-rst')) {
          socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n${body(100_000)}`);
          setTimeout(() => socket.resetAndDestroy(), 20);
        } else if (target.endsWith('/cut-chunked')) {
          socket.write(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${(50_000).toString(16)}\r\n${body(50_000)}\r\n${(50_000).toString(16)}\r\n${body(20_000)}`);
          setTimeout(() => socket.destroy(), 20);
        } else if (target.endsWith('/cut-small')) {
          socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n${body(50)}`);
          socket.destroy();
        }
      },
    });
  }

  it('a body cut by FIN, RST, mid-chunk or small: the client sees a broken response, never a complete one; later requests and other traffic are fine', async () => {
    const bs = await childBackends(['a', 'b', 'c'], cleanup);
    const flaky = await flakyBackend();
    const lb = await startLBChild(cleanup, config(bs.map((x) => ({ address: x.address })), {}, {
      locations: [{ path: '/flaky/', proxyPass: 'http://flaky' }],
      upstreams: { flaky: { servers: [{ address: flaky.address }] } },
    }));
    const modes = ['cut-fin', 'cut-rst', 'cut-chunked', 'cut-small'];
    const cut: Shot[] = [];
    const okAfter: Shot[] = [];
    const broken = (async () => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      for (let k = 0; k < 40; k++) {
        cut.push(await shoot(lb.url, { path: `/flaky/${modes[k % modes.length]}`, tag: modes[k % modes.length] }, agent, k, 10_000));
        okAfter.push(await shoot(lb.url, { path: '/flaky/ok' }, agent, k, 10_000));
      }
      agent.destroy();
    })();
    const r = await runLoad({ url: lb.url, total: 800, concurrency: 12, timeLimitMs: 40_000, spec: mixed, check: checkBody });
    await broken;
    const outcome = (s: Shot): string => `${s.tag}: ${s.failure === undefined ? `complete ${s.status} (${s.body.length} bytes)` : s.status === 200 ? 'broken 200' : s.failure}`;
    const seen: Record<string, number> = {};
    for (const s of cut) seen[outcome(s)] = (seen[outcome(s)] ?? 0) + 1;
    report('backend reset mid-body (40 cut responses beside 800 GETs)', r, { 'cut responses as the client saw them': seen });
    // Never a truncated body passed off as complete.
    expect(cut.filter((s) => s.failure === undefined).map(outcome)).toEqual([]);
    // A broken response that had started is cut (client sees the connection end early); one that had not is a 502.
    for (const s of cut) expect(s.status === 200 ? /^incomplete body/.test(s.failure!) : s.status === 502 || s.status === 0, outcome(s)).toBe(true);
    expect(okAfter.map((s) => `${s.status} ${s.body.toString()}`)).toEqual(okAfter.map(() => '200 ok'));
    expect(r.failures).toEqual({});
    await assertAlive(lb);
  });
});

describe('backend answering garbage', () => {
  /** Garbage of several kinds, one per connection in turn; the connection stays open afterwards unless said otherwise. */
  const GARBAGE: Array<{ name: string; early?: boolean; bytes: () => Buffer; close?: boolean }> = [
    { name: 'binary', bytes: () => Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 131 + 7) & 255)) },
    { name: 'ssh banner before the request', early: true, bytes: () => Buffer.from('SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n') },
    { name: 'negative length', bytes: () => Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello') },
    { name: 'bad status', bytes: () => Buffer.from('HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n') },
    { name: 'bare LF', bytes: () => Buffer.from('HTTP/1.1 200 OK\nContent-Length: 2\n\nok') },
    { name: 'endless header', bytes: () => Buffer.from(`HTTP/1.1 200 OK\r\nX-Junk: ${'j'.repeat(40_000)}`) },
    { name: 'text and close', bytes: () => Buffer.from('<html>500 Internal Server Error</html>\n'), close: true },
    // What memcached (or redis, SMTP...) answers an HTTP request with: error lines, connection kept open.
    { name: 'line-protocol ERROR lines', bytes: () => Buffer.from('ERROR\r\nERROR\r\nERROR\r\n') },
  ];

  async function garbageBackend() {
    return rawBackend(cleanup, {
      onConnect: (socket, n) => {
        const g = GARBAGE[n % GARBAGE.length]!;
        if (g.early) socket.write(g.bytes());
      },
      onRequest: (_head, socket, n) => {
        const g = GARBAGE[n % GARBAGE.length]!;
        if (g.early) return;
        if (g.close) socket.end(g.bytes());
        else socket.write(g.bytes());
      },
    });
  }

  it('default nextUpstream (error, timeout): the attempts on it are 502s, nothing else fails, sessionlb stays up', async () => {
    const [a, b] = await childBackends(['a', 'b'], cleanup);
    const g = await garbageBackend();
    const lb = await startLBChild(cleanup, config([{ address: a!.address }, { address: b!.address }, { address: g.address }], { timeouts: { read: '3s' } }));
    const r = await runLoad({ url: lb.url, total: 600, concurrency: 12, timeLimitMs: 40_000, spec: mixed, check: checkBody });
    report('garbage backend, default nextUpstream (3 servers)', r, { 'garbage connections': g.connections, 'requests it got': g.requests.length });
    expect(r.requests).toBe(600);
    expect(Object.keys(r.failures)).toEqual(['status 502']); // nginx: invalid_header is not retried unless listed
    expect(r.failed).toBeGreaterThan(0);
    // (Which garbage kinds it gets depends on the connections made; how fast each is rejected is the last test's subject.)
    expect(r.failed).toBeLessThanOrEqual(g.connections + g.requests.length);
    await assertAlive(lb);
  });

  it('nextUpstream with invalid_header: zero failed GETs, the garbage server is marked failed', async () => {
    const [a, b] = await childBackends(['a', 'b'], cleanup);
    const g = await garbageBackend();
    const lb = await startLBChild(cleanup, config(
      [{ address: a!.address }, { address: b!.address }, { address: g.address, failTimeout: '30s' }],
      { timeouts: { read: '3s' }, nextUpstream: { on: ['error', 'timeout', 'invalid_header'] } },
    ));
    // Each garbage kind once: a fresh connection per request, 3 servers in turn, the garbage server
    // is marked failed at its first answer: no more attempts on it for failTimeout.
    const r = await runLoad({ url: lb.url, total: 600, concurrency: 12, timeLimitMs: 40_000, spec: mixed, check: checkBody });
    report('garbage backend, nextUpstream with invalid_header', r, { 'garbage connections': g.connections });
    expect(r.failures).toEqual({});
    expect(r.requests).toBe(600);
    expect(g.connections).toBeGreaterThanOrEqual(1);
    expect((await serverState(lb, 'backend', g.address))?.state).toBe('failed');
    expect(await metric(lb, 'sessionlb_upstream_failures_total', { server: g.address, reason: 'invalid_header' })).toBeGreaterThanOrEqual(1);
    await assertAlive(lb);
  });

  /**
   * A response whose first line is complete and is not an HTTP status line cannot become valid:
   * a proxy answers 502 at once (nginx stops at the first byte that cannot start "HTTP/"); waiting
   * for timeouts.read (60 s by default) turns a misconfigured address (an SSH, SMTP or memcached
   * port) into a hang and a 504.
   */
  it('every garbage kind, alone in its upstream: a prompt 502 each time, and the next request is fine', async () => {
    const g = await garbageBackend();
    const [a] = await childBackends(['a'], cleanup);
    const lb = await startLBChild(cleanup, config([{ address: a!.address }], {}, {
      locations: [{ path: '/junk/', proxyPass: 'http://junk' }],
      upstreams: { junk: { servers: [{ address: g.address }], keepalive: 0, timeouts: { read: '2s' } } },
    }));
    const outcomes: string[] = [];
    for (let k = 0; k < GARBAGE.length; k++) {
      const s = await shoot(lb.url, { path: '/junk/x' }, false, k, 10_000);
      outcomes.push(`${GARBAGE[k]!.name}: ${s.failure ?? 'ok'} ${s.ms < 1000 ? 'fast' : `after ${s.ms.toFixed(0)} ms`}`);
      const next = await shoot(lb.url, { path: '/page' }, false, k, 10_000);
      expect(next.failure).toBeUndefined();
    }
    console.info(`[faults] garbage kinds, one server: ${outcomes.join('; ')}`);
    expect(outcomes).toEqual(GARBAGE.map((x) => `${x.name}: status 502 fast`));
    await assertAlive(lb);
  });
});
