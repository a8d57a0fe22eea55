/**
 * Sticky learn with bindings in real memcached processes (and a real nutcracker front):
 * sharing between sessionlb instances, ketama over two servers, faults (kill, SIGSTOP,
 * restart) and bad ids that must never reach memcached.
 */
import http from 'node:http';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort, nameHandler, startBackend, startDelayRelay, startLB, type Backend, type DelayRelay, type RunningLB } from './helpers/net.js';
import { CookieClient, newSessionId, phpHandler, pool } from './helpers/php.js';
import {
  MemcachedProcess, NutcrackerProcess, memcachedAvailable, memcachedCommand, nutcrackerAvailable, startMemcached, startNutcracker,
} from './helpers/memcached.js';
import { startProxyProcess, writeConfig, type RunningChild } from './helpers/child.js';
import { MemcachedStore } from '../src/sessions/memcached-store.js';
import { LocalCache } from '../src/sessions/local-cache.js';
import { storeKeyFunction } from '../src/sessions/store.js';
import { silentLog } from '../src/observability/log.js';

const HAVE_MEMCACHED = memcachedAvailable();
const HAVE_NUTCRACKER = nutcrackerAvailable();
if (!HAVE_MEMCACHED) console.warn('memcached is not installed: skipping memcached sticky tests (.ci/run installs it)');
if (!HAVE_NUTCRACKER) console.warn('nutcracker is not installed: skipping the twemproxy test (.ci/run installs it)');

const KEY_PATTERN = /^sessionlb:[A-Za-z0-9_-]{43}$/;

let backends: Backend[] = [];
let lbs: RunningLB[] = [];
let memcacheds: MemcachedProcess[] = [];
let nutcrackers: NutcrackerProcess[] = [];
let children: RunningChild[] = [];
let relays: DelayRelay[] = [];
const agents: http.Agent[] = [];

afterEach(async () => {
  for (const a of agents.splice(0)) a.destroy();
  await Promise.all(children.splice(0).map((c) => c.kill()));
  await Promise.all(lbs.splice(0).map((l) => l.stop()));
  await Promise.all(relays.splice(0).map((r) => r.close()));
  await Promise.all(nutcrackers.splice(0).map((n) => n.stop()));
  await Promise.all(memcacheds.splice(0).map((m) => m.kill()));
  await Promise.all(backends.splice(0).map((b) => b.close().catch(() => undefined)));
});

function agent(max = 16): http.Agent {
  const a = new http.Agent({ keepAlive: true, maxSockets: max });
  agents.push(a);
  return a;
}

async function memcached(): Promise<MemcachedProcess> {
  const m = await startMemcached();
  memcacheds.push(m);
  return m;
}

async function phpBackends(n: number): Promise<Backend[]> {
  backends = await Promise.all(Array.from({ length: n }, (_, i) => startBackend(`b${i + 1}`, phpHandler)));
  return backends;
}

function stickyUpstream(bs: Backend[]): Record<string, unknown> {
  return { backend: { sticky: { mode: 'learn', cookie: 'PHPSESSID', ttl: '24m' }, servers: bs.map((b) => ({ address: b.address })) } };
}

/** Creates `n` sessions through `url`; returns the clients and the backend each was created on. */
async function createSessions(url: string, n: number, a: http.Agent): Promise<{ clients: CookieClient[]; home: string[] }> {
  const clients = Array.from({ length: n }, () => new CookieClient(a));
  const home: string[] = [];
  await pool(clients, 8, async (c, i) => {
    const r = await c.get(`${url}/`);
    expect(r.status).toBe(200);
    home[i] = r.backend;
  });
  return { clients, home };
}

