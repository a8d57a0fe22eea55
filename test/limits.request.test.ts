/**
 * src/limits/request-zone.ts: nginx limit_req worked by hand. Every expected number below is
 * nginx's arithmetic done on paper (ngx_http_limit_req_lookup / _account / _expire): rate in
 * requests per second × 1000, excess/burst/delay in 1/1000 requests, integer ms, C truncation.
 * No timing: every request carries its own `now`.
 */
import { describe, expect, it } from 'vitest';
import {
  limitRequest, MAX_REQUEST_KEY_BYTES, RequestZone, stepBucket,
  type RequestLimit, type RequestOutcome,
} from '../src/limits/request-zone.js';
import { MIN_ZONE_BYTES } from '../src/limits/zone-memory.js';

const NODELAY = Number.MAX_SAFE_INTEGER;
const MB = 1024 * 1024;
const T0 = 7_000_000;

function zone(rate: number, name = 'one', size = MB): RequestZone {
  return new RequestZone(name, rate, size);
}

function limit(z: RequestZone, burst: number, delay = 0): RequestLimit {
  return { zone: z, burst: burst * 1000, delay: delay === NODELAY ? NODELAY : delay * 1000 };
}

/** [verdict, delayMs, excess] of one request. */
function step(limits: RequestLimit[], keys: string[], now: number): [string, number, number] {
  const o = limitRequest(limits, keys, now);
  return [o.verdict, o.delayMs, o.excess];
}

describe('limit_req docs: rate=1r/s burst=5', () => {
  it('one at once, five delayed by 1..5 s, the rest rejected; then one per second', () => {
    const l = [limit(zone(1000), 5)];
    const seq = Array.from({ length: 8 }, () => step(l, ['1.2.3.4'], T0));
    expect(seq).toEqual([
      ['passed', 0, 0],
      ['delayed', 1000, 1000],
      ['delayed', 2000, 2000],
      ['delayed', 3000, 3000],
      ['delayed', 4000, 4000],
      ['delayed', 5000, 5000],
      ['rejected', 0, 6000],
      ['rejected', 0, 6000],
    ]);
    // A rejected request stores nothing: 500 ms later 5000 - 500 + 1000 is still over the burst.
    expect(step(l, ['1.2.3.4'], T0 + 500)).toEqual(['rejected', 0, 5500]);
    // One second drains one request.
    expect(step(l, ['1.2.3.4'], T0 + 1000)).toEqual(['delayed', 5000, 5000]);
    expect(step(l, ['1.2.3.4'], T0 + 1999)).toEqual(['rejected', 0, 5001]);
    expect(step(l, ['1.2.3.4'], T0 + 3000)).toEqual(['delayed', 4000, 4000]);
    // Long idle: drained to nothing, then + this request, floored at 0.
    expect(step(l, ['1.2.3.4'], T0 + 20000)).toEqual(['passed', 0, 0]);
    // Another key has its own bucket.
    expect(step(l, ['5.6.7.8'], T0 + 20000)).toEqual(['passed', 0, 0]);
  });

  it('nodelay: the six pass at once, the seventh is rejected; one more a second later', () => {
    const l = [limit(zone(1000), 5, NODELAY)];
    const seq = Array.from({ length: 7 }, () => step(l, ['a'], T0));
    expect(seq).toEqual([
      ['passed', 0, 0], ['passed', 0, 1000], ['passed', 0, 2000], ['passed', 0, 3000],
      ['passed', 0, 4000], ['passed', 0, 5000], ['rejected', 0, 6000],
    ]);
    expect(step(l, ['a'], T0 + 999)).toEqual(['rejected', 0, 5001]);
    expect(step(l, ['a'], T0 + 1000)).toEqual(['passed', 0, 5000]);
    expect(step(l, ['a'], T0 + 1000)).toEqual(['rejected', 0, 6000]);
  });

  it('no burst: one per second exactly, the rest rejected', () => {
    const l = [limit(zone(1000), 0)];
    expect(step(l, ['a'], T0)).toEqual(['passed', 0, 0]);
    expect(step(l, ['a'], T0 + 999)).toEqual(['rejected', 0, 1]);
    expect(step(l, ['a'], T0 + 1000)).toEqual(['passed', 0, 0]);
  });
});

