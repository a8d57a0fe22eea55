import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  DEFAULT_ID_RULES, findCookie, isValidSessionId, parseSetCookie, sessionIdFromCookieHeader,
} from '../src/sessions/session-id.js';
import { LocalCache, Lru } from '../src/sessions/local-cache.js';
import { CookieSigner, stripCookie } from '../src/sessions/signed-cookie.js';
import { KetamaRing } from '../src/sessions/ketama.js';
import { storeKeyFunction, localKey } from '../src/sessions/store.js';
import { loadConfig } from '../src/config/load.js';
import { ConfigError } from '../src/config/model.js';
import type { IncomingMessage } from 'node:http';
import { Upstream } from '../src/balancer/upstream.js';
import type { Peer } from '../src/balancer/peer.js';
import { Affinity, AffinityStats, StickyState } from '../src/sessions/affinity.js';
import { MemoryStore } from '../src/sessions/memory-store.js';

const ID = 'abcdefghijklmnopqrstuvwxyz'; // 26 chars, PHP's default length
const rules = DEFAULT_ID_RULES;

describe('session id parsing', () => {
  it('accepts PHP ids (alphabet A-Za-z0-9,- and 22..256 chars)', () => {
    expect(isValidSessionId(ID, rules)).toBe(true);
    expect(isValidSessionId('A-Z,a-z,0-9-ABCDEFGHIJK', rules)).toBe(true);
    expect(isValidSessionId('x'.repeat(22), rules)).toBe(true);
    expect(isValidSessionId('x'.repeat(256), rules)).toBe(true);
  });

  it.each([
    ['empty', ''],
    ['space', 'a b'.padEnd(26, 'c')],
    ['CRLF injection', 'x\r\nflush_all'.padEnd(30, 'y')],
    ['too short', 'x'.repeat(21)],
    ['too long', 'x'.repeat(257)],
    ['300 chars', 'x'.repeat(300)],
    ['unicode', 'ééééééééééééééééééééééééé'],
    ['NUL', `${'a'.repeat(24)}\0b`],
    ['quotes', `"${'a'.repeat(24)}"`],
    ['semicolon-free but percent', `${'a'.repeat(24)}%0a`],
    ['underscore', `${'a'.repeat(24)}_b`],
  ])('rejects %s', (_name, id) => {
    expect(isValidSessionId(id, rules)).toBe(false);
  });

  it('honours configured lengths', () => {
    expect(isValidSessionId('abc', { minLength: 3, maxLength: 4 })).toBe(true);
    expect(isValidSessionId('abcde', { minLength: 3, maxLength: 4 })).toBe(false);
  });

  it('finds the cookie among others, with or without spaces', () => {
    expect(findCookie(`a=1; PHPSESSID=${ID}; b=2`, 'PHPSESSID')).toBe(ID);
    expect(findCookie(`PHPSESSID=${ID}`, 'PHPSESSID')).toBe(ID);
    expect(findCookie(`a=1;PHPSESSID=${ID}`, 'PHPSESSID')).toBe(ID);
    expect(findCookie('a=1; XPHPSESSID=zzz; PHPSESSIDX=yyy', 'PHPSESSID')).toBe(null);
    expect(findCookie(undefined, 'PHPSESSID')).toBe(null);
    expect(findCookie('', 'PHPSESSID')).toBe(null);
  });

  it('several conflicting cookies mean no session; a repeated equal one is fine', () => {
    expect(sessionIdFromCookieHeader(`PHPSESSID=${ID}; PHPSESSID=${ID.toUpperCase()}`, 'PHPSESSID', rules)).toBe(false);
    expect(sessionIdFromCookieHeader(`PHPSESSID=${ID}; PHPSESSID=${ID}`, 'PHPSESSID', rules)).toBe(ID);
    expect(sessionIdFromCookieHeader('PHPSESSID=', 'PHPSESSID', rules)).toBe(false);
    expect(sessionIdFromCookieHeader('PHPSESSID=a b', 'PHPSESSID', rules)).toBe(false);
  });

  it('property: whatever the header, a returned id is valid', () => {
    fc.assert(fc.property(fc.string({ maxLength: 400 }), (junk) => {
      const r = sessionIdFromCookieHeader(`x=1; PHPSESSID=${junk}; y=2`, 'PHPSESSID', rules);
      if (typeof r === 'string') expect(isValidSessionId(r, rules)).toBe(true);
    }), { numRuns: 500 });
  });

  it('reads Set-Cookie: new id, deletion (Max-Age=0, past Expires, "deleted"), others ignored', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    expect(parseSetCookie(`PHPSESSID=${ID}; path=/; HttpOnly`, 'PHPSESSID', rules, now)).toEqual({ kind: 'set', id: ID });
    expect(parseSetCookie(`PHPSESSID=${ID}; Max-Age=0; path=/`, 'PHPSESSID', rules, now)).toEqual({ kind: 'delete', id: ID });
    expect(parseSetCookie(`PHPSESSID=${ID}; expires=Thu, 01 Jan 1970 00:00:01 GMT`, 'PHPSESSID', rules, now)).toEqual({ kind: 'delete', id: ID });
    expect(parseSetCookie(`PHPSESSID=${ID}; expires=Thu, 01 Jan 2099 00:00:01 GMT`, 'PHPSESSID', rules, now)).toEqual({ kind: 'set', id: ID });
    expect(parseSetCookie('PHPSESSID=deleted; expires=Thu, 01-Jan-1970 00:00:01 GMT; Max-Age=0; path=/', 'PHPSESSID', rules, now))
      .toEqual({ kind: 'delete', id: '' });
    expect(parseSetCookie('PHPSESSID=a b', 'PHPSESSID', rules, now)).toEqual({ kind: 'invalid' });
    expect(parseSetCookie(`OTHER=${ID}`, 'PHPSESSID', rules, now)).toBe(null);
  });
});

