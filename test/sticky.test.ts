/** Session affinity on the embedded memory store and the store-less modes (real backends, sessionlb in-process). */
import http from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { startBackend, startLB, type Backend, type RunningLB } from './helpers/net.js';
import { CookieClient, newSessionId, phpHandler, pool } from './helpers/php.js';
import { loadConfig } from '../src/config/load.js';
import { localKey } from '../src/sessions/store.js';
import type { MemoryStore } from '../src/sessions/memory-store.js';

let backends: Backend[] = [];
let lbs: RunningLB[] = [];
const agents: http.Agent[] = [];

afterEach(async () => {
  for (const a of agents.splice(0)) a.destroy();
  await Promise.all(lbs.splice(0).map((l) => l.stop()));
  await Promise.all(backends.splice(0).map((b) => b.close().catch(() => undefined)));
});

function agent(max = 16): http.Agent {
  const a = new http.Agent({ keepAlive: true, maxSockets: max });
  agents.push(a);
  return a;
}

async function phpBackends(n: number): Promise<Backend[]> {
  backends = await Promise.all(Array.from({ length: n }, (_, i) => startBackend(`b${i + 1}`, phpHandler)));
  return backends;
}

function upstream(bs: Backend[], sticky: Record<string, unknown>, extra: (b: Backend, i: number) => Record<string, unknown> = () => ({})): Record<string, unknown> {
  return { sticky, servers: bs.map((b, i) => ({ address: b.address, ...extra(b, i) })) };
}

