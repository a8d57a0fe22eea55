/**
 * The memory store's compact layout (slot arrays + intrusive LRU list + interned classes),
 * checked against a plain reference model with fast-check, plus the cases users rely on:
 * eviction of the least recently used, slot reuse, growth, counts for /status, sliding TTL.
 */
import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { MemoryStore } from '../src/sessions/memory-store.js';
import { localKey } from '../src/sessions/store.js';

const stores: MemoryStore[] = [];
function store(max?: number): MemoryStore {
  const s = new MemoryStore(max);
  stores.push(s);
  return s;
}
afterEach(async () => {
  for (const s of stores.splice(0)) await s.close();
});

const id = (n: number): string => `sess${String(n).padStart(24, '0')}`;
const T0 = 1_700_000_000_000;

/** The reference: an array in LRU order (least recent first), every operation done the obvious way. */
interface ModelEntry { key: string; upstream: string; server: string; ttlMs: number; expiresAt: number }
class Model {
  order: ModelEntry[] = [];
  constructor(readonly max: number) {}
  private find(key: string): number {
    return this.order.findIndex((e) => e.key === key);
  }
  get(key: string, now: number): string | null {
    const i = this.find(key);
    if (i === -1) return null;
    const e = this.order[i]!;
    this.order.splice(i, 1);
    if (now >= e.expiresAt) return null;
    e.expiresAt = now + e.ttlMs;
    this.order.push(e);
    return e.server;
  }
  set(key: string, upstream: string, server: string, ttlMs: number, now: number): void {
    const i = this.find(key);
    if (i !== -1) this.order.splice(i, 1);
    else if (this.order.length >= this.max) this.order.shift();
    this.order.push({ key, upstream, server, ttlMs, expiresAt: now + ttlMs });
  }
  touch(key: string, ttlMs: number, now: number): boolean {
    const e = this.order[this.find(key)];
    if (e === undefined) return false;
    e.ttlMs = ttlMs;
    e.expiresAt = now + ttlMs;
    return true;
  }
  delete(key: string): void {
    const i = this.find(key);
    if (i !== -1) this.order.splice(i, 1);
  }
  sweep(now: number): void {
    while (this.order.length > 0 && now >= this.order[0]!.expiresAt) this.order.shift();
  }
  count(upstream: string, server: string): number {
    return this.order.filter((e) => e.upstream === upstream && e.server === server).length;
  }
}

const UPSTREAMS = ['backend', 'api'];
const SERVERS = ['10.0.0.1:80', '10.0.0.2:80', 'b3'];
type Op =
  | { op: 'set'; k: number; up: number; srv: number; ttl: number }
  | { op: 'get'; k: number; up: number }
  | { op: 'touch'; k: number; up: number; ttl: number }
  | { op: 'delete'; k: number; up: number }
  | { op: 'sweep' }
  | { op: 'wait'; ms: number };
const key = fc.integer({ min: 0, max: 11 });
const up = fc.integer({ min: 0, max: 1 });
const ttl = fc.constantFrom(1000, 2500, 10_000);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('set' as const), k: key, up, srv: fc.integer({ min: 0, max: 2 }), ttl }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('get' as const), k: key, up }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('touch' as const), k: key, up, ttl }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('delete' as const), k: key, up }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('sweep' as const) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('wait' as const), ms: fc.integer({ min: 0, max: 3000 }) }) },
);

describe('memory store: compact layout against a reference model', () => {
  it('answers, orders, evicts, expires and counts exactly like a plain LRU map', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 7 }), fc.array(opArb, { maxLength: 120 }), (max, ops) => {
      const s = new MemoryStore(max);
      const m = new Model(max);
      let now = T0;
      try {
        for (const o of ops) {
          if (o.op === 'wait') {
            now += o.ms;
            continue;
          }
          if (o.op === 'sweep') {
            s.sweep(now);
            m.sweep(now);
          } else {
            const k = localKey(UPSTREAMS[o.up]!, id(o.k));
            if (o.op === 'set') {
              s.setSync(k, SERVERS[o.srv]!, o.ttl, now);
              m.set(k, UPSTREAMS[o.up]!, SERVERS[o.srv]!, o.ttl, now);
            } else if (o.op === 'get') {
              expect(s.getSync(k, now)).toBe(m.get(k, now));
            } else if (o.op === 'touch') {
              expect(s.touchSync(k, o.ttl, now)).toBe(m.touch(k, o.ttl, now));
            } else {
              s.deleteSync(k);
              m.delete(k);
            }
          }
          expect(s.size).toBe(m.order.length);
          expect([...s.keysLeastRecentFirst()]).toEqual(m.order.map((e) => e.key));
          for (const u of UPSTREAMS) for (const v of SERVERS) expect(s.boundCount(u, v)).toBe(m.count(u, v));
          expect(s.slotsUsed).toBeLessThanOrEqual(max);
        }
      } finally {
        void s.close();
      }
    }), { numRuns: 300 });
  });
});