describe('LRU', () => {
  it('is bounded and evicts the least recently used', () => {
    const lru = new Lru<number>(3);
    lru.set('a', 1);
    lru.set('b', 2);
    lru.set('c', 3);
    expect(lru.get('a')).toBe(1); // a is now the most recent
    lru.set('d', 4); // evicts b
    expect(lru.size).toBe(3);
    expect(lru.peek('b')).toBeUndefined();
    expect(lru.peek('a')).toBe(1);
    expect(lru.peek('c')).toBe(3);
    expect(lru.peek('d')).toBe(4);
  });

  it('never grows past its bound under many inserts', () => {
    const lru = new Lru<number>(1000);
    for (let i = 0; i < 10_000; i++) lru.set(`k${i}`, i);
    expect(lru.size).toBe(1000);
    expect(lru.peek('k9999')).toBe(9999);
    expect(lru.peek('k0')).toBeUndefined();
  });
});

describe('local cache freshness', () => {
  it('bindings learned together go back to the store spread over the last quarter of the period, never later', async () => {
    // A real store behind the cache; its get counter says which lookups went back to it.
    const store = new MemoryStore();
    const cache = new LocalCache(store, { entries: 1000, freshMs: 1000 });
    const waiter = { onLookup: () => undefined };
    const keys = Array.from({ length: 400 }, (_, i) => localKey('up', `session-${i}`));
    const t0 = Date.now();
    try {
      for (const k of keys) await cache.bind(k, '10.0.0.1:80', 60_000, t0);
      const revalidatedAt = (dt: number): number => {
        const before = store.stats.calls.get;
        for (const k of keys) expect(cache.lookup(k, 60_000, t0 + dt, waiter)).toBe('10.0.0.1:80');
        return store.stats.calls.get - before;
      };
      expect(revalidatedAt(749)).toBe(0); // fresh for at least three quarters of the period
      const early = revalidatedAt(875); // about half (expected 200, sd 10)
      expect(early).toBeGreaterThan(120);
      expect(early).toBeLessThan(280);
      expect(revalidatedAt(1000)).toBe(400 - early); // the rest, at the period's end: none later
    } finally {
      await store.close();
    }
  });
});

