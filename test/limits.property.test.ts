/**
 * Properties of src/limits/ checked with fast-check over random arrival times, keys, rates,
 * bursts and delays: limit_req against a reference model written here in the plainest style, a
 * rate bound, stepBucket against the zone, zone memory and eviction, and limit_conn's counts.
 * Pure: every request carries its own `now`.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  limitRequest, RequestZone, stepBucket,
  type BucketState, type RequestLimit, type RequestVerdict,
} from '../src/limits/request-zone.js';
import { ConnectionZone, limitConnection, type ConnectionHold, type ConnectionLimit } from '../src/limits/connection-zone.js';
import { MIN_ZONE_BYTES, reqNodeBytes } from '../src/limits/zone-memory.js';

const NODELAY = Number.MAX_SAFE_INTEGER;
const MB = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// The reference model: one limit_req zone, one limit, as a list of records, most recent first.
// Written from nginx's description, not from src/: the formulas are spelled out again here.

interface ModelRecord { key: string; excess: number; last: number; bytes: number }
interface Decision { verdict: RequestVerdict; delayMs: number; excess: number; nomem: boolean }

class ModelZone {
  records: ModelRecord[] = [];
  used = 0;
  evicted = 0;
  expired = 0;
  failures = 0;
  readonly capacity: number;

  constructor(readonly rate: number, readonly burst: number, readonly delay: number, size: number) {
    this.capacity = Math.floor((size * 4096) / 4120) - 4096;
  }

  request(key: string, now: number): Decision {
    const index = this.records.findIndex((r) => r.key === key);
    if (index !== -1) {
      const record = this.records[index]!;
      this.records.splice(index, 1);
      this.records.unshift(record);
      let ms = now - record.last;
      if (ms < -60000) ms = 1;
      else if (ms < 0) ms = 0;
      let excess = record.excess - Math.floor((this.rate * ms) / 1000) + 1000;
      if (excess < 0) excess = 0;
      if (excess > this.burst) return { verdict: 'rejected', delayMs: 0, excess, nomem: false };
      record.excess = excess;
      if (ms !== 0) record.last = now;
      const delayMs = excess <= this.delay ? 0 : Math.floor(((excess - this.delay) * 1000) / this.rate);
      return { verdict: delayMs > 0 ? 'delayed' : 'passed', delayMs, excess, nomem: false };
    }
    let bytes = 8;
    while (bytes < 80 + key.length) bytes *= 2;
    this.removeIdle(now);
    if (this.used + bytes > this.capacity) {
      const oldest = this.records.pop();
      if (oldest !== undefined) {
        this.used -= oldest.bytes;
        this.evicted++;
        this.removeIdle(now);
      }
      if (this.used + bytes > this.capacity) {
        this.failures++;
        return { verdict: 'rejected', delayMs: 0, excess: 0, nomem: true };
      }
    }
    this.records.unshift({ key, excess: 0, last: now, bytes });
    this.used += bytes;
    return { verdict: 'passed', delayMs: 0, excess: 0, nomem: false };
  }

  /** Up to two of the oldest records, while each is idle for 60 s and drained. */
  private removeIdle(now: number): void {
    for (let i = 0; i < 2; i++) {
      const oldest = this.records[this.records.length - 1];
      if (oldest === undefined) return;
      const ms = Math.abs(now - oldest.last);
      if (ms < 60000) return;
      if (oldest.excess - Math.floor((this.rate * ms) / 1000) > 0) return;
      this.records.pop();
      this.used -= oldest.bytes;
      this.expired++;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Generators.

/** nginx rates: N r/s (N × 1000) or N r/m (N × 1000 / 60, truncated). */
const rateArb = fc.oneof(
  fc.integer({ min: 1, max: 50 }).map((n) => n * 1000),
  fc.integer({ min: 1, max: 600 }).map((n) => Math.trunc((n * 1000) / 60)),
);
const burstArb = fc.integer({ min: 0, max: 12 }).map((n) => n * 1000);
const delayArb = fc.oneof(fc.constant(0), fc.constant(NODELAY), fc.integer({ min: 1, max: 12 }).map((n) => n * 1000));
/** A step of the clock: mostly small, sometimes long idle, sometimes backwards (both sides of -60 s). */
const stepArb = fc.oneof(
  { weight: 12, arbitrary: fc.integer({ min: 0, max: 1500 }) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 200_000 }) },
  { weight: 1, arbitrary: fc.integer({ min: -120_000, max: -1 }) },
);
/** Many arrivals within a minute (a small zone fills before its keys go idle), with the odd jump. */
const denseStepArb = fc.oneof(
  { weight: 100, arbitrary: fc.integer({ min: 0, max: 50 }) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 200_000 }) },
  { weight: 1, arbitrary: fc.integer({ min: -120_000, max: -1 }) },
);
const forwardStepArb = fc.oneof(
  { weight: 12, arbitrary: fc.integer({ min: 0, max: 1500 }) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 200_000 }) },
);
/** Keys of 1..170 bytes, so nodes are 128 or 256 bytes and a small zone fills in varied ways. */
const keyPool = (n: number): string[] => Array.from({ length: n }, (_, i) => `key${i}`.padEnd(1 + ((i * 37) % 170), '-'));