describe('two-stage rate limiting: rate=5r/s burst=12 delay=8', () => {
  // nginx's blog draws "8 without delay, 4 delayed": nginx's arithmetic gives the first request of
  // a new key excess 0, so delay=8 lets excess 0..8000 through at once (9 requests), then 4 are
  // delayed (9000..12000, 200 ms apart at 5r/s) and the rest rejected: burst + 1 = 13 in all.
  it('9 at once, 4 delayed by 200/400/600/800 ms, the rest rejected', () => {
    const l = [limit(zone(5000), 12, 8)];
    const seq = Array.from({ length: 16 }, () => step(l, ['ip'], T0));
    expect(seq.slice(0, 9)).toEqual(Array.from({ length: 9 }, (_, i) => ['passed', 0, i * 1000]));
    expect(seq.slice(9, 13)).toEqual([
      ['delayed', 200, 9000], ['delayed', 400, 10000], ['delayed', 600, 11000], ['delayed', 800, 12000],
    ]);
    expect(seq.slice(13)).toEqual([['rejected', 0, 13000], ['rejected', 0, 13000], ['rejected', 0, 13000]]);
    // 200 ms drains one request (5r/s): room for exactly one more, delayed the longest.
    expect(step(l, ['ip'], T0 + 200)).toEqual(['delayed', 800, 12000]);
    expect(step(l, ['ip'], T0 + 200)).toEqual(['rejected', 0, 13000]);
  });
});

describe('r/m rates truncate (1r/m → 16)', () => {
  it('a request exactly a minute later is still over: 16 × 60 = 960 < 1000; it takes 62.5 s', () => {
    const l = [limit(zone(Math.trunc((1 * 1000) / 60)), 0)];
    expect(l[0]!.zone.rate).toBe(16);
    expect(step(l, ['a'], T0)).toEqual(['passed', 0, 0]);
    expect(step(l, ['a'], T0 + 60000)).toEqual(['rejected', 0, 40]);
    expect(step(l, ['a'], T0 + 62499)).toEqual(['rejected', 0, 1]); // 16 × 62499 / 1000 = 999 (truncated)
    expect(step(l, ['a'], T0 + 62500)).toEqual(['passed', 0, 0]);
  });

  it('1r/m burst=1: the second request waits 1000 × 1000 / 16 = 62500 ms', () => {
    const l = [limit(zone(16), 1)];
    expect(step(l, ['a'], T0)).toEqual(['passed', 0, 0]);
    expect(step(l, ['a'], T0)).toEqual(['delayed', 62500, 1000]);
    expect(step(l, ['a'], T0)).toEqual(['rejected', 0, 2000]);
  });

  it('2r/m (33) after 30 s: 33 × 30 = 990 drained, 10 over', () => {
    const l = [limit(zone(Math.trunc(2000 / 60)), 0)];
    expect(step(l, ['a'], T0)).toEqual(['passed', 0, 0]);
    expect(step(l, ['a'], T0 + 30000)).toEqual(['rejected', 0, 10]);
    expect(step(l, ['a'], T0 + 30304)).toEqual(['passed', 0, 0]); // 33 × 30304 / 1000 = 1000
  });
});

describe('the clock going backwards', () => {
  it('less than 60 s back counts as no time (last kept); more counts as 1 ms (last moved back)', () => {
    const z = zone(1000);
    const l = [limit(z, 5, NODELAY)];
    expect(step(l, ['a'], T0)).toEqual(['passed', 0, 0]);
    expect(step(l, ['a'], T0 - 30000)).toEqual(['passed', 0, 1000]);
    expect(z.inspect('a')).toEqual({ excess: 1000, last: T0, count: 0, accounted: true });
    expect(step(l, ['a'], T0 - 30000)).toEqual(['passed', 0, 2000]);
    // -90 s: ms = 1, 1000 × 1 / 1000 = 1 drained; last = now.
    expect(step(l, ['a'], T0 - 90000)).toEqual(['passed', 0, 2999]);
    expect(z.inspect('a')).toEqual({ excess: 2999, last: T0 - 90000, count: 0, accounted: true });
    expect(step(l, ['a'], T0 - 89000)).toEqual(['passed', 0, 2999]);
  });
});

