/**
 * Issue 14, fault and abuse suite: the process lifecycle under load, on `dist/cli.js run` as users
 * run it (signals sent to the PID of the child this file started): 50 SIGHUP reloads, some of
 * invalid files; SIGTERM with requests in flight (one process and two workers); a 200 MiB upload,
 * with a Content-Length and chunked, across SIGHUP reloads.
 */
import { describe, expect, it } from 'vitest';
import { useScope } from './helpers/scope.js';
import type { BackendHandler } from './helpers/net.js';
import {
  connects, hashingBackend, metric, report, runLoad, sleep, startLBChild, until, upload, type LBChild, type Shot,
} from './helpers/faults.js';

const { cleanup, backends, backend } = useScope();

type Servers = Array<Record<string, unknown>>;

function configText(port: number, adminPort: number, servers: Servers, upstream: Record<string, unknown> = {}, top: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    workers: 2,
    accessLog: false,
    shutdownTimeout: '10s',
    servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
    upstreams: { backend: { servers, ...upstream } },
    admin: { listen: `127.0.0.1:${adminPort}` },
    ...top,
  };
}

const reloadsTotal = (lb: LBChild): Promise<number> => metric(lb, 'sessionlb_config_reloads_total');

describe('reloads under load', () => {
  it('50 SIGHUPs (40 valid configs, 10 invalid files) under 16 keep-alive clients, 2 workers: zero failed requests, exact counts in /metrics', async () => {
    const [a, b, c] = await backends(['a', 'b', 'c']);
    const A = { address: a!.address };
    const B = { address: b!.address };
    const C = { address: c!.address };
    const valid: Array<{ servers: Servers; upstream?: Record<string, unknown> }> = [
      { servers: [A, B] },
      { servers: [A, B, C] },
      { servers: [A, B, { ...C, weight: 3 }] },
      { servers: [B, A], upstream: { keepalive: 8 } },
      { servers: [A, B, C], upstream: { balance: 'least_conn' } },
      { servers: [A, C] },
      { servers: [A, B], upstream: { healthCheck: { type: 'tcp', interval: '200ms' } } },
      { servers: [C, A, B], upstream: { keepaliveTimeout: '30s', timeouts: { read: '10s' } } },
    ];
    const lb = await startLBChild(cleanup, (port, adminPort) => configText(port, adminPort, valid[0]!.servers));
    const invalid: Array<(port: number, adminPort: number) => string> = [
      (p, ap) => JSON.stringify(configText(p, ap, [A, { ...B, weight: 0 }])), // schema: weight >= 1
      (p, ap) => JSON.stringify(configText(p, ap, [A, B], { bogusKey: true })), // unknown key
      (p, ap) => JSON.stringify(configText(p, ap, [A, B])).slice(0, 60), // a file caught half-written
      (p, ap) => JSON.stringify({ ...configText(p, ap, [A, B]), servers: [{ listen: [`127.0.0.1:${p}`], locations: [{ path: '/', proxyPass: 'http://nowhere' }] }] }),
      () => '',
    ];
    const plan = Array.from({ length: 50 }, (_, k) => (k % 5 === 4
      ? { valid: false, text: invalid[((k + 1) / 5 - 1) % invalid.length]!(lb.port, lb.adminPort) }
      : { valid: true, text: JSON.stringify(configText(lb.port, lb.adminPort, valid[k % valid.length]!.servers, valid[k % valid.length]!.upstream)), servers: valid[k % valid.length]!.servers }));

    let reloading = true;
    const marks: number[] = [];
    let done = 0;
    const loadRun = runLoad({
      url: lb.url, total: 200_000, concurrency: 16, timeLimitMs: 50_000, stop: () => !reloading,
      spec: (i) => ({ path: `/r?i=${i}` }),
      check: (s) => (s.body.toString() === s.backend && ['a', 'b', 'c'].includes(s.backend) ? null : `bad body ${s.body.toString().slice(0, 30)}`),
      onShot: () => { done++; },
    });
    const reloadTimes: number[] = [];
    try {
      await until(() => done >= 200, 10_000);
      for (const [k, step] of plan.entries()) {
        lb.write(step.text);
        const t = performance.now();
        process.kill(lb.pid, 'SIGHUP'); // the child this test started
        const counted = await until(async () => (await reloadsTotal(lb)) === k + 1, 15_000, 10);
        expect(counted, `reload ${k + 1} was not counted: ${lb.stderr().slice(-1500)}`).toBe(true);
        reloadTimes.push(performance.now() - t);
        marks.push(done);
      }
      await until(() => done >= marks[marks.length - 1]! + 200, 10_000);
    } finally {
      reloading = false;
    }
    const r = await loadRun;
    const samples = await lb.metrics();
    const byResult = (result: string): number => samples.filter((s) => s.name === 'sessionlb_config_reloads_total' && s.labels.result === result).reduce((n, s) => n + s.value, 0);
    const status = await lb.status();
    report('50 reloads (10 invalid), 2 workers, 16 clients', r, {
      reloads: { success: byResult('success'), failure: byResult('failure') },
      'reload p50/max': `${[...reloadTimes].sort((x, y) => x - y)[25]!.toFixed(0)}/${Math.max(...reloadTimes).toFixed(0)} ms`,
      byBackend: r.byBackend,
    });
    expect(r.failures).toEqual({});
    expect(marks[marks.length - 1]! - marks[0]!).toBeGreaterThan(100); // requests flowed through the whole series
    expect(byResult('success')).toBe(40);
    expect(byResult('failure')).toBe(10);
    expect(status.reloads).toMatchObject({ success: 40, failure: 10 });
    // The configuration in use is the last valid one (step 48), not an invalid one that came after.
    const last = plan[48]!;
    expect(status.upstreams.backend!.servers.map((s) => s.address)).toEqual((last.servers as Servers).map((s) => s.address));
    const log = lb.stderr();
    expect(log).toMatch(/reload failed; still serving the previous configuration/);
    expect(lb.child.exitCode).toBeNull();
  });
});