interface Arrival { key: number; step: number }
/** A few hot keys (so buckets fill) among all of them (so a small zone fills). */
const keyIndexArb = (keys: number, hot: number): fc.Arbitrary<number> => fc.oneof(
  { weight: hot, arbitrary: fc.integer({ min: 0, max: Math.min(2, keys - 1) }) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: keys - 1 }) },
);
/** size 'max': lengths up to maxLength (fast-check's default size keeps arrays to a handful). */
const arrivalsArb = (keys: number, step: fc.Arbitrary<number>, maxLength: number, minLength = 1, hot = 3): fc.Arbitrary<Arrival[]> =>
  fc.array(fc.record({ key: keyIndexArb(keys, hot), step }), { minLength, maxLength, size: 'max' });

// ---------------------------------------------------------------------------------------------

describe('limit_req against the reference model', () => {
  /** How often each case came up over all runs, so that a property cannot pass vacuously. */
  type Tally = Record<'rejected' | 'delayed' | 'backwards' | 'evicted' | 'expired' | 'nomem', number>;
  const check = (keyCount: number, size: number, arrivals: fc.Arbitrary<Arrival[]>, runs: number): Tally => {
    const tally: Tally = { rejected: 0, delayed: 0, backwards: 0, evicted: 0, expired: 0, nomem: 0 };
    fc.assert(fc.property(
      rateArb, burstArb, delayArb, fc.integer({ min: 0, max: 1e9 }), arrivals,
      (rate, burst, delay, start, arrivals) => {
        const keys = keyPool(keyCount);
        const zone = new RequestZone('z', rate, size);
        const limits: RequestLimit[] = [{ zone, burst, delay }];
        const model = new ModelZone(rate, burst, delay, size);
        let now = start;
        for (const a of arrivals) {
          now += a.step;
          const key = keys[a.key]!;
          const got = limitRequest(limits, [key], now);
          const want = model.request(key, now);
          expect([got.verdict, got.delayMs, got.excess, got.nomem]).toEqual([want.verdict, want.delayMs, want.excess, want.nomem]);
          if (got.verdict !== 'passed') tally[got.verdict]++;
          if (a.step < 0) tally.backwards++;
        }
        expect(zone.keysByRecency()).toEqual(model.records.map((r) => r.key));
        expect([zone.usedBytes, zone.evicted, zone.expired, zone.allocationFailures]).toEqual([model.used, model.evicted, model.expired, model.failures]);
        tally.evicted += zone.evicted;
        tally.expired += zone.expired;
        tally.nomem += zone.allocationFailures;
      },
    ), { numRuns: runs });
    return tally;
  };

  it('a few keys in a large zone: same verdicts, delays and excess, same keys in the same order', () => {
    const tally = check(6, MB, arrivalsArb(6, stepArb, 600), 300);
    expect(tally.rejected * tally.delayed * tally.backwards * tally.expired).toBeGreaterThan(0);
  });

  it('hundreds of keys in a 32k zone: forced eviction, idle expiry and allocation failures as the model', () => {
    const tally = check(400, MIN_ZONE_BYTES, arrivalsArb(400, denseStepArb, 800, 400, 1), 150);
    expect(tally.evicted * tally.expired * tally.nomem * tally.rejected).toBeGreaterThan(0);
  });
});