describe('several limits (two phases)', () => {
  it('the second rejects: the first zone keeps its state, a key it created stays unaccounted', () => {
    const a = zone(1000, 'a');
    const b = zone(1000, 'b');
    const l = [limit(a, 10, NODELAY), limit(b, 0)];
    expect(limitRequest(l, ['x', 'y'], T0)).toEqual<RequestOutcome>({
      verdict: 'passed', delayMs: 0, excess: 0, zone: 'b', nomem: false, applied: true,
    });
    expect(a.inspect('x')).toEqual({ excess: 0, last: T0, count: 0, accounted: true });
    // 10 ms later: a would charge 990 (within its burst), b charges 990 over its burst 0.
    expect(limitRequest(l, ['x', 'y'], T0 + 10)).toEqual<RequestOutcome>({
      verdict: 'rejected', delayMs: 0, excess: 990, zone: 'b', nomem: false, applied: true,
    });
    expect(a.inspect('x')).toEqual({ excess: 0, last: T0, count: 0, accounted: true });
    // A new key in the first zone: created by the non-accounting lookup, kept, never charged.
    expect(step(l, ['x2', 'y'], T0 + 20)).toEqual(['rejected', 0, 980]);
    expect(a.inspect('x2')).toEqual({ excess: 0, last: 0, count: 0, accounted: false });
    expect(a.keysByRecency()).toEqual(['x2', 'x']);
  });

  it('a key created unaccounted is charged as nginx does with last = 0: excess 0, whatever the clock origin', () => {
    for (const origin of [0, 10, 50_000, T0]) {
      const a = zone(1000, 'a');
      const b = zone(1000, 'b');
      const l = [limit(a, 0), limit(b, 0)];
      expect(step(l, ['x', 'y'], origin)).toEqual(['passed', 0, 0]);
      expect(step(l, ['x2', 'y'], origin + 1)).toEqual(['rejected', 0, 999]);
      // nginx: ms = now - 0, drained to 0: passes with burst 0, and is then charged from now.
      expect(step(l, ['x2', ''], origin + 2)).toEqual(['passed', 0, 0]);
      expect(a.inspect('x2')).toEqual({ excess: 0, last: origin + 2, count: 0, accounted: true });
      expect(step(l, ['x2', ''], origin + 3)).toEqual(['rejected', 0, 999]);
    }
  });

  it('the last key empty: the earlier limits are accounted, nginx reports excess 0 unless one delays', () => {
    const a = zone(1000, 'a');
    const l = [limit(a, 10, NODELAY), limit(zone(1000, 'b'), 0)];
    expect(limitRequest(l, ['x', ''], T0)).toMatchObject({ verdict: 'passed', excess: 0, zone: 'a', applied: true });
    expect(limitRequest(l, ['x', ''], T0)).toMatchObject({ verdict: 'passed', excess: 0, zone: 'a' });
    expect(a.inspect('x')).toMatchObject({ excess: 1000, count: 0 });
    const d = [limit(zone(1000, 'c'), 10), limit(zone(1000, 'e'), 0)];
    expect(step(d, ['x', ''], T0)).toEqual(['passed', 0, 0]);
    expect(limitRequest(d, ['x', ''], T0)).toMatchObject({ verdict: 'delayed', delayMs: 1000, excess: 1000, zone: 'c' });
  });

  it('both delay: the longest wins (the later limit on a tie)', () => {
    const l = [limit(zone(1000, 'a'), 10), limit(zone(2000, 'b'), 10)];
    expect(step(l, ['k', 'k'], T0)).toEqual(['passed', 0, 0]);
    // a: 1000 → 1000 ms; b (2r/s): 1000 → 500 ms.
    expect(limitRequest(l, ['k', 'k'], T0)).toMatchObject({ verdict: 'delayed', delayMs: 1000, excess: 1000, zone: 'a' });
    expect(limitRequest(l, ['k', 'k'], T0)).toMatchObject({ verdict: 'delayed', delayMs: 2000, excess: 2000, zone: 'a' });
    const slow = [limit(zone(1000, 'a'), 10), limit(zone(500, 'b'), 10)];
    step(slow, ['k', 'k'], T0);
    expect(limitRequest(slow, ['k', 'k'], T0)).toMatchObject({ verdict: 'delayed', delayMs: 2000, zone: 'b' });
    const tie = [limit(zone(1000, 'a'), 10), limit(zone(1000, 'b'), 10)];
    step(tie, ['k', 'k'], T0);
    expect(limitRequest(tie, ['k', 'k'], T0)).toMatchObject({ verdict: 'delayed', delayMs: 1000, zone: 'b' });
  });

  it('the first rejects: the later limits are not looked at', () => {
    const b = zone(1000, 'b');
    const l = [limit(zone(1000, 'a'), 0), limit(b, 10)];
    step(l, ['k', 'k'], T0);
    expect(limitRequest(l, ['k', 'k'], T0)).toMatchObject({ verdict: 'rejected', zone: 'a', excess: 1000 });
    expect(b.inspect('k')).toEqual({ excess: 0, last: T0, count: 0, accounted: true });
  });

  it('a zone twice in one list throws, leaving nothing pinned', () => {
    const a = zone(1000, 'a');
    expect(() => limitRequest([limit(a, 1), limit(a, 1)], ['k', 'k'], T0)).toThrow(/duplicate/);
    expect(a.inspect('k')).toMatchObject({ count: 0 });
    expect(step([limit(a, 1)], ['k'], T0)).toEqual(['passed', 0, 0]);
  });
});