describe('signed cookie (cookie mode)', () => {
  const signer = new CookieSigner('a secret key of some length', 'backend');
  const ttl = 24 * 60_000;
  const now = 1_800_000_000_000;

  it('round-trips and never contains the server address', () => {
    const sid = signer.serverId('10.0.0.1:8080');
    const value = signer.value(sid, now);
    expect(value).not.toContain('10.0.0.1');
    expect(signer.check(value, now + 1000, ttl)).toEqual({ ok: true, sid, issuedAt: Math.floor(now / 1000) * 1000 });
  });

  it('a forged signature, another key, or garbage is "forged"', () => {
    const sid = signer.serverId('10.0.0.1:8080');
    const value = signer.value(sid, now);
    const flipped = value.slice(0, -1) + (value.endsWith('A') ? 'B' : 'A');
    expect(signer.check(flipped, now, ttl)).toEqual({ ok: false, reason: 'forged' });
    const other = new CookieSigner('another secret key 123456', 'backend');
    expect(signer.check(other.value(other.serverId('10.0.0.1:8080'), now), now, ttl)).toEqual({ ok: false, reason: 'forged' });
    // A valid signature for another upstream does not work here either.
    const otherUp = new CookieSigner('a secret key of some length', 'api');
    expect(signer.check(otherUp.value(sid, now), now, ttl)).toEqual({ ok: false, reason: 'forged' });
    for (const junk of ['', 'x', '10.0.0.1:8080', 'a.b.c', 'x'.repeat(500), `${sid}.zz.${'A'.repeat(22)}`]) {
      expect(signer.check(junk, now, ttl).ok).toBe(false);
    }
  });

  it('an old cookie is "stale"', () => {
    const value = signer.value(signer.serverId('10.0.0.1:8080'), now);
    expect(signer.check(value, now + ttl + 2000, ttl)).toEqual({ ok: false, reason: 'stale' });
  });

  it('strips our cookie from the upstream request (indirect)', () => {
    const headers = ['Host', 'x', 'Cookie', 'a=1; SESSIONLB=abc; b=2', 'Cookie', 'SESSIONLB=zzz'];
    stripCookie(headers, 'SESSIONLB');
    expect(headers).toEqual(['Host', 'x', 'Cookie', 'a=1; b=2']);
  });
});

describe('memcached keys and ketama', () => {
  it('keys are prefix + keyed hash: no raw id, valid memcached key, differ by upstream and secret', () => {
    const k = storeKeyFunction('sessionlb:', 'secret-secret-secret');
    const key = k(localKey('backend', ID));
    expect(key.startsWith('sessionlb:')).toBe(true);
    expect(key).not.toContain(ID);
    expect(key).toMatch(/^[\x21-\x7e]{1,250}$/);
    expect(k(localKey('api', ID))).not.toBe(key);
    expect(storeKeyFunction('sessionlb:', 'another-secret-123')(localKey('backend', ID))).not.toBe(key);
  });

  it('ketama spreads keys over servers, independent of list order, and moves few keys when one is added', () => {
    const a = new KetamaRing(['m1:11211', 'm2:11211', 'm3:11211'], (s) => s);
    const b = new KetamaRing(['m3:11211', 'm1:11211', 'm2:11211'], (s) => s);
    const counts: Record<string, number> = {};
    for (let i = 0; i < 3000; i++) {
      const key = `k${i}`;
      expect(b.get(key)).toBe(a.get(key));
      counts[a.get(key)!] = (counts[a.get(key)!] ?? 0) + 1;
    }
    for (const n of Object.values(counts)) expect(n).toBeGreaterThan(600);
    const c = new KetamaRing(['m1:11211', 'm2:11211', 'm3:11211', 'm4:11211'], (s) => s);
    let moved = 0;
    for (let i = 0; i < 3000; i++) if (c.get(`k${i}`) !== a.get(`k${i}`)) moved++;
    expect(moved).toBeLessThan(1200); // ~1/4 expected; modulo hashing would move ~3/4
  });
});

