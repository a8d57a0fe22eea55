/**
 * The arithmetic of nginx's limit_req leaky bucket, in one place: the zone (request-zone.ts) and
 * the single-bucket step for a bucket kept elsewhere (a memcached record) both use these helpers,
 * so the formula exists once.
 *
 * Units as nginx's: `rate` is requests per second × 1000 (1r/s → 1000, 1r/m → 1000 / 60 = 16),
 * `excess`, `burst` and `delay` are in 1/1000 requests, times are integer milliseconds. All
 * divisions truncate as C's integer division does. The results are exact while `rate × ms` stays
 * below 2^53 (for 1000r/s, 285 years of milliseconds); beyond it the bucket is empty anyway.
 */

/** What a request gets from one limit or a set of limits. */
export type RequestVerdict = 'passed' | 'delayed' | 'rejected';

/** nginx clamps a clock that went back: more than 60 s back counts as 1 ms, less as 0 ms. */
const BACKWARD_JUMP_MS = -60000;
/** An idle key (for expiry) has not been seen for at least this long. */
const IDLE_MS = 60000;

/**
 * Milliseconds since `last` as nginx counts them (ngx_http_limit_req_lookup / _account): `now -
 * last`, but 1 when the clock went back by more than 60 s and 0 when it went back by less.
 */
export function elapsedMs(now: number, last: number): number {
  const ms = now - last;
  if (ms < BACKWARD_JUMP_MS) return 1;
  if (ms < 0) return 0;
  return ms;
}

/**
 * The excess once this request is counted: the stored excess drained by `rate × ms / 1000`
 * (truncated), plus one request (1000), floored at 0 (nginx's signed `excess` before the
 * `(ngx_uint_t) excess > burst` test; after the floor the cast changes nothing).
 */
export function chargedExcess(excess: number, rate: number, ms: number): number {
  const charged = excess - Math.trunc((rate * ms) / 1000) + 1000;
  return charged < 0 ? 0 : charged;
}

/**
 * The delay in ms nginx imposes for `excess` under a limit with `delay` (1/1000 requests; nodelay
 * is a huge number): 0 up to `delay`, then `(excess - delay) × 1000 / rate`, truncated (so it can
 * be 0 at very high rates, and then the request passes).
 */
export function delayFor(excess: number, delay: number, rate: number): number {
  return excess <= delay ? 0 : Math.trunc(((excess - delay) * 1000) / rate);
}

/**
 * nginx's opportunistic expiry test (ngx_http_limit_req_expire with n > 0): a key not seen for at
 * least 60 s (either way: the distance is absolute) whose excess has drained to 0 by now (here
 * without the +1000 of a new request).
 */
export function idleAndDrained(excess: number, last: number, rate: number, now: number): boolean {
  const ms = Math.abs(now - last);
  if (ms < IDLE_MS) return false;
  return excess - Math.trunc((rate * ms) / 1000) <= 0;
}

/** One key's bucket, serialisable: excess in 1/1000 requests, `last` the ms clock of its last drain. */
export interface BucketState {
  excess: number;
  last: number;
}

/** What stepBucket decides. */
export interface BucketStep {
  /** The bucket to store; null when the request was rejected (the stored bucket stays as it was). */
  state: BucketState | null;
  verdict: RequestVerdict;
  /** > 0 only for 'delayed'. */
  delayMs: number;
  /** nginx's excess for this request, 1/1000 requests. */
  excess: number;
}

/**
 * One key, one limit, accounting: nginx's path for the last (or only) limit of a location, for a
 * bucket stored outside a zone. `state` null is a new key: it passes with excess 0 and `last` =
 * `now`. Otherwise the excess is charged; above `burst` the request is rejected and the bucket
 * unchanged (state null); else it is stored, with `last` moved to `now` only when time passed
 * (nginx's `if (ms) last = now`), and the request is delayed by delayFor. `burst` and `delay` as
 * nginx holds them (×1000; nodelay = Number.MAX_SAFE_INTEGER).
 */
export function stepBucket(state: BucketState | null, rate: number, burst: number, delay: number, now: number): BucketStep {
  if (state === null) return { state: { excess: 0, last: now }, verdict: 'passed', delayMs: 0, excess: 0 };
  const ms = elapsedMs(now, state.last);
  const excess = chargedExcess(state.excess, rate, ms);
  if (excess > burst) return { state: null, verdict: 'rejected', delayMs: 0, excess };
  const delayMs = delayFor(excess, delay, rate);
  return {
    state: { excess, last: ms !== 0 ? now : state.last },
    verdict: delayMs > 0 ? 'delayed' : 'passed',
    delayMs,
    excess,
  };
}