describe.skipIf(!HAVE_MEMCACHED)('sticky learn with memcached', () => {
  it('two sessionlb processes sharing one memcached route 100% of 100 sessions to the same backend', async () => {
    const m = await memcached();
    const bs = await phpBackends(4);
    const ports = [await freePort(), await freePort()];
    for (const port of ports) {
      const file = writeConfig({
        servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
        sessionStore: { type: 'memcached', servers: [m.address], timeout: '1s', hashKey: 'shared-secret-for-tests-0001' },
        upstreams: stickyUpstream(bs),
      });
      children.push(await startProxyProcess(file, port));
    }
    const a = agent(8);
    const { clients, home } = await createSessions(`http://127.0.0.1:${ports[0]}`, 100, a);
    expect(new Set(home).size).toBe(4);
    let same = 0;
    await pool(clients, 8, async (c, i) => {
      for (let r = 0; r < 3; r++) {
        const res = await c.get(`http://127.0.0.1:${ports[1]}/`);
        if (res.status === 200 && res.backend === home[i]) same++;
      }
    });
    expect(same).toBe(300);
    const keys = await m.keys();
    expect(keys).toHaveLength(100);
    for (const k of keys) expect(k).toMatch(KEY_PATTERN);
    const stats = await m.stats();
    expect(Number(stats.get_hits)).toBeGreaterThanOrEqual(100); // the second instance asked memcached
  });

  it('a learned session is in memcached before its response reaches the client: another instance finds it at once, even over a slow path', async () => {
    const m = await memcached();
    // Instance A reaches memcached through a relay that holds every command for 150 ms; B reaches it directly.
    const slow = await startDelayRelay(m.port, 150);
    relays.push(slow);
    const bs = await phpBackends(2);
    const store = { type: 'memcached', timeout: '2s', hashKey: 'shared-secret-for-tests-0002' };
    const a = await startLB({ sessionStore: { ...store, servers: [slow.address] }, upstreams: stickyUpstream(bs) });
    const b = await startLB({ sessionStore: { ...store, servers: [m.address] }, upstreams: stickyUpstream(bs) });
    lbs.push(a, b);
    const ag = agent(4);
    // B's round robin is one step ahead of A's: a session B does not find goes to the other backend.
    expect((await new CookieClient(ag).get(`${b.url}/`)).status).toBe(200);
    for (let i = 0; i < 6; i++) {
      const c = new CookieClient(ag);
      const created = await c.get(`${a.url}/`);
      expect(created.status).toBe(200);
      expect(created.ms).toBeGreaterThanOrEqual(140); // it waited for the write to get through
      const next = await c.get(`${b.url}/`);
      expect(next.status).toBe(200);
      expect(next.backend).toBe(created.backend);
    }
    expect(b.lb.sessions.stats('backend').lookups.store_hit).toBe(6);
  });

  it('a learning response with a streamed body waits for the binding too; a client that leaves meanwhile frees the upstream', async () => {
    const m = await memcached();
    const slow = await startDelayRelay(m.port, 300);
    relays.push(slow);
    const big = Buffer.alloc(1 << 20, 'x');
    const streaming = await startBackend('s1', (req, res) => {
      req.resume();
      res.writeHead(200, { 'Set-Cookie': `PHPSESSID=${newSessionId()}; path=/`, 'X-Backend': 's1' });
      res.write(big.subarray(0, 1000)); // chunked: the body does not come whole with the head
      setTimeout(() => res.end(big.subarray(1000)), 20);
    });
    backends.push(streaming);
    const store = { type: 'memcached', timeout: '2s', hashKey: 'shared-secret-for-tests-0003' };
    const a = await startLB({ sessionStore: { ...store, servers: [slow.address] }, upstreams: stickyUpstream([streaming]) });
    lbs.push(a);
    const started = performance.now();
    const whole = await new Promise<{ status: number; length: number }>((resolve, reject) => {
      http.get(`${a.url}/`, (res) => {
        let length = 0;
        res.on('data', (c: Buffer) => { length += c.length; });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, length }));
      }).on('error', reject);
    });
    expect(whole).toEqual({ status: 200, length: big.length });
    expect(performance.now() - started).toBeGreaterThanOrEqual(290);
    expect(a.lb.sessions.stats('backend').learned).toBe(1);

    // A client gone while its response waits: the upstream connection is given up, nothing is sent, the proxy carries on.
    const peer = a.lb.upstreams.get('backend')!.find(streaming.address)!;
    const req = http.get(`${a.url}/`);
    req.on('error', () => undefined);
    await waitFor(async () => a.lb.sessions.stats('backend').learned === 2);
    req.destroy();
    await waitFor(async () => peer.active === 0);
    await new Promise((r) => setTimeout(r, 400)); // the write settles after the client left
    const after = await new CookieClient(agent(1)).get(`${a.url}/`);
    expect(after.status).toBe(200);
    expect(after.body.length).toBe(big.length);
  });

  it('two memcached servers: keys spread by ketama land on both, and another instance finds them', async () => {
    const m1 = await memcached();
    const m2 = await memcached();
    const bs = await phpBackends(3);
    const a = agent(8);
    const store = { type: 'memcached', servers: [m1.address, m2.address], timeout: '1s', hashKey: 'shared-secret-for-tests-0002' };
    const lbA = await startLB({ sessionStore: store, upstreams: stickyUpstream(bs) });
    const lbB = await startLB({ sessionStore: { ...store, servers: [m2.address, m1.address] }, upstreams: stickyUpstream(bs) });
    lbs.push(lbA, lbB);
    const direct = await createSessions(lbA.url, 100, a);
    // Bindings are written without waiting (the response does not wait for memcached): let them land.
    await waitFor(async () => (await m1.keys()).length + (await m2.keys()).length >= 100);
    const k1 = await m1.keys();
    const k2 = await m2.keys();
    expect(k1.length + k2.length).toBe(100);
    expect(k1.length).toBeGreaterThan(10);
    expect(k2.length).toBeGreaterThan(10);
    for (const k of [...k1, ...k2]) expect(k).toMatch(KEY_PATTERN);
    let same = 0;
    await pool(direct.clients, 8, async (c, i) => {
      if ((await c.get(`${lbB.url}/`)).backend === direct.home[i]) same++;
    });
    // (lbB lists the servers in another order: the ring depends on the names only.)
    expect(same, `lbB store ${JSON.stringify(lbB.lb.sessions.store.stats)}`).toBe(100);
    expect(lbB.lb.sessions.stats('backend').lookups.store_hit).toBe(100);
  });

  it.skipIf(!HAVE_NUTCRACKER)('a nutcracker front over two memcached: get, set, touch and delete work through it', async () => {
    const m1 = await memcached();
    const m2 = await memcached();
    const bs = await phpBackends(3);
    const a = agent(8);
    const nc = await startNutcracker([m1, m2]);
    nutcrackers.push(nc);
    const viaProxy = { type: 'memcached', servers: [nc.address], keyPrefix: 'nc:', timeout: '1s', hashKey: 'shared-secret-for-tests-0002' };
    const upstreams = { backend: { sticky: { mode: 'learn', ttl: '4s' }, servers: bs.map((b) => ({ address: b.address })) } };
    const lbC = await startLB({ sessionStore: viaProxy, upstreams });
    const lbD = await startLB({ sessionStore: viaProxy, upstreams });
    lbs.push(lbC, lbD);
    const proxied = await createSessions(lbC.url, 100, a);
    // Bindings are written without waiting, here through one more hop: let them land.
    const ncCount = async (): Promise<number> => [...await m1.keys(), ...await m2.keys()].filter((k) => k.startsWith('nc:')).length;
    await waitFor(async () => (await ncCount()) >= 100);
    const ncKeys1 = (await m1.keys()).filter((k) => k.startsWith('nc:'));
    const ncKeys2 = (await m2.keys()).filter((k) => k.startsWith('nc:'));
    expect(ncKeys1.length + ncKeys2.length).toBe(100); // nutcracker spread them (its own ketama)
    expect(ncKeys1.length).toBeGreaterThan(10);
    expect(ncKeys2.length).toBeGreaterThan(10);
    let same = 0;
    await pool(proxied.clients, 8, async (c, i) => {
      if ((await c.get(`${lbD.url}/`)).backend === proxied.home[i]) same++;
    });
    expect(same, `lbD store ${JSON.stringify(lbD.lb.sessions.store.stats)}`).toBe(100);
    // ttl 4s: after ttl/4 a use of the session refreshes its binding with `touch`.
    await new Promise((r) => setTimeout(r, 1100));
    await pool(proxied.clients, 8, async (c, i) => { expect((await c.get(`${lbC.url}/`)).backend).toBe(proxied.home[i]); });
    await waitFor(async () => Number((await m1.stats()).cmd_touch) + Number((await m2.stats()).cmd_touch) >= 100);
    // Logging out (PHP deletes the cookie) deletes the binding.
    await pool(proxied.clients.slice(0, 10), 5, async (c) => { await c.get(`${lbD.url}/logout`); });
    await waitFor(async () => (await ncCount()) === 90);
    for (const l of [lbC, lbD]) {
      expect(l.lb.sessions.store.stats.errors).toEqual({ get: 0, set: 0, touch: 0, delete: 0 });
      expect(l.lb.sessions.store.circuitOpen()).toBe(0);
    }
  });

  it('bad ids never reach memcached: no get/set/touch, only hashed keys', async () => {
    const m = await memcached();
    // A backend that never sets cookies: every memcached command would come from the client's cookie.
    backends = await Promise.all([startBackend('b1', nameHandler), startBackend('b2', nameHandler)]);
    const lb = await startLB({
      sessionStore: { type: 'memcached', servers: [m.address], timeout: '1s' },
      upstreams: stickyUpstream(backends),
    });
    lbs.push(lb);
    const bad = [
      'a b',
      'x\r\nflush_all',
      'x'.repeat(300),
      'ünïcödé-session-id-123456',
      '',
      '\u0000'.repeat(30),
      `${'a'.repeat(26)}\r\nset injected 0 0 1\r\nX`,
      `${'a'.repeat(26)}; PHPSESSID=${'b'.repeat(26)}`, // two different ids
    ];
    const statuses: number[] = [];
    for (const id of bad) statuses.push(await rawGet(lb.port, `PHPSESSID=${id}`));
    // Whatever node's parser accepts is answered (200); what it rejects is a 400 — never a 5xx or a crash.
    for (const s of statuses) expect([200, 400]).toContain(s);
    expect(statuses.filter((s) => s === 200).length).toBeGreaterThanOrEqual(5);
    const stats = await m.stats();
    expect(Number(stats.cmd_get)).toBe(0);
    expect(Number(stats.cmd_set)).toBe(0);
    expect(Number(stats.cmd_touch)).toBe(0);
    expect(await m.keys()).toEqual([]);
    expect(lb.lb.sessions.stats('backend').lookups.invalid_id).toBe(statuses.filter((s) => s === 200).length);

    // Control: a valid id does reach memcached, as a hashed key only.
    const id = newSessionId();
    expect(await rawGet(lb.port, `PHPSESSID=${id}`)).toBe(200);
    await waitFor(async () => (await m.keys()).length === 1);
    const keys = await m.keys();
    expect(keys[0]).toMatch(KEY_PATTERN);
    expect(keys[0]).not.toContain(id);
    expect(Number((await m.stats()).cmd_get)).toBe(1);
  });

  it('memcached killed, SIGSTOPped, restarted: zero failed requests, bounded added latency, recovery without restart', async () => {
    const m = await memcached();
    const bs = await phpBackends(3);
    const lb = await startLB({
      sessionStore: {
        type: 'memcached', servers: [m.address], timeout: '50ms', maxFails: 3, failTimeout: '300ms', localCacheFresh: '50ms',
      },
      upstreams: stickyUpstream(bs),
    });
    lbs.push(lb);
    const store = lb.lb.sessions.store;
    const a = agent(8);
    const { clients, home } = await createSessions(lb.url, 40, a);

    /** One phase: every session makes `rounds` requests and 10 new sessions start; returns failures and the slowest request. */
    const phase = async (rounds: number): Promise<{ failed: number; moved: number; maxMs: number }> => {
      let failed = 0;
      let moved = 0;
      let maxMs = 0;
      await pool(clients, 8, async (c, i) => {
        for (let r = 0; r < rounds; r++) {
          await new Promise((res) => setTimeout(res, 10));
          const res = await c.get(`${lb.url}/`);
          if (res.status !== 200) failed++;
          if (res.backend !== home[i]) moved++;
          maxMs = Math.max(maxMs, res.ms);
        }
      });
      const fresh = await createSessions(lb.url, 10, a).catch(() => null);
      if (fresh === null) failed++;
      // Ids this instance has never seen: these lookups must ask memcached (and wait at most `timeout`).
      await pool(Array.from({ length: 10 }, () => newSessionId()), 5, async (id) => {
        const c = new CookieClient(a);
        c.jar.set('PHPSESSID', id);
        const res = await c.get(`${lb.url}/`);
        if (res.status !== 200) failed++;
        maxMs = Math.max(maxMs, res.ms);
      });
      return { failed, moved, maxMs };
    };

    const healthy = await phase(2);
    expect(healthy).toMatchObject({ failed: 0, moved: 0 });

    await m.kill();
    const killed = await phase(3);
    expect(killed.failed).toBe(0);
    expect(killed.moved).toBe(0); // routed from the local cache
    expect(store.circuitOpen()).toBe(1);

    await m.start(); // same port: sessionlb must find it again by itself
    await waitFor(async () => {
      await phase(1);
      return store.circuitOpen() === 0;
    });
    expect((await m.keys()).length).toBeGreaterThan(0); // writes flow again (new bindings, repaired ones)

    await m.pause();
    let hung = { failed: -1, moved: -1, maxMs: -1 };
    try {
      hung = await phase(3);
      expect(hung.failed).toBe(0);
      expect(hung.moved).toBe(0);
      // Added latency bounded by `timeout` (50ms): generous bound, this is not a timing test.
      expect(hung.maxMs).toBeLessThan(1500);
      expect(store.circuitOpen()).toBe(1);
      expect(store.stats.skipped.get).toBeGreaterThan(0); // the breaker kept calls away
    } finally {
      m.resume();
    }
    await waitFor(async () => {
      await phase(1);
      return store.circuitOpen() === 0;
    });
    const after = await phase(2);
    expect(after).toMatchObject({ failed: 0, moved: 0 });
    console.info(`memcached faults: slowest request healthy ${healthy.maxMs.toFixed(0)} ms, killed ${killed.maxMs.toFixed(0)} ms, `
      + `SIGSTOP ${hung.maxMs.toFixed(0)} ms, after ${after.maxMs.toFixed(0)} ms (timeout 50 ms); store errors ${JSON.stringify(store.stats.errors)}, `
      + `skipped by the breaker ${JSON.stringify(store.stats.skipped)}`);
  });
});