describe('limit_req nodelay: passes per key in any window', () => {
  /*
   * Bound. With nodelay a request passes iff its charged excess x <= B (burst × 1000). Take the
   * passes of one key, in non-decreasing time, and two of them i < j, W = t_j - t_i apart. Between
   * consecutive passes nothing changes the key (a rejection stores nothing), `last` after a pass is
   * that pass's time, and each pass stores x_k = max(0, x_{k-1} - d_k + 1000) with d_k =
   * trunc(rate × (t_k - t_{k-1}) / 1000); so x_k >= x_{k-1} - d_k + 1000. Summing from i to j:
   * x_j >= x_i + 1000 (j - i) - sum d_k, with x_i >= 0, x_j <= B, and sum of truncations <=
   * floor(rate × W / 1000). Hence passes = j - i + 1 <= B/1000 + 1 + floor(rate × W / 1000) / 1000:
   * burst + 1 + floor(rate × W / 10^6). It is tight: a new key passes burst + 1 at once (W = 0).
   *
   * A key can also be expired (idle >= 60 s and drained, when another key is inserted) and come
   * back with excess 0 where the formula would have given up to 1000: one more pass per such
   * reset, and each needs a gap of at least 60 s between two passes of the window. So with other
   * keys in the zone the bound is burst + 1 + floor(rate × W / 10^6) + floor(W / 60000). (A forced
   * eviction would reset any bucket: the zone here is large enough never to need one.)
   */
  const bound = (burst: number, rate: number, w: number, resets: boolean): number =>
    burst / 1000 + 1 + Math.floor(Math.floor((rate * w) / 1000) / 1000) + (resets ? Math.floor(w / 60000) : 0);

  const check = (keyCount: number): void => {
    fc.assert(fc.property(
      rateArb, burstArb, fc.integer({ min: 0, max: 1e9 }), arrivalsArb(keyCount, forwardStepArb, 500),
      (rate, burst, start, arrivals) => {
        const zone = new RequestZone('z', rate, MB);
        const limits: RequestLimit[] = [{ zone, burst, delay: NODELAY }];
        const passes: number[][] = Array.from({ length: keyCount }, () => []);
        let now = start;
        for (const a of arrivals) {
          now += a.step;
          const out = limitRequest(limits, [`k${a.key}`], now);
          expect(out.verdict).not.toBe('delayed');
          if (out.verdict === 'passed') passes[a.key]!.push(now);
        }
        expect(zone.evicted).toBe(0);
        // Every window that starts and ends on a pass (the fullest windows of each length).
        for (const times of passes) {
          for (let i = 0; i < times.length; i++) {
            for (let j = i; j < times.length; j++) {
              const w = times[j]! - times[i]!;
              if (j - i + 1 > bound(burst, rate, w, keyCount > 1)) expect({ passes: j - i + 1, w }).toBe('within the bound');
            }
          }
        }
      },
    ), { numRuns: 200 });
  };

  it('one key: at most burst + 1 + floor(rate × W / 10^6)', () => check(1));
  it('several keys (expiry may reset one): at most one more per 60 s of the window', () => check(4));

  it('the bound is reached: burst + 1 at once, then one per 1000 / rate s', () => {
    const zone = new RequestZone('z', 2000, MB);
    const limits: RequestLimit[] = [{ zone, burst: 3000, delay: NODELAY }];
    const passedAt = (now: number): boolean => limitRequest(limits, ['k'], now).verdict === 'passed';
    expect([0, 0, 0, 0, 0].map(passedAt)).toEqual([true, true, true, true, false]);
    expect([500, 500, 1000].map(passedAt)).toEqual([true, false, true]); // 6 in W = 1000: 3 + 1 + 2
  });
});