describe('config', () => {
  const base = {
    servers: [{ listen: ['127.0.0.1:1'], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
  };

  it('defaults: memory store, PHPSESSID, 24m, 50ms, "sessionlb:"', async () => {
    const c = await loadConfig({ ...base, upstreams: { backend: { sticky: { mode: 'learn' }, servers: [{ address: '127.0.0.1:2', drain: true }] } } });
    expect(c.sessionStore).toMatchObject({ type: 'memory', explicit: false, keyPrefix: 'sessionlb:', timeoutMs: 50 });
    const up = c.upstreams.get('backend')!;
    expect(up.sticky).toMatchObject({ mode: 'learn', cookie: 'PHPSESSID', ttlMs: 24 * 60_000, idRules: { minLength: 22, maxLength: 256 } });
    expect(up.servers[0]!.drain).toBe(true);
  });

  const up = { upstreams: { backend: { servers: [{ address: '127.0.0.1:2' }] } } };

  it('lists clear problems', async () => {
    const err = await loadConfig({
      ...base,
      sessionStore: { type: 'memcached', keyPrefix: 'bad prefix', timeout: 'soon' },
      upstreams: { backend: { sticky: { mode: 'sticky', ttl: '0s' }, servers: [{ address: '127.0.0.1:2' }] } },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    const text = (err as Error).message;
    expect(text).toContain('$.sessionStore.timeout: must be a duration');
    expect(text).toContain('$.upstreams.backend.sticky.mode: must be "learn", "cookie", "hash" or "source"');
    const err2 = await loadConfig({
      ...base,
      sessionStore: { type: 'memcached', keyPrefix: 'bad prefix' },
      upstreams: { backend: { sticky: { mode: 'learn', ttl: '0s', minIdLength: 30, maxIdLength: 20 }, servers: [{ address: '127.0.0.1:2' }] } },
    }).catch((e: unknown) => e);
    const text2 = (err2 as Error).message;
    expect(text2).toContain('$.sessionStore.servers: must list at least one memcached "host:port"');
    expect(text2).toContain('$.sessionStore.keyPrefix: must be printable ASCII without spaces');
    expect(text2).toContain('$.upstreams.backend.sticky.ttl: must be at least "1s"');
    expect(text2).toContain('$.upstreams.backend.sticky.minIdLength: must not be greater than maxIdLength (20)');
    const err3 = await loadConfig({ ...base, ...up, sessionStore: { type: 'memory', servers: ['127.0.0.1:11211'] } }).catch((e: unknown) => e);
    expect((err3 as Error).message).toContain('$.sessionStore.servers: applies only to "type": "memcached"');
    const err4 = await loadConfig({ ...base, ...up, sessionStore: { type: 'memcached', servers: ['127.0.0.1'], hashKey: 'short' } }).catch((e: unknown) => e);
    expect((err4 as Error).message).toContain('$.sessionStore.hashKey: must be a string of at least 16 characters');
  });

  it('memcached servers default to port 11211; keys come from config, else env, else derived from the prefix', async () => {
    const c = await loadConfig({ ...base, ...up, sessionStore: { type: 'memcached', servers: ['127.0.0.1', '127.0.0.2:11222'] } });
    expect(c.sessionStore.servers).toEqual(['127.0.0.1:11211', '127.0.0.2:11222']);
    expect(c.sessionStore.hashKeySource).toBe('derived');
    const saved = process.env.SESSIONLB_HASH_KEY;
    process.env.SESSIONLB_HASH_KEY = 'from-the-environment-1234';
    try {
      const e = await loadConfig({ ...base, ...up, sessionStore: { type: 'memcached', servers: ['127.0.0.1'] } });
      expect(e.sessionStore).toMatchObject({ hashKey: 'from-the-environment-1234', hashKeySource: 'env' });
      const f = await loadConfig({ ...base, ...up, sessionStore: { type: 'memcached', servers: ['127.0.0.1'], hashKey: 'from-the-config-file-1' } });
      expect(f.sessionStore).toMatchObject({ hashKey: 'from-the-config-file-1', hashKeySource: 'config' });
    } finally {
      if (saved === undefined) delete process.env.SESSIONLB_HASH_KEY;
      else process.env.SESSIONLB_HASH_KEY = saved;
    }
  });
});

describe('Affinity: the bound server or a counted rebind reason', () => {
  async function setup(): Promise<{ aff: Affinity; up: Upstream; store: MemoryStore }> {
    const config = await loadConfig({
      servers: [{ listen: ['127.0.0.1:1'], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { sticky: { mode: 'learn' }, servers: [{ address: '10.0.0.1:80', maxConns: 1 }, { address: '10.0.0.2:80' }] } },
    });
    const up = new Upstream(config.upstreams.get('backend')!);
    const store = new MemoryStore();
    const aff = new Affinity(up, config.upstreams.get('backend')!.sticky!, { kind: 'memory', store }, new AffinityStats());
    return { aff, up, store };
  }
  function request(aff: Affinity, id: string | null): StickyState {
    const req = { headers: id === null ? {} : { cookie: `PHPSESSID=${id}` } } as unknown as IncomingMessage;
    return new StickyState(req, '127.0.0.1', aff, { stickyResolved: () => undefined });
  }
  const now = 1_000_000;

  it.each([
    ['down', (p: Peer) => { p.down = true; }],
    ['maint', (p: Peer) => { p.state.adminState = 'maint'; }],
    ['unhealthy', (p: Peer) => { p.state.healthy = false; }],
    ['failed', (p: Peer) => { p.state.passiveFails = 1; p.state.checked = now; }],
    ['maxconns', (p: Peer) => { p.active = 1; }],
  ] as const)('%s: balancer picks, reason recorded', async (reason, breakIt) => {
    const { aff, up } = await setup();
    const a = up.primary[0]!;
    aff.bind(ID, a, now);
    breakIt(a);
    const r = request(aff, ID);
    aff.begin(r, null, now);
    expect(r.bound).toBe(a.address);
    expect(aff.choose(r, now)).toBe(null);
    expect(r.reason).toBe(reason);
    const other = up.select(r, null, now)!;
    expect(other).toBe(up.primary[1]);
    aff.onResponse(r, other, [], [], now);
    expect(r.outcome).toBe(`rebound:${reason}`);
    expect(aff.stats.rebinds[reason]).toBe(1);
    // Rebound: the next request goes to the new server.
    const r2 = request(aff, ID);
    aff.begin(r2, null, now);
    expect(aff.choose(r2, now)).toBe(other);
  });

  it('drain keeps the bound session; an unknown server name in the store is "removed"', async () => {
    const { aff, up, store } = await setup();
    const a = up.primary[0]!;
    aff.bind(ID, a, now);
    a.state.adminState = 'drain';
    const r = request(aff, ID);
    aff.begin(r, null, now);
    expect(aff.choose(r, now)).toBe(a);
    expect(a.active).toBe(1); // acquired
    store.setSync(localKey('backend', ID), '10.9.9.9:80', 60_000, now);
    const r2 = request(aff, ID);
    aff.begin(r2, null, now);
    expect(aff.choose(r2, now)).toBe(null);
    expect(r2.reason).toBe('removed');
  });
});

describe('Affinity cookie mode headers', () => {
  it('sets HttpOnly; SameSite=Lax, adds Secure on TLS, and makes the response private', async () => {
    const config = await loadConfig({
      servers: [{ listen: ['127.0.0.1:1'], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { sticky: { mode: 'cookie', cookieKey: 'k'.repeat(20) }, servers: [{ address: '10.0.0.1:80' }, { address: '10.0.0.2:80' }] } },
    });
    const up = new Upstream(config.upstreams.get('backend')!);
    const aff = new Affinity(up, config.upstreams.get('backend')!.sticky!, null, new AffinityStats());
    for (const secure of [false, true]) {
      const r = new StickyState({ headers: {} } as unknown as IncomingMessage, '', aff, { stickyResolved: () => undefined });
      aff.begin(r, null, 1_000_000);
      const out = ['Cache-Control', 'public, max-age=60'];
      aff.onResponse(r, up.primary[1]!, [], out, 1_000_000, secure);
      const cookie = out[out.indexOf('Set-Cookie') + 1]!;
      expect(cookie).toMatch(/^SESSIONLB=[A-Za-z0-9_-]{12}\.[0-9a-z]+\.[A-Za-z0-9_-]{22}; Path=\/; HttpOnly; SameSite=Lax/);
      expect(cookie.endsWith('; Secure')).toBe(secure);
      expect(cookie).not.toContain('10.0.0.2');
      expect(out[1]).toBe('private, max-age=60');
      expect(r.outcome).toBe('learned');
    }
  });
});

describe('memory store', () => {
  it('counts bindings per upstream and server, through rebinds, deletes, expiry and eviction', async () => {
    const store = new MemoryStore(3);
    try {
      const now = 1_000_000;
      store.setSync(localKey('up', 'a'.repeat(26)), 's1', 10_000, now);
      store.setSync(localKey('up', 'b'.repeat(26)), 's1', 10_000, now);
      store.setSync(localKey('other', 'a'.repeat(26)), 's1', 10_000, now);
      expect(store.boundCount('up', 's1')).toBe(2);
      expect(store.boundCount('other', 's1')).toBe(1);
      store.setSync(localKey('up', 'b'.repeat(26)), 's2', 10_000, now); // rebind
      expect([store.boundCount('up', 's1'), store.boundCount('up', 's2')]).toEqual([1, 1]);
      store.deleteSync(localKey('up', 'b'.repeat(26)));
      expect(store.boundCount('up', 's2')).toBe(0);
      store.setSync(localKey('up', 'c'.repeat(26)), 's2', 10_000, now);
      store.setSync(localKey('up', 'd'.repeat(26)), 's2', 10_000, now); // evicts the oldest (up/a)
      expect(store.size).toBe(3);
      expect(store.boundCount('up', 's1')).toBe(0);
      expect(store.boundCount('up', 's2')).toBe(2);
      // A use slides the expiry; the sweep drops what expired.
      expect(store.getSync(localKey('up', 'd'.repeat(26)), now + 9_000)).toBe('s2');
      store.sweep(now + 10_001);
      expect(store.size).toBe(1);
      expect(store.boundCount('up', 's2')).toBe(1);
      expect(store.getSync(localKey('up', 'c'.repeat(26)), now + 10_001)).toBe(null);
    } finally {
      await store.close();
    }
  });
});