describe.skipIf(!HAVE_MEMCACHED)('local cache in front of memcached', () => {
  it('concurrent lookups of one id share one get; touch at most once per ttl/4; a binding memcached lost is written back', async () => {
    const m = await memcached();
    const store = new MemcachedStore({ servers: [m.address], timeoutMs: 1000, maxFails: 5, failTimeoutMs: 1000, log: silentLog() });
    const cache = new LocalCache(store, { entries: 100, freshMs: 30_000 }, storeKeyFunction('t:', 'test-hash-key-0123456789'));
    try {
      const answers: Array<[string | null, string]> = [];
      const waiter = { onLookup: (v: string | null, r: string) => { answers.push([v, r]); } };
      const t0 = Date.now();
      for (let i = 0; i < 20; i++) expect(cache.lookup('up\0id-1', 40_000, t0, waiter)).toBe(undefined);
      await waitFor(async () => answers.length === 20);
      expect(answers.every(([v, r]) => v === null && r === 'miss')).toBe(true);
      expect(Number((await m.stats()).cmd_get)).toBe(1);

      cache.bind('up\0id-1', '10.0.0.1:80', 40_000, t0);
      await waitFor(async () => Number((await m.stats()).cmd_set) === 1);
      // (Times are given, not waited for.) Fresh hits within ttl/4 (10s) send nothing; at 10s one touch; then nothing until 20s.
      for (const dt of [0, 10, 5000, 9999]) expect(cache.lookup('up\0id-1', 40_000, t0 + dt, waiter)).toBe('10.0.0.1:80');
      expect(Number((await m.stats()).cmd_touch)).toBe(0);
      for (const dt of [10_000, 10_001, 15_000, 19_999]) expect(cache.lookup('up\0id-1', 40_000, t0 + dt, waiter)).toBe('10.0.0.1:80');
      await waitFor(async () => Number((await m.stats()).cmd_touch) === 1);
      expect(cache.lookup('up\0id-1', 40_000, t0 + 20_000, waiter)).toBe('10.0.0.1:80');
      await waitFor(async () => Number((await m.stats()).cmd_touch) === 2);
      expect(Number((await m.stats()).cmd_get)).toBe(1);

      // memcached loses everything (flush_all); after freshness the entry is revalidated in the
      // background, still answered at once, and written back.
      await memcachedCommand(m.port, 'flush_all', 'OK\r\n');
      expect(cache.lookup('up\0id-1', 40_000, t0 + 30_001, waiter)).toBe('10.0.0.1:80');
      await waitFor(async () => (await m.keys()).length === 1);
      expect((await m.keys())[0]).toMatch(/^t:[A-Za-z0-9_-]{43}$/);

      // A rebind made here while a get is in flight is not overwritten by the (older) answer of that get.
      const toKey = storeKeyFunction('t:', 'test-hash-key-0123456789');
      await store.set(toKey('up\0id-2'), '10.0.0.1:80', 60);
      const late: Array<[string | null, string]> = [];
      expect(cache.lookup('up\0id-2', 40_000, Date.now(), { onLookup: (v, r) => { late.push([v, r]); } })).toBe(undefined);
      await new Promise((r) => setImmediate(r)); // the get is on the wire (gets are sent at the end of a turn)
      cache.bind('up\0id-2', '10.0.0.2:80', 40_000, Date.now());
      await waitFor(async () => late.length === 1);
      expect(late[0]).toEqual(['10.0.0.2:80', 'local_hit']);
      expect(cache.peek('up\0id-2')).toBe('10.0.0.2:80');
      await waitFor(async () => (await m.get(toKey('up\0id-2'))) === '10.0.0.2:80');

      // A touch that finds the binding gone (evicted, flushed) writes it again.
      const t1 = Date.now();
      cache.bind('up\0id-3', '10.0.0.3:80', 40_000, t1);
      await waitFor(async () => (await m.get(toKey('up\0id-3'))) === '10.0.0.3:80');
      await memcachedCommand(m.port, 'flush_all', 'OK\r\n');
      expect(cache.lookup('up\0id-3', 40_000, t1 + 10_000, waiter)).toBe('10.0.0.3:80'); // fresh, touch due
      await waitFor(async () => (await m.get(toKey('up\0id-3'))) === '10.0.0.3:80');
    } finally {
      await store.close();
    }
  });
});

