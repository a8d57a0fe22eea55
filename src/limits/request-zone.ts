/**
 * nginx `limit_req_zone` + `limit_req` (ngx_http_limit_req_module): a zone of per-key leaky
 * buckets, and the decision for one request over a location's list of limits, with nginx's
 * arithmetic (leaky-bucket.ts), its two phases, its LRU order and expiry, and its zone size.
 * Pure: no clock (the caller passes `now`, integer ms), no I/O, no logging.
 *
 * How nginx decides (ngx_http_limit_req_handler), reproduced by limitRequest:
 * - limits are taken in order; an empty key (or one over 65535 bytes) skips its limit;
 * - every limit but the last is looked up without accounting: the key is found or created and
 *   pinned (count++), its excess is checked against the burst but not stored; the last limit is
 *   looked up with accounting (excess and `last` stored at once);
 * - a lookup over the burst (BUSY) or one that cannot allocate a node (ERROR) stops the walk: the
 *   keys pinned so far are released (count--) and keep their state untouched; the request is
 *   rejected;
 * - otherwise the pinned keys are accounted (_account: each charged as the last one was, `last`
 *   moved to now only when time passed) and the request waits for the longest of their delays.
 * A node created by a lookup without accounting has `last = 0` in nginx; with nginx's clock (ms
 * since boot) that always drains it to excess 0 when it is next charged and makes it expirable.
 * Here such a node carries `accounted = false` and gets exactly that result whatever the caller's
 * clock origin.
 *
 * Dry run (limit_req_dry_run) is not handled here because nginx's dry run changes nothing in the
 * zones: the handler runs the same lookups, the same release on BUSY/ERROR and the same _account
 * on a delay, and only then, on `lrcf->dry_run`, declines instead of returning the status or
 * arming the delay timer. The caller maps the verdict ($limit_req_status REJECTED_DRY_RUN /
 * DELAYED_DRY_RUN) and lets the request through.
 */
import {
  chargedExcess, delayFor, elapsedMs, idleAndDrained,
  type RequestVerdict,
} from './leaky-bucket.js';
import { checkZoneSize, reqNodeBytes, zoneCapacityBytes } from './zone-memory.js';

export { stepBucket, type BucketState, type BucketStep, type RequestVerdict } from './leaky-bucket.js';

/** nginx's longest limit_req key; a longer one skips its limit (the caller logs it). */
export const MAX_REQUEST_KEY_BYTES = 65535;

/** One key of a zone (ngx_http_limit_req_node_t), on the zone's LRU list (head: most recent). */
class RequestNode {
  /** 1/1000 requests. */
  excess = 0;
  /** ms clock of the last drain; meaningless while `accounted` is false (nginx: 0). */
  last = 0;
  /** Requests holding it between lookup and account (nginx `count`); expiry stops at it. */
  count = 0;
  /** False for a node created by a non-accounting lookup and not charged since (nginx: last = 0). */
  accounted = false;
  prev: RequestNode | null = null;
  next: RequestNode | null = null;

  constructor(readonly key: string, readonly bytes: number) {}
}

/** A key's state as the zone holds it (for tests, status and debugging). */
export interface RequestKeyState {
  readonly excess: number;
  readonly last: number;
  readonly count: number;
  /** False for a key only ever looked up without accounting (nginx's `last = 0`). */
  readonly accounted: boolean;
}

// Lookup results (nginx's NGX_OK, NGX_AGAIN, NGX_BUSY, NGX_ERROR).
const OK = 0;
const AGAIN = 1;
const BUSY = 2;
const ERROR = 3;
type LookupResult = typeof OK | typeof AGAIN | typeof BUSY | typeof ERROR;

/**
 * A `limit_req_zone`: keys and their buckets, kept in `sizeBytes` of memory as nginx's slab zone
 * would (zone-memory.ts), least recently used first out.
 */
export class RequestZone {
  /** Keys dropped by force because a new key did not fit (nginx's _expire(ctx, 0)), since creation. */
  evicted = 0;
  /** Idle keys removed by the opportunistic expiry (idle >= 60 s and drained), since creation. */
  expired = 0;
  /** New keys refused because the zone could not make room (nginx "could not allocate node"). */
  allocationFailures = 0;
  /** Bytes that can hold nodes (zoneCapacityBytes of the size). */
  readonly capacityBytes: number;

  /** @internal The excess of the last lookup (nginx's `*ep`). */
  lookupExcess = 0;
  /** @internal The node pinned by this request's non-accounting lookup (nginx's `ctx->node`). */
  pending: RequestNode | null = null;

  private readonly nodes = new Map<string, RequestNode>();
  private head: RequestNode | null = null;
  private tail: RequestNode | null = null;
  private used = 0;