describe('stepBucket chained equals limitRequest on one key', () => {
  it('same verdicts, delays, excess and stored bucket, clock going back included', () => {
    fc.assert(fc.property(
      rateArb, burstArb, delayArb, fc.integer({ min: -1e9, max: 1e9 }), fc.array(stepArb, { minLength: 1, maxLength: 400, size: 'max' }),
      (rate, burst, delay, start, steps) => {
        const zone = new RequestZone('z', rate, MB);
        const limits: RequestLimit[] = [{ zone, burst, delay }];
        let state: BucketState | null = null;
        let now = start;
        for (const s of steps) {
          now += s;
          const got = limitRequest(limits, ['k'], now);
          const stepped = stepBucket(state, rate, burst, delay, now);
          expect([stepped.verdict, stepped.delayMs, stepped.excess]).toEqual([got.verdict, got.delayMs, got.excess]);
          expect(stepped.state === null).toBe(got.verdict === 'rejected');
          if (stepped.state !== null) state = stepped.state;
          const held = zone.inspect('k')!;
          expect({ excess: held.excess, last: held.last }).toEqual(state);
        }
      },
    ), { numRuns: 300 });
  });
});

describe('zone memory under several limits', () => {
  it('never above capacity; bytes match the keys held; every key that goes is counted, forced drops as evicted', () => {
    const keys = keyPool(300);
    const tooLong = 'L'.repeat(30_000);
    const seen = { evicted: 0, expired: 0, nomem: 0, backwards: 0 };
    fc.assert(fc.property(
      fc.array(fc.tuple(rateArb, burstArb, delayArb), { minLength: 1, maxLength: 3 }),
      fc.integer({ min: 0, max: 1e9 }),
      fc.array(fc.record({ step: denseStepArb, picks: fc.array(fc.oneof(fc.integer({ min: -1, max: 3 }), fc.integer({ min: -1, max: 299 })), { minLength: 3, maxLength: 3 }) }), { minLength: 1, maxLength: 500, size: 'max' }),
      (specs, start, arrivals) => {
        const zones = specs.map(([rate], i) => new RequestZone(`z${i}`, rate, MIN_ZONE_BYTES));
        const limits: RequestLimit[] = specs.map(([, burst, delay], i) => ({ zone: zones[i]!, burst, delay }));
        let now = start;
        for (const a of arrivals) {
          now += a.step;
          seen.backwards += a.step < 0 ? 1 : 0;
          // -1: an empty key (that limit skipped); one in 50 keys too long for the zone.
          const requestKeys = limits.map((_, i) => {
            const pick = a.picks[i]!;
            if (pick === -1) return '';
            return pick % 50 === 49 ? tooLong : keys[pick]!;
          });
          const before = zones.map((z) => ({
            keys: new Set(z.keysByRecency()), evicted: z.evicted, expired: z.expired, used: z.usedBytes, failures: z.allocationFailures,
          }));
          const out = limitRequest(limits, requestKeys, now);
          const failed = zones.filter((z, i) => z.allocationFailures !== before[i]!.failures).map((z) => z.name);
          expect(failed).toEqual(out.nomem ? [out.zone] : []);
          zones.forEach((z, i) => {
            const held = z.keysByRecency();
            expect(z.usedBytes).toBeLessThanOrEqual(z.capacityBytes);
            expect(z.usedBytes).toBe(held.reduce((sum, k) => sum + reqNodeBytes(k.length), 0));
            expect(held.length).toBe(z.size);
            expect(held.filter((k) => z.inspect(k)!.count !== 0)).toEqual([]);
            const gone = [...before[i]!.keys].filter((k) => z.inspect(k) === null);
            const evicted = z.evicted - before[i]!.evicted;
            expect(gone.length).toBe(evicted + z.expired - before[i]!.expired);
            // At most one forced drop per zone and request, and only when the new key did not fit.
            expect(evicted).toBeLessThanOrEqual(1);
            seen.evicted += evicted;
            seen.expired += z.expired - before[i]!.expired;
            seen.nomem += z.allocationFailures - before[i]!.failures;
            if (evicted === 1) {
              const key = requestKeys[i]!;
              expect(before[i]!.keys.has(key)).toBe(false);
              expect(before[i]!.used + reqNodeBytes(key.length)).toBeGreaterThan(z.capacityBytes);
            }
          });
        }
      },
    ), { numRuns: 100 });
    expect(seen.evicted * seen.expired * seen.nomem * seen.backwards).toBeGreaterThan(0);
  });
});