describe('SIGTERM under load', () => {
  for (const workers of [1, 2]) {
    it(`workers ${workers}: every request a backend had received completes whole, new connections are refused at once, exit 0`, async () => {
      const arrived = new Set<number>();
      /** Answers after 200-600 ms, 64 KiB or 1 MiB in four pieces 50 ms apart (byte = 'a' + id % 26). */
      const handler: BackendHandler = (req, res, be) => {
        const id = Number(req.headers['x-req']);
        arrived.add(id);
        req.resume();
        req.on('end', () => setTimeout(() => {
          const size = id % 7 === 0 ? 1 << 20 : 64 * 1024;
          const piece = Buffer.alloc(size / 4, 97 + (id % 26));
          res.writeHead(200, { 'Content-Length': size, 'X-Backend': be.name });
          let k = 0;
          const next = (): void => {
            if (res.destroyed) return;
            if (++k === 4) res.end(piece);
            else { res.write(piece); setTimeout(next, 50); }
          };
          next();
        }, 200 + (id % 5) * 100));
      };
      const bs = [await backend('a', handler), await backend('b', handler)];
      const lb = await startLBChild(cleanup, (port, adminPort) => ({ ...configText(port, adminPort, bs.map((x) => ({ address: x.address }))), workers }));
      const finished = new Set<number>();
      let inFlight: number[] = [];
      let termAt = 0;
      let refusedAt = 0;
      let prober: Promise<void> = Promise.resolve();
      const check = (s: Shot): string | null => {
        const id = Number(s.tag);
        const size = id % 7 === 0 ? 1 << 20 : 64 * 1024;
        return s.body.length === size && s.body.every((x) => x === 97 + (id % 26)) ? null : `bad body (${s.body.length} bytes)`;
      };
      const r = await runLoad({
        url: lb.url, total: 5000, concurrency: 32, timeLimitMs: 30_000,
        spec: (i) => ({ path: `/t?i=${i}`, headers: { 'X-Req': String(i) }, tag: String(i) }),
        check,
        stop: () => termAt > 0,
        onShot: (s) => {
          finished.add(Number(s.tag));
          if (termAt === 0 && finished.size >= 60) {
            inFlight = [...arrived].filter((id) => !finished.has(id));
            termAt = performance.now();
            process.kill(lb.pid, 'SIGTERM'); // the child this test started
            prober = (async () => {
              for (let k = 0; k < 500 && refusedAt === 0; k++) {
                if ((await connects(lb.port, 500)) === 'refused') refusedAt = performance.now();
                else await sleep(10);
              }
            })();
          }
        },
      });
      await prober;
      const exit = await Promise.race([lb.exited, sleep(20_000).then(() => null)]);
      const afterExit = await connects(lb.port);
      const ofInFlight = r.shots.filter((s) => inFlight.includes(Number(s.tag)));
      const lastInFlightEnd = Math.max(...ofInFlight.map((s) => s.endedAt));
      const others = r.shots.filter((s) => !inFlight.includes(Number(s.tag)) && s.startedAt < termAt && s.endedAt > termAt);
      report(`SIGTERM under load, workers ${workers}`, r, {
        'in flight at a backend': inFlight.length,
        'of those completed whole': ofInFlight.filter((s) => s.failure === undefined).length,
        'refused after': `${(refusedAt - termAt).toFixed(0)} ms`,
        'last in-flight response after': `${(lastInFlightEnd - termAt).toFixed(0)} ms`,
        'sent but not yet at a backend': others.map((s) => s.failure ?? 'ok').join(',') || 'none',
        exit,
      });
      expect(termAt).toBeGreaterThan(0);
      expect(inFlight.length).toBeGreaterThanOrEqual(8);
      expect(ofInFlight.length).toBe(inFlight.length);
      expect(ofInFlight.filter((s) => s.failure !== undefined).map((s) => `${s.tag}: ${s.failure}`)).toEqual([]);
      // The listener closed at once, while the requests in flight were still running.
      expect(refusedAt).toBeGreaterThan(0);
      expect(refusedAt).toBeLessThan(lastInFlightEnd);
      // Nothing sessionlb answered was a 5xx of its own.
      expect(r.shots.filter((s) => s.status >= 500).map((s) => `${s.tag}: ${s.status}`)).toEqual([]);
      expect(exit).toEqual({ code: 0, signal: null });
      expect(afterExit).toBe('refused');
    });
  }
});