  /**
   * @param name the zone's name (for verdicts and messages)
   * @param rate nginx's `ctx->rate`: requests per second × 1000 / scale, an integer (1r/m → 16)
   * @param sizeBytes the zone's size as configured; at least MIN_ZONE_BYTES
   */
  constructor(readonly name: string, readonly rate: number, sizeBytes: number) {
    checkZoneSize(name, sizeBytes);
    if (!Number.isSafeInteger(rate) || rate <= 0) throw new RangeError(`zone "${name}": invalid rate ${rate}`);
    this.capacityBytes = zoneCapacityBytes(sizeBytes);
  }

  /** Keys held now. */
  get size(): number {
    return this.nodes.size;
  }

  /** Bytes the keys held now take (never above capacityBytes). */
  get usedBytes(): number {
    return this.used;
  }

  /** A copy of one key's state, or null when the zone does not hold it. */
  inspect(key: string): RequestKeyState | null {
    const node = this.nodes.get(key);
    if (node === undefined) return null;
    return { excess: node.excess, last: node.last, count: node.count, accounted: node.accounted };
  }

  /** The keys held, most recently looked up first (the order expiry works from the other end). */
  keysByRecency(): string[] {
    const keys: string[] = [];
    for (let node = this.head; node !== null; node = node.next) keys.push(node.key);
    return keys;
  }

  /** Drops every key; the counters keep counting since creation. */
  clear(): void {
    this.nodes.clear();
    this.head = null;
    this.tail = null;
    this.used = 0;
    this.pending = null;
  }

  /**
   * @internal nginx's ngx_http_limit_req_lookup for one request: `key` moved to the head (or
   * created), its excess in `lookupExcess`. With `account` the bucket is stored (OK); without, it
   * is pinned in `pending` (AGAIN). BUSY: over `burst`, nothing stored. ERROR: no room for a new key.
   */
  lookup(key: string, burst: number, account: boolean, now: number): LookupResult {
    const node = this.nodes.get(key);
    if (node !== undefined) {
      this.moveToHead(node);
      let ms = 1; // an unaccounted node: nginx's last = 0, i.e. long ago: drained, and ms != 0
      let excess = 0;
      if (node.accounted) {
        ms = elapsedMs(now, node.last);
        excess = chargedExcess(node.excess, this.rate, ms);
      }
      this.lookupExcess = excess;
      if (excess > burst) return BUSY;
      if (account) {
        node.excess = excess;
        if (ms !== 0) {
          node.last = now;
          node.accounted = true;
        }
        return OK;
      }
      node.count++;
      this.pending = node;
      return AGAIN;
    }

    this.lookupExcess = 0;
    const bytes = reqNodeBytes(key.length);
    this.expire(false, now);
    if (this.used + bytes > this.capacityBytes) {
      this.expire(true, now);
      if (this.used + bytes > this.capacityBytes) {
        this.allocationFailures++;
        return ERROR;
      }
    }
    const created = new RequestNode(key, bytes);
    this.nodes.set(key, created);
    this.used += bytes;
    this.linkAtHead(created);
    if (account) {
      created.last = now;
      created.accounted = true;
      return OK;
    }
    created.count = 1;
    this.pending = created;
    return AGAIN;
  }

  /**
   * @internal nginx's _account for this zone's pinned node: charged as an accounting lookup would,
   * unpinned. Returns its new excess.
   */
  commitPending(now: number): number {
    const node = this.pending as RequestNode;
    this.pending = null;
    let ms = 1;
    let excess = 0;
    if (node.accounted) {
      ms = elapsedMs(now, node.last);
      excess = chargedExcess(node.excess, this.rate, ms);
    }
    if (ms !== 0) {
      node.last = now;
      node.accounted = true;
    }
    node.excess = excess;
    node.count--;
    return excess;
  }

  /** @internal nginx's _unlock for this zone: the pinned node unpinned, its state untouched. */
  releasePending(): void {
    const node = this.pending;
    if (node === null) return;
    this.pending = null;
    node.count--;
  }

  /**
   * nginx's ngx_http_limit_req_expire. Works from the LRU tail and stops at a pinned node. Without
   * `force` (nginx n = 1): removes up to two tail nodes that are idle and drained, stopping at the
   * first that is not. With `force` (n = 0): first drops the tail whatever its state, then as many
   * as two idle ones.
   */
  private expire(force: boolean, now: number): void {
    let n = force ? 0 : 1;
    while (n < 3) {
      const node = this.tail;
      if (node === null || node.count !== 0) return;
      if (n++ !== 0) {
        // An unaccounted node has nginx's last = 0: idle for as long as the clock has run, drained.
        if (node.accounted && !idleAndDrained(node.excess, node.last, this.rate, now)) return;
        this.expired++;
      } else {
        this.evicted++;
      }
      this.remove(node);
    }
  }

  private remove(node: RequestNode): void {
    this.unlink(node);
    this.nodes.delete(node.key);
    this.used -= node.bytes;
  }

  private moveToHead(node: RequestNode): void {
    if (this.head === node) return;
    this.unlink(node);
    this.linkAtHead(node);
  }