describe.skipIf(!HAVE_MEMCACHED)('memcached store', () => {
  it('a hanging server: every call answers within about `timeout`, then the breaker stops calling it; it recovers by itself', async () => {
    const m = await memcached();
    const store = new MemcachedStore({ servers: [m.address], timeoutMs: 50, maxFails: 3, failTimeoutMs: 200, log: silentLog() });
    try {
      await store.set('k', '10.0.0.1:80', 60);
      expect(await store.get('k')).toBe('10.0.0.1:80');
      await m.pause();
      const times: number[] = [];
      for (let i = 0; i < 6; i++) {
        const t = performance.now();
        await expect(store.get('k')).rejects.toThrow(i < 3 ? /timed out/ : /circuit open/);
        times.push(performance.now() - t);
      }
      for (const t of times.slice(0, 3)) expect(t).toBeLessThan(1000); // ~50ms; generous bound
      for (const t of times.slice(3)) expect(t).toBeLessThan(20); // breaker open: no wait at all
      expect(store.circuitOpen()).toBe(1);
      m.resume();
      await waitFor(async () => (await store.get('k').catch(() => null)) === '10.0.0.1:80');
      expect(store.circuitOpen()).toBe(0);
    } finally {
      m.resume();
      await store.close();
    }
  });
});

/** A GET with a raw Cookie header written byte for byte (CR/LF and non-ASCII included); resolves the status (0 = closed). */
function rawGet(port: number, cookie: string): Promise<number> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    s.setEncoding('latin1');
    const timer = setTimeout(() => { s.destroy(); resolve(0); }, 5000);
    s.on('data', (d: string) => {
      buf += d;
      const m = /^HTTP\/1\.1 (\d{3})/.exec(buf);
      if (m && buf.includes('\r\n\r\n')) {
        clearTimeout(timer);
        s.destroy();
        resolve(Number(m[1]));
      }
    });
    s.on('error', () => { clearTimeout(timer); resolve(0); });
    s.on('close', () => { clearTimeout(timer); resolve(0); });
    s.write(Buffer.concat([
      Buffer.from('GET / HTTP/1.1\r\nHost: localhost\r\nCookie: '),
      Buffer.from(cookie, 'utf8'),
      Buffer.from('\r\nConnection: close\r\n\r\n'),
    ]));
  });
}

/** Polls `check` until true (bounded: 100 tries, ~15s). */
async function waitFor(check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error('condition not reached in time');
}