describe('a 200 MiB upload across reloads', () => {
  it('Content-Length and chunked, 200 MiB each, SIGHUP twice mid-body (2 workers): the backend gets every byte in order, the client gets 200', async () => {
    const h = await hashingBackend(cleanup);
    const make = (port: number, adminPort: number, keepalive: number): Record<string, unknown> => configText(
      port, adminPort, [{ address: h.address }], { keepalive, timeouts: { read: '30s', send: '30s' } }, { clientMaxBodySize: '0' },
    );
    const lb = await startLBChild(cleanup, (port, adminPort) => make(port, adminPort, 16));
    const TOTAL = 200 * 1024 * 1024;
    const sent = [0, 0];
    /** At 50 and 150 MiB: one SIGHUP, both uploads wait (bounded) until it is counted, then go on. */
    const reloadAt = (mark: number, expected: number, keepalive: number): (() => Promise<void>) => {
      let started: Promise<void> | null = null;
      return () => {
        started ??= (async () => {
          while (sent[0]! < mark || sent[1]! < mark) await sleep(5);
          lb.write(make(lb.port, lb.adminPort, keepalive));
          process.kill(lb.pid, 'SIGHUP');
          await until(async () => (await metric(lb, 'sessionlb_config_reloads_total', { result: 'success' })) >= expected, 15_000, 20);
        })();
        return started;
      };
    };
    const first = reloadAt(50 << 20, 1, 4);
    const second = reloadAt(150 << 20, 2, 32);
    const gate = (which: number) => (n: number): Promise<void> | null => {
      sent[which] = n;
      if (n >= 50 << 20 && n - (64 << 10) < 50 << 20) return first();
      if (n >= 150 << 20 && n - (64 << 10) < 150 << 20) return second();
      return null;
    };
    const t0 = performance.now();
    const [byLength, byChunks] = await Promise.all([
      upload(`${lb.url}/upload/length`, TOTAL, { gate: gate(0), timeoutMs: 50_000 }),
      upload(`${lb.url}/upload/chunked`, TOTAL, { chunked: true, gate: gate(1), timeoutMs: 50_000 }),
    ]);
    const seconds = (performance.now() - t0) / 1000;
    const reloads = await metric(lb, 'sessionlb_config_reloads_total', { result: 'success' });
    console.info(`[faults] 200 MiB uploads across 2 SIGHUPs (2 workers): Content-Length ${byLength.status} ${byLength.body}, chunked ${byChunks.status} ${byChunks.body}, `
      + `${(2 * TOTAL / 1048576 / seconds).toFixed(0)} MiB/s together in ${seconds.toFixed(1)} s, reloads ${reloads}, sessionlb errors: ${byLength.error ?? '-'} / ${byChunks.error ?? '-'}`);
    for (const u of [byLength, byChunks]) {
      expect(u.error).toBeUndefined();
      expect(u.status).toBe(200);
      expect(u.sent).toBe(TOTAL);
      expect(JSON.parse(u.body)).toEqual({ bytes: TOTAL, sha256: u.sha256 });
    }
    expect(reloads).toBe(2);
    expect(h.received()).toBe(2 * TOTAL);
  });
});