describe('limit_conn under any interleaving', () => {
  type Op = { kind: 'acquire'; keys: number[]; dryRun: boolean } | { kind: 'release'; which: number; twice: boolean };
  const opArb: fc.Arbitrary<Op> = fc.oneof(
    fc.record({ kind: fc.constant('acquire' as const), keys: fc.array(fc.integer({ min: -1, max: 5 }), { minLength: 3, maxLength: 3 }), dryRun: fc.boolean() }),
    fc.record({ kind: fc.constant('release' as const), which: fc.nat(), twice: fc.boolean() }),
  );

  it('counts never exceed conn and follow the model; releasing everything empties the zones; double release is harmless', () => {
    const seen = { rejected: 0, passed: 0, releases: 0 };
    fc.assert(fc.property(
      fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 3 }), fc.array(opArb, { maxLength: 300, size: 'max' }),
      (conns, ops) => {
        const zones = conns.map((_, i) => new ConnectionZone(`c${i}`, MB));
        const limits: ConnectionLimit[] = conns.map((conn, i) => ({ zone: zones[i]!, conn }));
        const model = zones.map(() => new Map<string, number>());
        const holds: { hold: ConnectionHold; taken: [number, string][] }[] = [];
        const released: { hold: ConnectionHold }[] = [];
        for (const op of ops) {
          if (op.kind === 'acquire') {
            const keys = limits.map((_, i) => (op.keys[i]! === -1 ? '' : `k${op.keys[i]!}`));
            const applied = keys.map((k, i) => [i, k] as [number, string]).filter(([, k]) => k !== '');
            const atLimit = applied.find(([i, k]) => (model[i]!.get(k) ?? 0) >= conns[i]!);
            const out = limitConnection(limits, keys, op.dryRun);
            expect(out.applied).toBe(applied.length > 0);
            seen[out.verdict]++;
            if (atLimit !== undefined) {
              expect([out.verdict, out.zone, out.held]).toEqual(['rejected', `c${atLimit[0]}`, null]);
            } else {
              expect(out.verdict).toBe('passed');
              for (const [i, k] of applied) model[i]!.set(k, (model[i]!.get(k) ?? 0) + 1);
              if (out.held !== null) holds.push({ hold: out.held, taken: applied });
              else expect(applied).toEqual([]);
            }
          } else if (holds.length > 0) {
            const [h] = holds.splice(op.which % holds.length, 1);
            h!.hold.release();
            if (op.twice) h!.hold.release();
            for (const [i, k] of h!.taken) {
              const n = model[i]!.get(k)! - 1;
              if (n === 0) model[i]!.delete(k);
              else model[i]!.set(k, n);
            }
            released.push(h!);
            seen.releases++;
          } else if (released.length > 0) {
            released[op.which % released.length]!.hold.release(); // again, long after
          }
          zones.forEach((z, i) => {
            const counts = [...model[i]!].map(([k]) => z.count(k));
            expect([z.size, counts]).toEqual([model[i]!.size, [...model[i]!.values()]]);
            expect(counts.filter((n) => n > conns[i]!)).toEqual([]);
          });
        }
        for (const h of holds) h.hold.release();
        for (const h of holds) h.hold.release();
        for (const z of zones) expect([z.size, z.usedBytes]).toEqual([0, 0]);
      },
    ), { numRuns: 300 });
    expect(seen.rejected * seen.passed * seen.releases).toBeGreaterThan(0);
  });
});