describe('sticky learn (memory store)', () => {
  it('200 sessions x 20 requests: every request of a session hits the backend that created it', async () => {
    const bs = await phpBackends(4);
    const lb = await startLB({ upstreams: { backend: upstream(bs, { mode: 'learn', cookie: 'PHPSESSID' }) } });
    lbs.push(lb);
    const a = agent(16);
    const sessions = Array.from({ length: 200 }, () => new CookieClient(a));
    const seen = sessions.map(() => new Set<string>());
    const created: string[] = [];
    let failures = 0;
    await pool(sessions, 16, async (client, i) => {
      for (let r = 0; r < 20; r++) {
        const res = await client.get(`${lb.url}/page`);
        if (res.status !== 200) failures++;
        if (r === 0) created[i] = res.backend;
        seen[i]!.add(res.backend);
      }
    });
    expect(failures).toBe(0);
    const moved = seen.filter((s, i) => s.size !== 1 || !s.has(created[i]!)).length;
    expect(moved).toBe(0);
    // The balancer spread the new sessions (equal weights): every backend created some.
    expect(new Set(created).size).toBe(4);
    const stats = lb.lb.sessions.stats('backend');
    expect(stats.learned).toBe(200);
    expect(stats.lookups.local_hit).toBe(200 * 19);
    // /status "sessions bound" (known with the memory store): 200 in all, as created.
    const bound = bs.map((b) => lb.lb.sessionsBound!('backend', b.address));
    expect(bound.reduce((x, y) => x! + y!, 0)).toBe(200);
    expect(bound).toEqual(bs.map((b) => created.filter((c) => c === b.name).length));
  });

  it('session_regenerate_id binds the new id; a deleting Set-Cookie removes the binding', async () => {
    const bs = await phpBackends(3);
    const lb = await startLB({ upstreams: { backend: upstream(bs, { mode: 'learn' }) } });
    lbs.push(lb);
    const client = new CookieClient(agent(1));
    const first = await client.get(`${lb.url}/`);
    const oldId = client.jar.get('PHPSESSID')!;
    const store = lb.lb.sessions.store as MemoryStore;
    expect(store.getSync(localKey('backend', oldId), Date.now())).toBe(bs.find((b) => b.name === first.backend)!.address);
    const regen = await client.get(`${lb.url}/regenerate`);
    expect(regen.backend).toBe(first.backend);
    const newId = client.jar.get('PHPSESSID')!;
    expect(newId).not.toBe(oldId);
    for (let i = 0; i < 10; i++) expect((await client.get(`${lb.url}/`)).backend).toBe(first.backend);
    expect(store.getSync(localKey('backend', newId), Date.now())).toBe(bs.find((b) => b.name === first.backend)!.address);
    await client.get(`${lb.url}/logout`);
    expect(store.getSync(localKey('backend', newId), Date.now())).toBe(null);
    expect(lb.lb.sessions.stats('backend').unbound).toBe(1);
  });

  it('an unknown (but valid) id is bound to the server the balancer picks', async () => {
    const bs = await phpBackends(3);
    const lb = await startLB({ upstreams: { backend: upstream(bs, { mode: 'learn' }) } });
    lbs.push(lb);
    const client = new CookieClient(agent(1));
    client.jar.set('PHPSESSID', newSessionId());
    const first = await client.get(`${lb.url}/`);
    for (let i = 0; i < 10; i++) expect((await client.get(`${lb.url}/`)).backend).toBe(first.backend);
    expect(lb.lb.sessions.stats('backend').lookups.miss).toBe(1);
  });

  it('backend killed: its sessions move on the next request without an error, and stay on the new backend', async () => {
    const bs = await phpBackends(3);
    const lb = await startLB({ upstreams: { backend: upstream(bs, { mode: 'learn' }) } });
    lbs.push(lb);
    const a = agent(8);
    const sessions = Array.from({ length: 30 }, () => new CookieClient(a));
    const home: string[] = [];
    await pool(sessions, 8, async (c, i) => { home[i] = (await c.get(`${lb.url}/`)).backend; });
    const victim = bs[0]!;
    expect(home.filter((h) => h === victim.name).length).toBeGreaterThan(0);
    await victim.close();
    const after: string[] = [];
    let failures = 0;
    await pool(sessions, 8, async (c, i) => {
      const r = await c.get(`${lb.url}/`);
      if (r.status !== 200) failures++;
      after[i] = r.backend;
    });
    expect(failures).toBe(0);
    home.forEach((h, i) => {
      if (h === victim.name) expect(after[i]).not.toBe(victim.name);
      else expect(after[i]).toBe(h); // the others did not move
    });
    // The moved sessions stay where they landed.
    await pool(sessions, 8, async (c, i) => {
      for (let r = 0; r < 5; r++) {
        const res = await c.get(`${lb.url}/`);
        expect(res.status).toBe(200);
        expect(res.backend).toBe(after[i]);
      }
    });
    const stats = lb.lb.sessions.stats('backend');
    const movedCount = home.filter((h) => h === victim.name).length;
    expect(stats.rebinds.failed).toBe(movedCount);
  });

  it('drain: bound sessions stay on the drained server, new sessions avoid it', async () => {
    const bs = await phpBackends(3);
    const raw = (drain: boolean): Record<string, unknown> => ({
      upstreams: { backend: upstream(bs, { mode: 'learn' }, (_b, i) => (i === 0 && drain ? { drain: true } : {})) },
    });
    const lb = await startLB(raw(false));
    lbs.push(lb);
    const a = agent(8);
    const sessions = Array.from({ length: 30 }, () => new CookieClient(a));
    const home: string[] = [];
    await pool(sessions, 8, async (c, i) => { home[i] = (await c.get(`${lb.url}/`)).backend; });
    const drained = bs[0]!.name;
    expect(home.filter((h) => h === drained).length).toBeGreaterThan(0);
    // Reload with "drain": true on the first server (same listen port, as a config file reload does).
    const next = await loadConfig({ ...raw(true), servers: [{ listen: [`127.0.0.1:${lb.port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }] });
    await lb.lb.reload(next);
    expect(lb.lb.upstreams.get('backend')!.primary[0]!.state.adminState).toBe('drain');
    await pool(sessions, 8, async (c, i) => {
      for (let r = 0; r < 5; r++) expect((await c.get(`${lb.url}/`)).backend).toBe(home[i]);
    });
    const fresh = Array.from({ length: 60 }, () => new CookieClient(a));
    const landed: string[] = [];
    await pool(fresh, 8, async (c) => {
      for (let r = 0; r < 3; r++) landed.push((await c.get(`${lb.url}/`)).backend);
    });
    expect(landed.length).toBe(180);
    expect(landed).not.toContain(drained);
  });

  it('invalid or conflicting session cookies are no session (counted), and the request still succeeds', async () => {
    const bs = await phpBackends(2);
    const lb = await startLB({ upstreams: { backend: upstream(bs, { mode: 'learn' }) } });
    lbs.push(lb);
    const a = agent(1);
    for (const cookie of ['PHPSESSID=a b', `PHPSESSID=${'x'.repeat(300)}`, 'PHPSESSID=', `PHPSESSID=${newSessionId()}; PHPSESSID=${newSessionId()}`]) {
      const c = new CookieClient(a);
      const r = await c.get(`${lb.url}/`, { Cookie: cookie });
      expect(r.status).toBe(200);
    }
    expect(lb.lb.sessions.stats('backend').lookups.invalid_id).toBe(4);
    expect((lb.lb.sessions.store as MemoryStore).size).toBe(0);
  });
});

describe('sticky and reloads', () => {
  it('a bound server removed by reload: its sessions are rebound ("removed") and stay; the store survives an unchanged reload', async () => {
    const bs = await phpBackends(3);
    const cfg = (servers: Backend[]): Record<string, unknown> => ({ upstreams: { backend: upstream(servers, { mode: 'learn' }) } });
    const lb = await startLB(cfg(bs));
    lbs.push(lb);
    const a = agent(8);
    const sessions = Array.from({ length: 30 }, () => new CookieClient(a));
    const home: string[] = [];
    await pool(sessions, 8, async (c, i) => { home[i] = (await c.get(`${lb.url}/`)).backend; });
    const store = lb.lb.sessions.store;
    const listen = { servers: [{ listen: [`127.0.0.1:${lb.port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }] };
    await lb.lb.reload(await loadConfig({ ...cfg(bs.slice(1)), ...listen }));
    expect(lb.lb.sessions.store).toBe(store); // same sessionStore config: same store, bindings kept
    const after: string[] = [];
    await pool(sessions, 8, async (c, i) => {
      const r = await c.get(`${lb.url}/`);
      expect(r.status).toBe(200);
      after[i] = r.backend;
      if (home[i] !== bs[0]!.name) expect(r.backend).toBe(home[i]);
      else expect(r.backend).not.toBe(bs[0]!.name);
    });
    await pool(sessions, 8, async (c, i) => {
      for (let r = 0; r < 3; r++) expect((await c.get(`${lb.url}/`)).backend).toBe(after[i]);
    });
    expect(lb.lb.sessions.stats('backend').rebinds.removed).toBe(home.filter((h) => h === bs[0]!.name).length);
    // Writing the default explicitly changes nothing; another store type makes a new store.
    await lb.lb.reload(await loadConfig({ ...cfg(bs.slice(1)), ...listen, sessionStore: { type: 'memory' } }));
    expect(lb.lb.sessions.store).toBe(store);
    await lb.lb.reload(await loadConfig({ ...cfg(bs.slice(1)), ...listen, sessionStore: { type: 'memcached', servers: ['127.0.0.1:9'] } }));
    expect(lb.lb.sessions.store.type).toBe('memcached');
  });
});

describe('sticky cookie (signed, no store)', () => {
  it('a cookie naming a server removed by reload is stale: ignored, counted, replaced', async () => {
    const bs = await phpBackends(2);
    const cfg = (servers: Backend[]): Record<string, unknown> => ({
      upstreams: { backend: upstream(servers, { mode: 'cookie', cookieKey: 'test-cookie-key-0123456789' }) },
    });
    const lb = await startLB(cfg(bs));
    lbs.push(lb);
    const a = agent(2);
    let client = new CookieClient(a);
    for (let i = 0; i < 10 && (await client.get(`${lb.url}/`)).backend !== bs[0]!.name; i++) client = new CookieClient(a);
    expect((await client.get(`${lb.url}/`)).backend).toBe(bs[0]!.name);
    const old = client.jar.get('SESSIONLB');
    const listen = { servers: [{ listen: [`127.0.0.1:${lb.port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }] };
    await lb.lb.reload(await loadConfig({ ...cfg(bs.slice(1)), ...listen }));
    const r = await client.get(`${lb.url}/`);
    expect(r.status).toBe(200);
    expect(r.backend).toBe(bs[1]!.name);
    expect(client.jar.get('SESSIONLB')).not.toBe(old);
    expect(lb.lb.sessions.stats('backend').rejectedCookies.stale).toBe(1);
  });


  it('pins a client by its own HttpOnly SameSite cookie, hides it from the backend, ignores forged ones', async () => {
    const bs = await phpBackends(3);
    const lb = await startLB({ upstreams: { backend: upstream(bs, { mode: 'cookie', cookieKey: 'test-cookie-key-0123456789' }) } });
    lbs.push(lb);
    const a = agent(4);
    const client = new CookieClient(a);
    const first = await client.get(`${lb.url}/`);
    const setCookies = (first.headers['set-cookie'] ?? []).filter((c) => c.startsWith('SESSIONLB='));
    expect(setCookies).toHaveLength(1);
    expect(setCookies[0]).toMatch(/; HttpOnly; SameSite=Lax$/);
    for (const b of bs) expect(setCookies[0]).not.toContain(String(b.port));
    expect(first.headers['cache-control']).toBe('private');
    for (let i = 0; i < 15; i++) {
      const r = await client.get(`${lb.url}/`);
      expect(r.backend).toBe(first.backend);
      expect(r.headers['x-seen-cookie']).not.toContain('SESSIONLB');
      expect(r.headers['x-seen-cookie']).toContain('PHPSESSID');
      expect(r.headers['set-cookie']?.some((c) => c.startsWith('SESSIONLB='))).not.toBe(true);
    }
    // Forged cookies are ignored (and counted): the request is balanced and gets a fresh cookie.
    const value = client.jar.get('SESSIONLB')!;
    const forged = new CookieClient(a);
    forged.jar.set('SESSIONLB', value.slice(0, -2) + (value.endsWith('AA') ? 'BB' : 'AA'));
    const r = await forged.get(`${lb.url}/`);
    expect(r.status).toBe(200);
    expect(forged.jar.get('SESSIONLB')).not.toBe(value.slice(0, -2));
    const stats = lb.lb.sessions.stats('backend');
    expect(stats.rejectedCookies.forged).toBe(1);
    expect(stats.lookups.invalid_id).toBe(1);
    expect(stats.lookups.local_hit).toBe(15);
  });

  it('moves the client when its server is down, and re-pins it with a new cookie', async () => {
    const bs = await phpBackends(2);
    const lb = await startLB({ upstreams: { backend: upstream(bs, { mode: 'cookie', cookieKey: 'test-cookie-key-0123456789' }) } });
    lbs.push(lb);
    const client = new CookieClient(agent(1));
    const first = await client.get(`${lb.url}/`);
    const before = client.jar.get('SESSIONLB');
    await bs.find((b) => b.name === first.backend)!.close();
    const moved = await client.get(`${lb.url}/`);
    expect(moved.status).toBe(200);
    expect(moved.backend).not.toBe(first.backend);
    expect(client.jar.get('SESSIONLB')).not.toBe(before);
    for (let i = 0; i < 5; i++) expect((await client.get(`${lb.url}/`)).backend).toBe(moved.backend);
  });
});

describe('sticky hash (no store)', () => {
  it('two instances send a session id to the same backend, and move it to the same next one when it fails', async () => {
    const bs = await phpBackends(4);
    const raw = { upstreams: { backend: upstream(bs, { mode: 'hash' }) } };
    const lb1 = await startLB(raw);
    const lb2 = await startLB(raw);
    lbs.push(lb1, lb2);
    const a = agent(8);
    const ids = Array.from({ length: 40 }, () => newSessionId());
    const where: string[] = [];
    await pool(ids, 8, async (id, i) => {
      const c = new CookieClient(a);
      c.jar.set('PHPSESSID', id);
      const r1 = await c.get(`${lb1.url}/`);
      const r2 = await c.get(`${lb2.url}/`);
      expect(r2.backend).toBe(r1.backend);
      where[i] = r1.backend;
    });
    expect(new Set(where).size).toBeGreaterThan(1);
    const victim = bs[0]!;
    await victim.close();
    await pool(ids, 8, async (id, i) => {
      const c = new CookieClient(a);
      c.jar.set('PHPSESSID', id);
      const r1 = await c.get(`${lb1.url}/`);
      const r1b = await c.get(`${lb1.url}/`);
      const r2 = await c.get(`${lb2.url}/`);
      const r2b = await c.get(`${lb2.url}/`);
      expect([r1.status, r1b.status, r2.status, r2b.status]).toEqual([200, 200, 200, 200]);
      if (where[i] !== victim.name) expect(r1.backend).toBe(where[i]);
      expect(r1b.backend).toBe(r2b.backend);
      expect(r1b.backend).not.toBe(victim.name);
    });
  });
});

describe('sticky and websockets', () => {
  it('an Upgrade request goes to the session\'s bound server', async () => {
    const bs = await phpBackends(3);
    for (const b of bs) {
      b.server.on('upgrade', (_req: http.IncomingMessage, socket: import('node:net').Socket) => {
        socket.end(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Backend: ${b.name}\r\n\r\n`);
      });
    }
    const lb = await startLB({ upstreams: { backend: upstream(bs, { mode: 'learn' }) } });
    lbs.push(lb);
    const a = agent(4);
    const clients = Array.from({ length: 9 }, () => new CookieClient(a));
    const home: string[] = [];
    await pool(clients, 3, async (c, i) => { home[i] = (await c.get(`${lb.url}/`)).backend; });
    expect(new Set(home).size).toBe(3);
    for (const [i, c] of clients.entries()) {
      const backend = await new Promise<string>((resolve, reject) => {
        const req = http.request(`${lb.url}/ws`, {
          agent: false, headers: { Connection: 'Upgrade', Upgrade: 'websocket', Cookie: c.cookieHeader()! },
        });
        req.on('upgrade', (res, socket) => { socket.destroy(); resolve(String(res.headers['x-backend'])); });
        req.on('response', (res) => reject(new Error(`no upgrade: ${res.statusCode}`)));
        req.on('error', reject);
        req.end();
      });
      expect(backend).toBe(home[i]);
    }
  });
});

describe('the session store start-up lines', () => {
  it('are logged only when a sticky "learn" upstream uses the store, once', async () => {
    const { startLBWithLog } = await import('./helpers/capture-log.js');
    const storeLines = (records: { msg: string }[]): string[] => records.map((r) => r.msg).filter((m) => m.startsWith('session store:'));
    const plain = await startLBWithLog({ upstreams: { backend: { servers: [{ address: '127.0.0.1:9' }] } } });
    const sticky = await startLBWithLog({
      upstreams: { backend: { servers: [{ address: '127.0.0.1:9' }], sticky: { mode: 'learn', cookie: 'PHPSESSID' } } },
    });
    try {
      expect(storeLines(plain.records)).toEqual([]);
      expect(storeLines(sticky.records)).toEqual(['session store: memory (no sessionStore configured); sticky bindings are local to this process']);
    } finally {
      await plain.stop();
      await sticky.stop();
    }
  });
});