describe('memory store: key table under churn', () => {
  it('finds every live key and no dead one after thousands of inserts, deletes, evictions and expiries', () => {
    fc.assert(fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 9 }), fc.integer({ min: 0, max: 2999 })), { minLength: 4000, maxLength: 6000 }), (ops) => {
      const s = new MemoryStore(1500);
      const m = new Model(1500);
      let now = T0;
      try {
        for (const [what, n] of ops) {
          const k = localKey(UPSTREAMS[n & 1]!, id(n));
          now += 1;
          if (what < 5) {
            s.setSync(k, SERVERS[n % 3]!, 3000, now);
            m.set(k, UPSTREAMS[n & 1]!, SERVERS[n % 3]!, 3000, now);
          } else if (what < 8) {
            expect(s.getSync(k, now)).toBe(m.get(k, now));
          } else if (what < 9) {
            s.deleteSync(k);
            m.delete(k);
          } else {
            s.sweep(now);
            m.sweep(now);
          }
        }
        expect(s.size).toBe(m.order.length);
        for (let n = 0; n < 3000; n++) {
          const k = localKey(UPSTREAMS[n & 1]!, id(n));
          expect(s.getSync(k, now)).toBe(m.get(k, now));
        }
      } finally {
        void s.close();
      }
    }), { numRuns: 8 });
  });

  it('keeps keys that do not fit a cell (long or non-Latin-1 ids) and keys that differ only around the NUL', () => {
    const s = store();
    const keys = [
      localKey('up', 'x'.repeat(32)), localKey('up', 'x'.repeat(33)), localKey('up', 'y'.repeat(256)),
      localKey('up', `${'z'.repeat(20)}é`), localKey('up', `${'z'.repeat(20)}€`), localKey('upstream-ü', 'a'.repeat(26)),
      'a'.repeat(26), `\0${'a'.repeat(26)}`, `\0\0${'a'.repeat(26)}`, localKey('a', 'a'.repeat(25)), localKey('u', ''), 'u',
    ];
    keys.forEach((k, i) => s.setSync(k, `s${i}`, 60_000, T0));
    expect(s.size).toBe(keys.length);
    keys.forEach((k, i) => expect(s.getSync(k, T0 + 1)).toBe(`s${i}`));
    expect([...s.keysLeastRecentFirst()]).toEqual(keys);
    expect(s.getSync(localKey('up', 'x'.repeat(31)), T0 + 1)).toBe(null);
    expect(s.getSync(localKey('up', `${'z'.repeat(20)}\u00ac`), T0 + 1)).toBe(null);
    expect(s.getSync(localKey('upstream-\u00fd', 'a'.repeat(26)), T0 + 1)).toBe(null);
    keys.forEach((k) => s.deleteSync(k));
    expect(s.size).toBe(0);
    keys.forEach((k) => expect(s.getSync(k, T0 + 2)).toBe(null));
  });
});

