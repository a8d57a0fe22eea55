import http from 'node:http';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { request, startBackend, tally, type SimpleResponse } from './helpers/net.js';
import { startLBWithLog } from './helpers/capture-log.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function twoBackends(): Promise<{ a: string; b: string }> {
  const a = await startBackend('a');
  const b = await startBackend('b');
  cleanups.push(() => a.close(), () => b.close());
  return { a: a.address, b: b.address };
}

function admin(port: number, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<SimpleResponse> {
  return request(`http://127.0.0.1:${port}${path}`, {
    method,
    headers: { 'Content-Type': 'application/json', ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
}

/** n sequential GETs over one keep-alive connection; tally of answering backends. */
async function route(url: string, n: number): Promise<Record<string, number>> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const names: string[] = [];
  for (let i = 0; i < n; i++) names.push((await request(url, { agent })).body);
  agent.destroy();
  return tally(names);
}

function serverEntry(status: SimpleResponse, address: string): Record<string, unknown> {
  const doc = JSON.parse(status.body) as { upstreams: Record<string, { servers: Array<Record<string, unknown>> }> };
  return doc.upstreams.backend!.servers.find((s) => s.address === address)!;
}

describe('admin API', () => {
  it('drain / maint / ready / weight change routing and show in /status', async () => {
    const { a, b } = await twoBackends();
    const run = await startLBWithLog({ upstreams: { backend: { servers: [{ address: a }, { address: b }] } } });
    cleanups.push(() => run.stop());
    const put = (addr: string, body: unknown) => admin(run.adminPort, 'PUT', `/upstreams/backend/servers/${encodeURIComponent(addr)}`, body);

    const initial = await admin(run.adminPort, 'GET', '/status');
    expect(initial.status).toBe(200);
    expect(serverEntry(initial, a)).toMatchObject({
      address: a, state: 'up', weight: 1, configWeight: 1, effectiveWeight: 1, active: 0, failures: 0, lastProbe: null, sessions: null,
    });
    expect(await route(run.url, 10)).toEqual({ a: 5, b: 5 });

    let r = await put(b, { state: 'drain' });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ address: b, state: 'drain', adminState: 'drain' });
    expect(await route(run.url, 10)).toEqual({ a: 10 });
    expect(serverEntry(await admin(run.adminPort, 'GET', '/status'), b)).toMatchObject({ state: 'drain' });
    expect(run.records.some((x) => x.server === b && x.state === 'drain' && x.previousState === 'ready' && x.client === '127.0.0.1')).toBe(true);

    r = await put(b, { state: 'maint' });
    expect(JSON.parse(r.body)).toMatchObject({ state: 'maint' });
    expect(await route(run.url, 10)).toEqual({ a: 10 });

    r = await put(b, { state: 'ready' });
    expect(JSON.parse(r.body)).toMatchObject({ state: 'up' });
    expect(await route(run.url, 10)).toEqual({ a: 5, b: 5 });

    r = await put(a, { weight: 3 });
    expect(JSON.parse(r.body)).toMatchObject({ weight: 3, configWeight: 1 });
    const counts = await route(run.url, 40);
    expect(counts.a).toBeGreaterThanOrEqual(29);
    expect(counts.a).toBeLessThanOrEqual(31);
    expect(serverEntry(await admin(run.adminPort, 'GET', '/status'), a)).toMatchObject({ weight: 3, configWeight: 1, state: 'up' });
    const requests = serverEntry(await admin(run.adminPort, 'GET', '/status'), a).requests as number;
    expect(requests).toBe(5 + 10 + 10 + 5 + counts.a!);
  });

  it('bad requests get 4xx JSON errors; unknown upstream or server 404; IPv6 addresses URL-encoded', async () => {
    const { a, b } = await twoBackends();
    const run = await startLBWithLog({
      upstreams: { backend: { servers: [{ address: a }, { address: b }, { address: '[::1]:9', down: true }] } },
    });
    cleanups.push(() => run.stop());
    const put = (path: string, body: unknown) => admin(run.adminPort, 'PUT', path, body);
    const srv = `/upstreams/backend/servers/${encodeURIComponent(b)}`;
    const cases: Array<[unknown, number, RegExp]> = [
      ['{not json', 400, /JSON/],
      [[1, 2], 400, /object/],
      [{}, 400, /"state" and\/or "weight"/],
      [{ state: 'off' }, 400, /"drain", "maint" or "ready"/],
      [{ weight: 0 }, 400, /integer >= 1/],
      [{ weight: 1.5 }, 400, /integer >= 1/],
      [{ weight: '2' }, 400, /integer >= 1/],
      [{ state: 'drain', colour: 'red' }, 400, /unknown key "colour"/],
      ['x'.repeat(5000), 413, /larger than/],
    ];
    for (const [body, status, message] of cases) {
      const r = await put(srv, body);
      expect(r.status, JSON.stringify(body).slice(0, 40)).toBe(status);
      expect(r.headers['content-type']).toBe('application/json');
      expect(JSON.parse(r.body).error).toMatch(message);
    }
    expect(run.lb.upstreams.get('backend')!.find(b)!.state.adminState).toBe('ready'); // nothing applied

    let r = await put(`/upstreams/nope/servers/${encodeURIComponent(b)}`, { state: 'drain' });
    expect(r.status).toBe(404);
    expect(JSON.parse(r.body).error).toMatch(/no upstream "nope"/);
    r = await put('/upstreams/backend/servers/127.0.0.1%3A1', { state: 'drain' });
    expect(r.status).toBe(404);
    expect(JSON.parse(r.body).error).toMatch(/no server "127.0.0.1:1"/);
    r = await admin(run.adminPort, 'GET', srv);
    expect(r.status).toBe(405);
    r = await admin(run.adminPort, 'GET', '/nothing-here');
    expect(r.status).toBe(404);

    r = await put('/upstreams/backend/servers/%5B%3A%3A1%5D%3A9', { state: 'maint', weight: 2 });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ address: '[::1]:9', adminState: 'maint', weight: 2, state: 'down' });
  });

  it('403 outside admin.allow; 401 without the right bearer token; /healthz needs no token', async () => {
    const { a } = await twoBackends();
    const denied = await startLBWithLog({
      upstreams: { backend: { servers: [{ address: a }] } },
      admin: { allow: ['10.0.0.0/8'] },
    });
    cleanups.push(() => denied.stop());
    for (const [method, path] of [['GET', '/status'], ['PUT', `/upstreams/backend/servers/${encodeURIComponent(a)}`], ['GET', '/healthz']] as const) {
      const r = await admin(denied.adminPort, method, path, method === 'PUT' ? { state: 'drain' } : undefined);
      expect(r.status).toBe(403);
    }
    expect(denied.lb.upstreams.get('backend')!.find(a)!.state.adminState).toBe('ready');

    const token = 'correct-horse-battery';
    const locked = await startLBWithLog({ upstreams: { backend: { servers: [{ address: a }] } }, admin: { token } });
    cleanups.push(() => locked.stop());
    const srv = `/upstreams/backend/servers/${encodeURIComponent(a)}`;
    expect((await admin(locked.adminPort, 'GET', '/status')).status).toBe(401);
    const wrong = await admin(locked.adminPort, 'GET', '/status', undefined, { Authorization: 'Bearer wrong-token-here' });
    expect(wrong.status).toBe(401);
    expect(wrong.headers['www-authenticate']).toMatch(/^Bearer/);
    expect((await admin(locked.adminPort, 'PUT', srv, { state: 'drain' }, { Authorization: `Bearer ${token}x` })).status).toBe(401);
    expect((await admin(locked.adminPort, 'GET', '/unknown')).status).toBe(401); // no route probing without a token
    expect(locked.lb.upstreams.get('backend')!.find(a)!.state.adminState).toBe('ready');
    expect((await admin(locked.adminPort, 'GET', '/status', undefined, { Authorization: `Bearer ${token}` })).status).toBe(200);
    const ok = await admin(locked.adminPort, 'PUT', srv, { state: 'drain' }, { Authorization: `Bearer ${token}` });
    expect(ok.status).toBe(200);
    expect((await admin(locked.adminPort, 'GET', '/healthz')).status).toBe(200);
  });

  it('the token can come from SESSIONLB_ADMIN_TOKEN', async () => {
    const saved = process.env.SESSIONLB_ADMIN_TOKEN;
    process.env.SESSIONLB_ADMIN_TOKEN = 'from-the-environment';
    try {
      const config = await loadConfig({
        servers: [{ listen: ['127.0.0.1:1'], locations: [{ path: '/', proxyPass: 'http://127.0.0.1:2' }] }],
        admin: { listen: '127.0.0.1:3' },
      });
      expect(config.admin!.token).toBe('from-the-environment');
      const explicit = await loadConfig({
        servers: [{ listen: ['127.0.0.1:1'], locations: [{ path: '/', proxyPass: 'http://127.0.0.1:2' }] }],
        admin: { listen: '127.0.0.1:3', token: 'from-the-file' },
      });
      expect(explicit.admin!.token).toBe('from-the-file');
    } finally {
      if (saved === undefined) delete process.env.SESSIONLB_ADMIN_TOKEN;
      else process.env.SESSIONLB_ADMIN_TOKEN = saved;
    }
  });

  it('runtime state survives a reload and a restart (stateFile); a config weight change wins and is logged', async () => {
    const { a, b } = await twoBackends();
    const dir = await mkdtemp(join(tmpdir(), 'sessionlb-admin-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const stateFile = join(dir, 'state.json');
    const c = await startBackend('c');
    cleanups.push(() => c.close());
    const raw = (servers: unknown[]) => ({ stateFile, upstreams: { backend: { servers } } });
    const first = await startLBWithLog(raw([{ address: a }, { address: b }]));
    let stopped = false;
    cleanups.push(async () => { if (!stopped) await first.stop(); });
    const put = (port: number, addr: string, body: unknown) => admin(port, 'PUT', `/upstreams/backend/servers/${encodeURIComponent(addr)}`, body);
    expect((await put(first.adminPort, a, { weight: 4 })).status).toBe(200);
    expect((await put(first.adminPort, b, { state: 'drain' })).status).toBe(200);

    // Reload (a server added): a and b keep their runtime state.
    await first.lb.reload(await loadConfig(first.configFor(raw([{ address: a }, { address: b }, { address: c.address }])), '<test>'));
    const up = first.lb.upstreams.get('backend')!;
    expect(up.find(a)!.state).toMatchObject({ weight: 4, configWeight: 1 });
    expect(up.find(b)!.state.adminState).toBe('drain');
    const counts = await route(first.url, 10);
    expect(counts.b).toBeUndefined();
    expect(counts.a).toBeGreaterThanOrEqual(7);

    await first.stop();
    stopped = true;
    const saved = JSON.parse(await readFile(stateFile, 'utf8'));
    expect(saved).toEqual({
      version: 1,
      upstreams: {
        backend: {
          [a]: { state: 'ready', weight: 4, configWeight: 1, configState: 'ready' },
          [b]: { state: 'drain', weight: 1, configWeight: 1, configState: 'ready' },
        },
      },
    });

    // Restart with the same config: restored.
    const second = await startLBWithLog(raw([{ address: a }, { address: b }]));
    cleanups.push(() => second.stop());
    expect(second.lb.upstreams.get('backend')!.find(a)!.state).toMatchObject({ weight: 4 });
    expect(second.lb.upstreams.get('backend')!.find(b)!.state.adminState).toBe('drain');
    expect(await route(second.url, 4)).toEqual({ a: 4 });

    await second.stop();
    cleanups.pop();

    // A restart whose config changed a's weight: the config wins over the saved runtime weight, and the log says so.
    const third = await startLBWithLog(raw([{ address: a, weight: 5 }, { address: b }]));
    cleanups.push(() => third.stop());
    expect(third.lb.upstreams.get('backend')!.find(a)!.state).toMatchObject({ weight: 5, configWeight: 5 });
    expect(third.lb.upstreams.get('backend')!.find(b)!.state.adminState).toBe('drain');
    expect(third.records.some((x) => x.server === a && x.runtimeWeight === 4 && x.configWeight === 5 && /config wins/.test(x.msg))).toBe(true);

    // A reload whose config changed a's weight: same.
    expect((await put(third.adminPort, a, { weight: 7 })).status).toBe(200);
    await third.lb.reload(await loadConfig(third.configFor(raw([{ address: a, weight: 2 }, { address: b }])), '<test>'));
    expect(third.lb.upstreams.get('backend')!.find(a)!.state).toMatchObject({ weight: 2, configWeight: 2 });
    expect(third.lb.upstreams.get('backend')!.find(b)!.state.adminState).toBe('drain');
    expect(third.records.some((x) => x.server === a && x.runtimeWeight === 7 && x.configWeight === 2 && /config wins/.test(x.msg))).toBe(true);
    await third.lb.saveRuntimeState();
    expect(JSON.parse(await readFile(stateFile, 'utf8')).upstreams.backend).toEqual({ [b]: { state: 'drain', weight: 1, configWeight: 1, configState: 'ready' } });
  });
});