describe('keys that do not apply', () => {
  it('every key empty or too long: passed, not applied, no zone', () => {
    const z = zone(1000);
    const l = [limit(z, 0), limit(zone(1000, 'two'), 0)];
    const long = 'x'.repeat(MAX_REQUEST_KEY_BYTES + 1);
    expect(limitRequest(l, ['', long], T0)).toEqual<RequestOutcome>({
      verdict: 'passed', delayMs: 0, excess: 0, zone: null, nomem: false, applied: false,
    });
    expect(limitRequest([], [], T0)).toMatchObject({ applied: false });
    expect(z.size).toBe(0);
  });
});

describe('zone memory, expiry and eviction', () => {
  it('a 32k zone holds 222 keys of 128 bytes; the next new key drops the oldest by force', () => {
    const z = zone(1000, 'small', MIN_ZONE_BYTES);
    expect(z.capacityBytes).toBe(28481);
    const l = [limit(z, 0)];
    const key = (i: number): string => `k${i}`.padEnd(48, '.'); // 80 + 48 = 128 bytes
    for (let i = 0; i < 222; i++) expect(step(l, [key(i)], T0)).toEqual(['passed', 0, 0]);
    expect([z.size, z.usedBytes, z.evicted, z.expired]).toEqual([222, 222 * 128, 0, 0]);
    expect(step(l, [key(222)], T0)).toEqual(['passed', 0, 0]);
    expect([z.size, z.evicted, z.inspect(key(0))]).toEqual([222, 1, null]);
    // A lookup moves a key to the head even when it is rejected: key(1) is no longer the oldest.
    expect(step(l, [key(1)], T0)).toEqual(['rejected', 0, 1000]);
    expect(step(l, [key(223)], T0)).toEqual(['passed', 0, 0]); // drops key(2), not key(1)
    expect(z.inspect(key(2))).toBeNull();
    expect(z.inspect(key(1))).not.toBeNull();
  });

  it('opportunistic expiry: up to two tail keys idle for 60 s and drained, on a new key only', () => {
    const z = zone(1000);
    const l = [limit(z, 5, NODELAY)];
    for (const k of ['a', 'b', 'c']) step(l, [k], T0);
    step(l, ['d'], T0 + 59999);
    expect(z.size).toBe(4);
    step(l, ['d'], T0 + 60000); // existing key: no expiry
    expect(z.size).toBe(4);
    step(l, ['e'], T0 + 60000);
    expect(z.keysByRecency()).toEqual(['e', 'd', 'c']);
    expect(z.expired).toBe(2);
    expect(z.evicted).toBe(0);
  });

  it('a key idle 60 s but not drained stays, and shields the keys behind it', () => {
    const z = zone(16); // 1r/m
    const l = [limit(z, 1)];
    step(l, ['a'], T0);
    step(l, ['a'], T0); // excess 1000
    step(l, ['b'], T0 + 1);
    step(l, ['c'], T0 + 60000); // a: 1000 - 960 = 40 > 0
    expect(z.keysByRecency()).toEqual(['c', 'b', 'a']);
    step(l, ['d'], T0 + 62500); // a: 1000 - 1000 = 0: expired; b: 62499 ms, 0 - 999: expired
    expect(z.keysByRecency()).toEqual(['d', 'c']);
    expect(z.expired).toBe(2);
  });

  it('an unaccounted key left behind is expirable at once', () => {
    const a = zone(1000, 'a');
    const l = [limit(a, 5), limit(zone(1000, 'b'), 0)];
    step(l, ['x', 'y'], T0);
    step(l, ['x2', 'y'], T0 + 1); // rejected by b: x2 stays unaccounted in a
    expect(a.keysByRecency()).toEqual(['x2', 'x']);
    step([limit(a, 5)], ['z'], T0 + 2); // tail x: 2 ms idle, not expired; stops there
    expect(a.size).toBe(3);
    step([limit(a, 5)], ['x'], T0 + 3);
    step([limit(a, 5)], ['z2'], T0 + 4); // tail is now x2: unaccounted, expired; next tail z is not idle
    expect(a.keysByRecency()).toEqual(['z2', 'x', 'z']);
    expect(a.expired).toBe(1);
  });

  it('no room even after the forced drop: rejected with nomem, counted', () => {
    const z = zone(1000, 'small', MIN_ZONE_BYTES);
    const l = [limit(z, 0)];
    step(l, ['a'], T0);
    const huge = 'h'.repeat(MAX_REQUEST_KEY_BYTES); // 17 pages: more than the whole zone
    expect(limitRequest(l, [huge], T0)).toEqual<RequestOutcome>({
      verdict: 'rejected', delayMs: 0, excess: 0, zone: 'small', nomem: true, applied: true,
    });
    expect([z.allocationFailures, z.evicted, z.size]).toEqual([1, 1, 0]); // nginx drops the tail first
  });

  it('nomem in an earlier limit releases nothing of later ones (they are not looked at)', () => {
    const small = zone(1000, 'small', MIN_ZONE_BYTES);
    const other = zone(1000, 'other');
    const out = limitRequest([limit(small, 0), limit(other, 0)], ['h'.repeat(40000), 'k'], T0);
    expect(out).toMatchObject({ verdict: 'rejected', nomem: true, zone: 'small' });
    expect(other.size).toBe(0);
  });

  it('clear() drops the keys and keeps the counters', () => {
    const z = zone(1000, 'small', MIN_ZONE_BYTES);
    limitRequest([limit(z, 0)], ['h'.repeat(40000)], T0);
    step([limit(z, 0)], ['a'], T0);
    z.clear();
    expect([z.size, z.usedBytes, z.allocationFailures]).toEqual([0, 0, 1]);
    expect(step([limit(z, 0)], ['a'], T0)).toEqual(['passed', 0, 0]);
  });

  it('refuses a zone below 32k and a rate that is not a positive integer', () => {
    expect(() => new RequestZone('x', 1000, MIN_ZONE_BYTES - 1)).toThrow(/zone "x" is too small/);
    expect(() => new RequestZone('x', 0, MB)).toThrow(/rate/);
    expect(() => new RequestZone('x', 1.5, MB)).toThrow(/rate/);
  });
});

describe('stepBucket', () => {
  it('follows the docs example as limitRequest does', () => {
    let state = null as ReturnType<typeof stepBucket>['state'];
    const seen: [string, number, number][] = [];
    for (const now of [T0, T0, T0, T0, T0, T0, T0, T0 + 1000]) {
      const r = stepBucket(state, 1000, 5000, 0, now);
      if (r.state !== null) state = r.state;
      seen.push([r.verdict, r.delayMs, r.excess]);
    }
    expect(seen).toEqual([
      ['passed', 0, 0], ['delayed', 1000, 1000], ['delayed', 2000, 2000], ['delayed', 3000, 3000],
      ['delayed', 4000, 4000], ['delayed', 5000, 5000], ['rejected', 0, 6000], ['delayed', 5000, 5000],
    ]);
    expect(state).toEqual({ excess: 5000, last: T0 + 1000 });
  });

  it('a very high rate truncates the delay to 0: the request passes', () => {
    // 10000r/s: (1000 - 0) × 1000 / 10^7 = 0.
    expect(stepBucket({ excess: 0, last: T0 }, 10_000_000, 5000, 0, T0)).toMatchObject({ verdict: 'passed', delayMs: 0, excess: 1000 });
  });
});