describe('memory store: layout', () => {
  it('evicts the least recently used binding at the bound (a get is a use)', () => {
    const s = store(3);
    for (const n of [1, 2, 3]) s.setSync(localKey('up', id(n)), 's1', 60_000, T0);
    expect(s.getSync(localKey('up', id(1)), T0 + 1)).toBe('s1'); // 1 becomes the most recent: 2 is the oldest
    s.setSync(localKey('up', id(4)), 's2', 60_000, T0 + 2);
    expect(s.getSync(localKey('up', id(2)), T0 + 3)).toBe(null);
    expect([...s.keysLeastRecentFirst()]).toEqual([3, 1, 4].map((n) => localKey('up', id(n))));
    expect([s.boundCount('up', 's1'), s.boundCount('up', 's2')]).toEqual([2, 1]);
  });

  it('reuses the slots of deleted and expired bindings instead of growing', () => {
    const s = store(100_000);
    for (let n = 0; n < 1024; n++) s.setSync(localKey('up', id(n)), 's1', 1_000, T0);
    expect(s.slotsUsed).toBe(1024);
    for (let n = 0; n < 500; n++) s.deleteSync(localKey('up', id(n)));
    s.sweep(T0 + 999); // nothing expired yet
    expect(s.size).toBe(524);
    for (let n = 2000; n < 2500; n++) s.setSync(localKey('up', id(n)), 's2', 60_000, T0 + 500);
    expect(s.slotsUsed).toBe(1024); // the 500 freed slots were reused
    s.sweep(T0 + 1_000); // the 524 left from the first round expire
    expect(s.size).toBe(500);
    expect(s.boundCount('up', 's1')).toBe(0);
    for (let n = 3000; n < 3524; n++) s.setSync(localKey('up', id(n)), 's1', 60_000, T0 + 1_000);
    expect(s.slotsUsed).toBe(1024);
    expect([s.size, s.boundCount('up', 's1'), s.boundCount('up', 's2')]).toEqual([1024, 524, 500]);
    expect(s.getSync(localKey('up', id(2499)), T0 + 2_000)).toBe('s2');
    expect(s.getSync(localKey('up', id(3000)), T0 + 2_000)).toBe('s1');
    expect(s.getSync(localKey('up', id(0)), T0 + 2_000)).toBe(null);
  });

  it('fills up to the bound (key table growing), keeping every binding and the LRU order', () => {
    const s = store(5000);
    for (let n = 0; n < 5000; n++) s.setSync(localKey('up', id(n)), `s${n % 4}`, 60_000, T0 + n);
    expect(s.slotsUsed).toBe(5000);
    expect(s.size).toBe(5000);
    for (let n = 0; n < 5000; n += 499) expect(s.getSync(localKey('up', id(n)), T0 + 6000)).toBe(`s${n % 4}`);
    for (let k = 0; k < 4; k++) expect(s.boundCount('up', `s${k}`)).toBe(1250);
    const order = [...s.keysLeastRecentFirst()];
    expect(order[0]).toBe(localKey('up', id(1)));
    expect(order[order.length - 1]).toBe(localKey('up', id(4990)));
    s.setSync(localKey('up', id(9999)), 's0', 60_000, T0 + 7000); // at the bound: evicts id 1
    expect(s.slotsUsed).toBe(5000);
    expect(s.getSync(localKey('up', id(1)), T0 + 7000)).toBe(null);
    expect(s.size).toBe(5000);
  });

  it('slides the TTL on every use and keeps a rebinding\'s own TTL', () => {
    const s = store();
    const k = localKey('up', id(7));
    s.setSync(k, 's1', 10_000, T0);
    for (let t = 9_000; t <= 90_000; t += 9_000) expect(s.getSync(k, T0 + t)).toBe('s1');
    s.sweep(T0 + 99_999);
    expect(s.size).toBe(1);
    s.setSync(k, 's2', 2_000, T0 + 99_999); // rebind with another ttl
    expect([s.boundCount('up', 's1'), s.boundCount('up', 's2')]).toEqual([0, 1]);
    expect(s.getSync(k, T0 + 101_998)).toBe('s2');
    expect(s.getSync(k, T0 + 103_998)).toBe(null); // 2 s after the last use
    expect(s.size).toBe(0);
    expect(s.touchSync(k, 1_000, T0 + 104_000)).toBe(false);
  });

  it('counts per (upstream, server) apart, including an upstream name that prefixes another', () => {
    const s = store();
    s.setSync(localKey('app', id(1)), 's1', 60_000, T0);
    s.setSync(localKey('app2', id(1)), 's1', 60_000, T0);
    s.setSync(localKey('app2', id(2)), 's1', 60_000, T0);
    s.setSync(localKey('app', id(3)), 's1', 30_000, T0); // another ttl, same (upstream, server)
    expect([s.boundCount('app', 's1'), s.boundCount('app2', 's1'), s.boundCount('ap', 's1'), s.boundCount('app', 's2')]).toEqual([2, 2, 0, 0]);
    s.deleteSync(localKey('app2', id(1)));
    s.deleteSync(localKey('app2', id(1))); // twice: no harm
    expect(s.boundCount('app2', 's1')).toBe(1);
    expect(s.getSync(localKey('app2', id(2)), T0 + 1)).toBe('s1');
  });

  it('close() empties the store', async () => {
    const s = store();
    s.setSync(localKey('up', id(1)), 's1', 60_000, T0);
    await s.close();
    expect(s.size).toBe(0);
    expect(s.getSync(localKey('up', id(1)), T0)).toBe(null);
    expect(s.boundCount('up', 's1')).toBe(0);
  });
});
