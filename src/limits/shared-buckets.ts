/**
 * `"shared": true` limit_req zones (beyond nginx): each key's bucket lives in memcached, so every
 * sessionlb instance counts against the same one. A decision reads the bucket (`gets`), steps it
 * with nginx's arithmetic (request-zone.ts stepBucket) on the wall clock the instances share, and
 * writes it back only if nobody changed it meanwhile (`add` when absent, `cas` otherwise),
 * retrying a few times when another instance won the race.
 *
 * The store failing (down, slow, circuit open) or a race lost every time never fails a request:
 * that key is decided by this process's own zone instead (a per-instance limit), counted and
 * reported through `onFallback`.
 *
 * Where a location has several limit_req zones and one of them is shared, each zone is stepped
 * on its own, in order, stopping at the first refusal: the zones before it keep that request
 * counted, which nginx's two-phase lookup (all zones, then commit) avoids. With one zone per
 * location (the usual case) the result is nginx's.
 *
 * The memcached key is an HMAC-SHA-256 of the zone's name and the key under sessionStore.hashKey:
 * client addresses are not written in clear.
 */
import { createHmac } from 'node:crypto';
import { MAX_REQUEST_KEY_BYTES, limitRequest, stepBucket, type BucketState, type RequestOutcome } from './request-zone.js';
import type { RequestRule } from './rules.js';
import type { LimitZones } from './zones.js';

/** The memcached calls used (MemcachedStore has them). */
export interface RecordStore {
  getsRecord(key: string): Promise<{ value: string; cas: string } | null>;
  addRecord(key: string, value: string, ttlSeconds: number): Promise<boolean>;
  casRecord(key: string, value: string, cas: string, ttlSeconds: number): Promise<'stored' | 'exists' | 'not_found'>;
}

export type FallbackReason = 'unavailable' | 'contention' | 'invalid';

/** Tries per key when another instance writes the same bucket in between. */
const RACE_TRIES = 3;
const BUCKET_VALUE = /^(\d{1,15}) (\d{1,15})$/;
const MAX_TTL_SECONDS = 30 * 24 * 3600 - 1;

export interface SharedBucketsOptions {
  store: RecordStore;
  /** The store's key prefix (sessionStore.keyPrefix). */
  keyPrefix: string;
  /** The key of the digests (sessionStore.hashKey): the same on every instance. */
  secret: string;
  /** A bucket decided locally instead, and why (`err` for `unavailable`). */
  onFallback(zone: string, reason: FallbackReason, err: Error | null): void;
  /** Wall clock in ms (shared by the instances). */
  now?: () => number;
}

function parseBucket(value: string): BucketState | null | undefined {
  const m = BUCKET_VALUE.exec(value);
  return m === null ? undefined : { excess: Number(m[1]), last: Number(m[2]) };
}

export class SharedBuckets {
  private readonly now: () => number;

  constructor(private readonly options: SharedBucketsOptions) {
    this.now = options.now ?? Date.now;
  }

  /** The memcached key of `key` in `zone` (printable, bounded: any key bytes are safe). */
  storeKey(zone: string, key: string): string {
    const digest = createHmac('sha256', this.options.secret).update(zone).update('\0').update(key, 'latin1').digest('base64url');
    return `${this.options.keyPrefix}lr:${digest}`;
  }

  async decide(rules: readonly RequestRule[], keys: readonly string[], zones: LimitZones): Promise<RequestOutcome> {
    let out: RequestOutcome = { verdict: 'passed', delayMs: 0, excess: 0, zone: null, nomem: false, applied: false };
    for (let i = 0; i < rules.length; i++) {
      const key = keys[i] ?? '';
      if (key === '' || key.length > MAX_REQUEST_KEY_BYTES) continue;
      const rule = rules[i]!;
      const step = rule.shared ? await this.step(rule, key, zones) : this.local(rule, key, zones);
      if (step.verdict === 'rejected') return { ...step, applied: true };
      if (!out.applied || step.delayMs > out.delayMs) out = { ...step, applied: true };
    }
    return out;
  }

  /** One shared bucket: read, step, write back unless changed meanwhile. */
  private async step(rule: RequestRule, key: string, zones: LimitZones): Promise<RequestOutcome> {
    const storeKey = this.storeKey(rule.zone, key);
    try {
      for (let attempt = 0; attempt < RACE_TRIES; attempt++) {
        const record = await this.options.store.getsRecord(storeKey);
        const state = record === null ? null : parseBucket(record.value);
        if (state === undefined) {
          this.options.onFallback(rule.zone, 'invalid', null);
          return this.local(rule, key, zones);
        }
        const now = this.now();
        const next = stepBucket(state, rule.rate, rule.burst, rule.delay, now);
        const outcome: RequestOutcome = { verdict: next.verdict, delayMs: next.delayMs, excess: next.excess, zone: rule.zone, nomem: false, applied: true };
        if (next.state === null) return outcome; // refused: nginx does not touch the bucket
        // Kept while it still holds excess (it drains at `rate`), and a little longer.
        // (memcached reads a TTL over 30 days as a Unix time: capped below that.)
        const ttl = Math.min(Math.ceil(next.state.excess / rule.rate) + 2, MAX_TTL_SECONDS);
        const value = `${next.state.excess} ${next.state.last}`;
        const stored = record === null
          ? await this.options.store.addRecord(storeKey, value, ttl)
          : (await this.options.store.casRecord(storeKey, value, record.cas, ttl)) === 'stored';
        if (stored) return outcome;
      }
      this.options.onFallback(rule.zone, 'contention', null);
    } catch (err) {
      this.options.onFallback(rule.zone, 'unavailable', err as Error);
    }
    return this.local(rule, key, zones);
  }

  /** One bucket in this process's zone. */
  private local(rule: RequestRule, key: string, zones: LimitZones): RequestOutcome {
    const zone = zones.request(rule.zone);
    if (zone === undefined) return { verdict: 'passed', delayMs: 0, excess: 0, zone: null, nomem: false, applied: false };
    return limitRequest([{ zone, burst: rule.burst, delay: rule.delay }], [key], Math.floor(performance.now()));
  }
}
