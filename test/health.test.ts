import http from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { ConfigError } from '../src/config/model.js';
import { Upstream } from '../src/balancer/upstream.js';
import type { Peer } from '../src/balancer/peer.js';
import type { PickRequest } from '../src/balancer/policy.js';
import { freePort, request, startBackend, type Backend } from './helpers/net.js';
import { startLBWithLog, waitFor } from './helpers/capture-log.js';

interface HealthBackend extends Backend {
  /** What /health answers now. */
  health: { status: number; body: string };
  /** Requests other than /health. */
  traffic: number;
  probes: number;
}

async function healthBackend(name: string): Promise<HealthBackend> {
  const state = { status: 200, body: 'ok' };
  const b = await startBackend(name, (req, res, backend) => {
    const hb = backend as HealthBackend;
    req.resume();
    if (req.url === '/health') {
      hb.probes++;
      res.writeHead(state.status, { 'Content-Type': 'text/plain' });
      res.end(state.body);
      return;
    }
    hb.traffic++;
    res.writeHead(200, { 'Content-Type': 'text/plain', 'X-Backend': name });
    res.end(name);
  }) as HealthBackend;
  b.health = state;
  b.traffic = 0;
  b.probes = 0;
  return b;
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

/** Sends n sequential GETs over one keep-alive connection; returns the X-Backend values. */
async function sequential(url: string, n: number): Promise<string[]> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await request(`${url}/page`, { agent });
    out.push(r.status === 200 ? String(r.headers['x-backend']) : `status ${r.status}`);
  }
  agent.destroy();
  return out;
}