  private linkAtHead(node: RequestNode): void {
    node.prev = null;
    node.next = this.head;
    if (this.head !== null) this.head.prev = node;
    else this.tail = node;
    this.head = node;
  }

  private unlink(node: RequestNode): void {
    if (node.prev !== null) node.prev.next = node.next;
    else this.head = node.next;
    if (node.next !== null) node.next.prev = node.prev;
    else this.tail = node.prev;
    node.prev = null;
    node.next = null;
  }
}

/** One `limit_req` of a location. */
export interface RequestLimit {
  readonly zone: RequestZone;
  /** nginx's burst × 1000 (burst=5 → 5000; no burst → 0). */
  readonly burst: number;
  /** nginx's delay × 1000 (delay=8 → 8000; none → 0); nodelay = Number.MAX_SAFE_INTEGER. */
  readonly delay: number;
}

/** The decision over a location's limits for one request. */
export interface RequestOutcome {
  /** 'passed' also when no limit applied (every key empty): then `zone` is null and `applied` false. */
  verdict: RequestVerdict;
  /** > 0 only for 'delayed'. */
  delayMs: number;
  /**
   * nginx's excess in 1/1000 requests, as its log line prints it ("excess: 1.500"): rejected, the
   * busy lookup's (0 for nomem); delayed, the winning zone's; passed, the last limit's.
   */
  excess: number;
  /**
   * The zone that decided: rejected, the busy (or full) one; delayed, the one with the longest
   * delay (the last limit on a tie, as nginx); passed, the last one looked up; null when none applied.
   */
  zone: string | null;
  /** Rejected because a node could not be allocated (nginx logs "could not allocate node"). */
  nomem: boolean;
  /** False when every key was empty or too long (nginx NGX_DECLINED: no $limit_req_status). */
  applied: boolean;
}

const NOT_APPLIED: RequestOutcome = Object.freeze({
  verdict: 'passed', delayMs: 0, excess: 0, zone: null, nomem: false, applied: false,
});

/**
 * nginx's limit_req handler for one request: `keys[i]` is the evaluated key of `limits[i]` (empty
 * or longer than MAX_REQUEST_KEY_BYTES: that limit is skipped), `now` the caller's integer ms
 * clock. Updates the zones as nginx does and returns the verdict; see the file comment for the
 * steps. A zone may appear at most once in `limits` (nginx refuses a duplicate `limit_req` zone in
 * one location); a duplicate throws, after releasing what was pinned.
 */
export function limitRequest(limits: readonly RequestLimit[], keys: readonly string[], now: number): RequestOutcome {
  const last = limits.length - 1;
  let result: LookupResult = AGAIN;
  let decided: RequestLimit | null = null; // the last limit looked up (nginx's `limit` at the end)
  let n = 0;
  for (; n <= last; n++) {
    const key = keys[n];
    if (key === undefined || key.length === 0 || key.length > MAX_REQUEST_KEY_BYTES) continue;
    const limit = limits[n] as RequestLimit;
    if (limit.zone.pending !== null) {
      releasePinned(limits, n);
      throw new Error(`limit_req zone "${limit.zone.name}" is duplicate in one list of limits`);
    }
    decided = limit;
    result = limit.zone.lookup(key, limit.burst, n === last, now);
    if (result !== AGAIN) break;
  }
  if (decided === null) return NOT_APPLIED;

  if (result === BUSY || result === ERROR) {
    releasePinned(limits, n);
    const nomem = result === ERROR;
    return {
      verdict: 'rejected', delayMs: 0, excess: nomem ? 0 : decided.zone.lookupExcess,
      zone: decided.zone.name, nomem, applied: true,
    };
  }

  // OK: the last limit was accounted (n = last). AGAIN: the last key was skipped (n = last + 1),
  // and nginx starts from excess 0.
  let excess = 0;
  let maxDelay = 0;
  let winner = decided;
  if (result === OK) {
    excess = decided.zone.lookupExcess;
    maxDelay = delayFor(excess, decided.delay, decided.zone.rate);
  }
  for (let i = n - 1; i >= 0; i--) {
    const limit = limits[i] as RequestLimit;
    const zone = limit.zone;
    if (zone.pending === null) continue;
    const charged = zone.commitPending(now);
    const delay = delayFor(charged, limit.delay, zone.rate);
    if (delay > maxDelay) {
      maxDelay = delay;
      excess = charged;
      winner = limit;
    }
  }
  if (maxDelay === 0) {
    return { verdict: 'passed', delayMs: 0, excess, zone: decided.zone.name, nomem: false, applied: true };
  }
  return { verdict: 'delayed', delayMs: maxDelay, excess, zone: winner.zone.name, nomem: false, applied: true };
}

/** nginx's _unlock: the nodes pinned by limits[0, n) released, their state untouched. */
function releasePinned(limits: readonly RequestLimit[], n: number): void {
  for (let i = n - 1; i >= 0; i--) (limits[i] as RequestLimit).zone.releasePending();
}