describe('active health checks', () => {
  it('a server whose /health turns 500 is out after `fails` probes (no traffic) and back after `passes`', async () => {
    const a = await healthBackend('a');
    const b = await healthBackend('b');
    cleanups.push(() => a.close(), () => b.close());
    const run = await startLBWithLog({
      upstreams: {
        backend: {
          servers: [{ address: a.address }, { address: b.address }],
          healthCheck: { path: '/health', interval: '100ms', timeout: '1s', fails: 2, passes: 2, status: '200-399' },
        },
      },
    });
    cleanups.push(() => run.stop());
    const up = run.lb.upstreams.get('backend')!;
    const peerB = () => up.find(b.address)!;
    // What a probe observer (metrics, the cluster primary telling its workers) sees: the state after the probe.
    const seen: Array<{ ok: boolean; healthy: boolean }> = [];
    const onProbe = run.lb.health.onProbe;
    run.lb.health.onProbe = (upstream, server, ok, detail) => {
      onProbe?.(upstream, server, ok, detail);
      if (server === b.address) seen.push({ ok, healthy: peerB().state.healthy });
    };
    expect(await waitFor(() => peerB().state.lastProbe !== null)).toBe(true);
    expect(new Set(await sequential(run.url, 6))).toEqual(new Set(['a', 'b']));

    b.health.status = 500;
    expect(await waitFor(() => !peerB().state.healthy)).toBe(true);
    const down = run.records.find((r) => r.msg.includes('is unhealthy'));
    expect(down).toMatchObject({ upstream: 'backend', server: b.address, fails: 2, detail: 'status 500' });
    expect(peerB().status(Date.now())).toBe('unhealthy');

    const trafficBefore = b.traffic;
    const names = await sequential(run.url, 30);
    expect(names.every((n) => n === 'a')).toBe(true);
    expect(b.traffic).toBe(trafficBefore);

    const status = JSON.parse((await request(`http://127.0.0.1:${run.adminPort}/status`)).body);
    const entry = status.upstreams.backend.servers.find((s: { address: string }) => s.address === b.address);
    expect(entry).toMatchObject({ state: 'unhealthy', healthy: false, lastProbe: { ok: false, detail: 'status 500' } });
    expect(Date.parse(entry.lastProbe.time)).toBeGreaterThan(Date.now() - 5_000);

    b.health.status = 200;
    expect(await waitFor(() => peerB().state.healthy)).toBe(true);
    const upAgain = run.records.find((r) => r.msg.includes('is healthy again'));
    expect(upAgain).toMatchObject({ upstream: 'backend', server: b.address, passes: 2 });
    expect(new Set(await sequential(run.url, 6))).toEqual(new Set(['a', 'b']));
    const firstFail = seen.findIndex((p) => !p.ok);
    expect(seen.slice(firstFail, firstFail + 2)).toEqual([{ ok: false, healthy: true }, { ok: false, healthy: false }]);
    const firstPass = seen.findIndex((p, i) => i > firstFail && p.ok);
    expect(seen.slice(firstPass, firstPass + 2)).toEqual([{ ok: true, healthy: false }, { ok: true, healthy: true }]);
  });

  it('with slowStart the share of a server that came back ramps up over consecutive windows', async () => {
    const a = await healthBackend('a');
    const b = await healthBackend('b');
    cleanups.push(() => a.close(), () => b.close());
    const run = await startLBWithLog({
      upstreams: {
        backend: {
          servers: [{ address: a.address }, { address: b.address, slowStart: '3s' }],
          healthCheck: { path: '/health', interval: '50ms', timeout: '1s', fails: 1, passes: 1 },
        },
      },
    });
    cleanups.push(() => run.stop());
    const peerB = () => run.lb.upstreams.get('backend')!.find(b.address)!;
    b.health.status = 503;
    expect(await waitFor(() => !peerB().state.healthy)).toBe(true);
    b.health.status = 200;
    expect(await waitFor(() => peerB().state.healthy)).toBe(true);
    const t0 = peerB().state.slowStartFrom;
    expect(t0).toBeGreaterThan(0);

    // Four clients for 4.5 s (at most 40,000 requests): bucket answers by time since b came back.
    const windows = [0, 0, 0, 0, 0].map(() => ({ a: 0, b: 0 }));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    let sent = 0;
    const worker = async (): Promise<void> => {
      while (sent < 40_000 && Date.now() - t0 < 4_500) {
        sent++;
        const r = await request(`${run.url}/page`, { agent });
        const w = Math.min(4, Math.floor((Date.now() - t0) / 1000));
        if (r.body === 'a') windows[w]!.a++;
        else if (r.body === 'b') windows[w]!.b++;
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    agent.destroy();
    const share = windows.map((w) => (w.a + w.b === 0 ? Number.NaN : w.b / (w.a + w.b)));
    // Weight ramps 0..1 over 3 s against a's 1: expected shares ~0.14, ~0.38, ~0.45, then 0.5.
    expect(windows[0]!.a + windows[0]!.b).toBeGreaterThan(20);
    expect(windows[3]!.a + windows[3]!.b).toBeGreaterThan(20);
    expect(share[0]).toBeLessThan(0.3);
    expect(share[0]).toBeLessThan(share[2]!);
    expect(share[3]).toBeGreaterThan(0.4);
    expect(share[3]).toBeLessThan(0.6);
  });

  it('a TCP check takes out a server whose port is closed before it gets any request', async () => {
    const a = await healthBackend('a');
    cleanups.push(() => a.close());
    const closedPort = await freePort();
    const closed = `127.0.0.1:${closedPort}`;
    const run = await startLBWithLog({
      upstreams: {
        backend: {
          servers: [{ address: a.address }, { address: closed }],
          healthCheck: { type: 'tcp', interval: '100ms', timeout: '1s', fails: 1 },
        },
      },
    });
    cleanups.push(() => run.stop());
    const up = run.lb.upstreams.get('backend')!;
    expect(await waitFor(() => !up.find(closed)!.state.healthy)).toBe(true);
    expect(up.find(closed)!.state.lastProbe).toMatchObject({ ok: false, detail: 'ECONNREFUSED' });
    expect(await waitFor(() => up.find(a.address)!.state.lastProbe !== null)).toBe(true);
    expect(up.find(a.address)!.state).toMatchObject({ healthy: true, lastProbe: { ok: true, detail: 'connected' } });
    expect(a.probes).toBe(0); // a TCP check sends no HTTP request

    const names = await sequential(run.url, 20);
    expect(names.every((n) => n === 'a')).toBe(true);
    expect(up.find(closed)!.state.requests).toBe(0);
  });

  it('mandatory: a new server takes no request until its first probe passes; body is a regular expression', async () => {
    const a = await healthBackend('a');
    const b = await healthBackend('b');
    cleanups.push(() => a.close(), () => b.close());
    b.health.body = 'degraded';
    const run = await startLBWithLog({
      upstreams: {
        backend: {
          servers: [{ address: a.address }, { address: b.address }],
          healthCheck: { path: '/health', interval: '100ms', timeout: '1s', fails: 3, passes: 3, body: '^ok', mandatory: true },
        },
      },
    });
    cleanups.push(() => run.stop());
    const up = run.lb.upstreams.get('backend')!;
    // Right after start, before any probe: both wait for their first pass.
    expect(up.find(b.address)!.state.healthy).toBe(false);
    expect(await waitFor(() => up.find(a.address)!.state.healthy)).toBe(true);
    expect(await waitFor(() => (up.find(b.address)!.state.lastProbe?.ok === false))).toBe(true);
    expect(up.find(b.address)!.state.lastProbe!.detail).toBe('status 200, body did not match');
    expect((await sequential(run.url, 10)).every((n) => n === 'a')).toBe(true);
    expect(b.traffic).toBe(0);
    b.health.body = 'ok, all good';
    // One passing probe is enough for a mandatory server's first pass (not `passes`).
    expect(await waitFor(() => up.find(b.address)!.state.healthy)).toBe(true);
    expect(up.find(b.address)!.state.probePassesInRow).toBeLessThan(3);
    expect(new Set(await sequential(run.url, 6))).toEqual(new Set(['a', 'b']));
  });

  it('a passing probe ends a passive (max_fails) failure; probes never overlap for one server', async () => {
    const a = await healthBackend('a');
    let inFlight = 0;
    let maxInFlight = 0;
    let failPages = true;
    const b = await startBackend('b', (req, res) => {
      req.resume();
      if (req.url === '/health') {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        // Slower than the interval: a second probe would overlap if probes did not wait for each other.
        setTimeout(() => { inFlight--; res.end('ok'); }, 150);
        return;
      }
      if (failPages) res.socket?.destroy();
      else res.end('b');
    });
    cleanups.push(() => a.close(), () => b.close());
    const run = await startLBWithLog({
      upstreams: {
        backend: {
          servers: [{ address: a.address }, { address: b.address, maxFails: 1, failTimeout: '1h' }],
          healthCheck: { path: '/health', interval: '20ms', timeout: '1s' },
        },
      },
    });
    cleanups.push(() => run.stop());
    const peerB = run.lb.upstreams.get('backend')!.find(b.address)!;
    // Requests until b has failed once (the retry on a answers the client).
    for (let i = 0; i < 4 && !peerB.isFailed(Date.now()); i++) await request(`${run.url}/page`);
    expect(peerB.isFailed(Date.now())).toBe(true);
    failPages = false;
    expect(await waitFor(() => !peerB.isFailed(Date.now()))).toBe(true); // long before the 1h fail_timeout
    expect(run.records.some((r) => r.msg.includes('failed by max_fails is back'))).toBe(true);
    await new Promise((r) => setTimeout(r, 400));
    expect(maxInFlight).toBe(1);
  });
});

describe('health check and slow start config', () => {
  const base = (upstream: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
    servers: [{ listen: ['127.0.0.1:1'], locations: [{ path: '/', proxyPass: 'http://u' }] }],
    upstreams: { u: upstream },
    ...extra,
  });

  it('normalises a healthCheck with defaults', async () => {
    const c = await loadConfig(base({ servers: [{ address: '10.0.0.1:80', slowStart: '30s' }], healthCheck: { status: '200, 204, 301-302' } }));
    const u = c.upstreams.get('u')!;
    expect(u.healthCheck).toMatchObject({
      type: 'http', path: '/', intervalMs: 5000, timeoutMs: 2000, fails: 1, passes: 1, port: 0, mandatory: false, body: null,
      status: [[200, 200], [204, 204], [301, 302]],
    });
    expect(u.servers[0]!.slowStartMs).toBe(30_000);
    expect(c.stateFile).toBeNull();
    expect(c.pidFile).toBeNull();
  });

  it('reports every problem with its path', async () => {
    const err = await loadConfig(base({
      servers: [{ address: '10.0.0.1:80', slowStart: 'soon' }],
      healthCheck: { type: 'udp', fails: 0, status: '200-', mandatory: 'yes' },
    }, { admin: { listen: '127.0.0.1:2', token: 'short' } })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems).toEqual(expect.arrayContaining([
      { path: '$.upstreams.u.healthCheck.type', message: 'must be "http" or "tcp"' },
      { path: '$.upstreams.u.healthCheck.fails', message: 'must be an integer >= 1' },
      { path: '$.upstreams.u.healthCheck.status', message: 'must be status codes or ranges such as "200-399" or "200, 204, 301-302"' },
      { path: '$.upstreams.u.healthCheck.mandatory', message: 'must be true or false' },
      { path: '$.upstreams.u.servers[0].slowStart', message: 'must be a duration such as "500ms", "10s" or "1m"' },
      { path: '$.admin.token', message: 'must be a string of at least 8 characters without spaces' },
    ]));
    const err2 = await loadConfig(base({
      servers: [{ address: '10.0.0.1:80' }],
      healthCheck: { type: 'tcp', path: '/x', body: '(', port: 70000 },
    })).catch((e: unknown) => e);
    expect((err2 as ConfigError).problems).toEqual(expect.arrayContaining([
      { path: '$.upstreams.u.healthCheck.path', message: 'applies only to "type": "http"' },
      { path: '$.upstreams.u.healthCheck.port', message: 'must be a port 1-65535, or 0 for the server\'s own port' },
      expect.objectContaining({ path: '$.upstreams.u.healthCheck.body', message: expect.stringMatching(/^is not a valid regular expression/) }),
    ]));
  });

  it('slow start ramps after a passive failure is over and after admin ready, in round robin', async () => {
    const c = await loadConfig(base({ servers: [{ address: '10.0.0.1:80' }, { address: '10.0.0.2:80', slowStart: '10s', maxFails: 1, failTimeout: '5s' }] }));
    const up = new Upstream(c.upstreams.get('u')!);
    const [a, b] = up.primary as [Peer, Peer];
    const req = {} as PickRequest;
    let now = 1_000_000;
    expect(b.currentMaxWeight(now)).toBe(1); // full weight at start
    up.acquire(b, now);
    up.release(b, true, now); // failed: out for 5 s
    expect(b.isFailed(now + 1)).toBe(true);
    now += 5_001; // back; the ramp counts from the end of fail_timeout
    expect(b.currentMaxWeight(now)).toBeCloseTo(0.05, 2);
    expect(b.currentMaxWeight(now + 5_000)).toBeCloseTo(0.5, 2);
    const share = (from: number, n: number): number => {
      let hits = 0;
      for (let i = 0; i < n; i++) {
        const p = up.select(req, null, from)!;
        if (p === b) hits++;
        up.release(p, false, from);
      }
      return hits / n;
    };
    expect(share(now + 1_000, 200)).toBeLessThan(0.15); // weight ~0.1 against a's 1
    expect(share(now + 10_000, 200)).toBe(0.5);
    expect(a.currentMaxWeight(now)).toBe(1);
    // admin: maint then ready starts a new ramp
    b.state.adminState = 'maint';
    b.state.adminState = 'ready';
    b.markBack(now + 20_000);
    expect(b.currentMaxWeight(now + 22_500)).toBeCloseTo(0.25, 2);
  });
});
