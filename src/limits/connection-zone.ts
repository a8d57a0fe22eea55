/**
 * nginx `limit_conn_zone` + `limit_conn` (ngx_http_limit_conn_module): per-key counts of the
 * requests in progress, and the decision for one request over a location's list of limits.
 * Pure: no I/O, no logging; the caller releases the returned hold when the request ends.
 *
 * As nginx's handler: limits in order; an empty key (or one over 255 bytes) skips its limit; a
 * new key gets a node with count 1 (no room: rejected, nomem); a key at its limit (`count >=
 * conn`) is rejected; otherwise its count goes up. A rejection releases every count this request
 * took so far, and the limits after it are not looked at. A key's node goes when its count drops
 * to 0; there is no LRU: a full zone refuses new keys.
 *
 * Dry run (limit_conn_dry_run): nginx does exactly the same to the zone. On a would-be rejection
 * it runs ngx_http_limit_conn_cleanup_all (this request's counts released), stops at that limit,
 * and only then declines instead of returning the status; on a pass it counts as usual. So in dry
 * run a request that would have been rejected runs counted nowhere, and the counts are those of
 * the requests that would have passed. limitConnection therefore takes `dryRun` for the caller's
 * symmetry only: the zone and the outcome are the same, 'rejected' included; the caller maps it to
 * REJECTED_DRY_RUN and lets the request through.
 */
import { checkZoneSize, connNodeBytes, zoneCapacityBytes } from './zone-memory.js';

/** nginx's longest limit_conn key; a longer one skips its limit (the caller logs it). */
export const MAX_CONNECTION_KEY_BYTES = 255;

// acquire results
const TAKEN = 0;
const AT_LIMIT = 1;
const NO_MEMORY = 2;
type AcquireResult = typeof TAKEN | typeof AT_LIMIT | typeof NO_MEMORY;

/** A `limit_conn_zone`: per-key counts in `sizeBytes` of memory as nginx's slab zone would hold them. */
export class ConnectionZone {
  /** New keys refused because the zone was full (nginx's slab allocation failure), since creation. */
  allocationFailures = 0;
  /** Bytes that can hold nodes (zoneCapacityBytes of the size). */
  readonly capacityBytes: number;

  /** @internal Bumped by clear(): holds taken before it release nothing. */
  generation = 0;

  private readonly counts = new Map<string, number>();
  private used = 0;

  /**
   * @param name the zone's name (for verdicts and messages)
   * @param sizeBytes the zone's size as configured; at least MIN_ZONE_BYTES
   */
  constructor(readonly name: string, sizeBytes: number) {
    checkZoneSize(name, sizeBytes);
    this.capacityBytes = zoneCapacityBytes(sizeBytes);
  }

  /** Keys held now (each with a count of at least 1). */
  get size(): number {
    return this.counts.size;
  }

  /** Bytes the keys held now take (never above capacityBytes). */
  get usedBytes(): number {
    return this.used;
  }

  /** The requests in progress for `key` (0 when the zone does not hold it). */
  count(key: string): number {
    return this.counts.get(key) ?? 0;
  }

  /** Drops every key; holds taken before release nothing afterwards. */
  clear(): void {
    this.counts.clear();
    this.used = 0;
    this.generation++;
  }

  /** @internal One count of `key` taken when below `conn`; a new key needs room. */
  acquire(key: string, conn: number): AcquireResult {
    const count = this.counts.get(key);
    if (count === undefined) {
      const bytes = connNodeBytes(key.length);
      if (this.used + bytes > this.capacityBytes) {
        this.allocationFailures++;
        return NO_MEMORY;
      }
      this.used += bytes;
      this.counts.set(key, 1);
      return TAKEN;
    }
    if (count >= conn) return AT_LIMIT;
    this.counts.set(key, count + 1);
    return TAKEN;
  }

  /** @internal One count of `key` given back (nginx's cleanup); the node goes at 0. */
  release(key: string, generation: number): void {
    if (generation !== this.generation) return;
    const count = this.counts.get(key);
    if (count === undefined) return;
    if (count > 1) {
      this.counts.set(key, count - 1);
      return;
    }
    this.counts.delete(key);
    this.used -= connNodeBytes(key.length);
  }
}

/** One `limit_conn` of a location. */
export interface ConnectionLimit {
  readonly zone: ConnectionZone;
  /** The most requests in progress per key (nginx: 1 to 65535). */
  readonly conn: number;
}

/** The counts one request holds; release them when the request ends. */
export interface ConnectionHold {
  /** Gives back every count this request took. Idempotent. */
  release(): void;
}

/** The decision over a location's connection limits for one request. */
export interface ConnectionOutcome {
  verdict: 'passed' | 'rejected';
  /** The zone that rejected; null when passed. */
  zone: string | null;
  /** Rejected because a new key found no room in the zone. */
  nomem: boolean;
  /** False when every key was empty or too long (nginx NGX_DECLINED: no $limit_conn_status). */
  applied: boolean;
  /** What the request holds (passed and applied); null otherwise: nothing to release. */
  held: ConnectionHold | null;
}

/**
 * The counts of one request: the first in fields (the usual single limit allocates nothing more),
 * any further ones in a flat array of zone, key, generation triples.
 */
class Hold implements ConnectionHold {
  private more: (ConnectionZone | string | number)[] | null = null;
  private released = false;

  constructor(private readonly zone: ConnectionZone, private readonly key: string, private readonly generation: number) {}

  add(zone: ConnectionZone, key: string): void {
    (this.more ??= []).push(zone, key, zone.generation);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.zone.release(this.key, this.generation);
    const more = this.more;
    if (more === null) return;
    for (let i = 0; i < more.length; i += 3) {
      (more[i] as ConnectionZone).release(more[i + 1] as string, more[i + 2] as number);
    }
  }
}

const NOT_APPLIED: ConnectionOutcome = Object.freeze({
  verdict: 'passed', zone: null, nomem: false, applied: false, held: null,
});

/**
 * nginx's limit_conn handler for one request: `keys[i]` is the evaluated key of `limits[i]` (empty
 * or longer than MAX_CONNECTION_KEY_BYTES: that limit is skipped). Takes one count per applied
 * limit, or none at all when one of them rejects. `_dryRun` changes nothing here: nginx's dry run
 * counts exactly as a normal run (see the file comment); the caller lets a rejected request through.
 */
export function limitConnection(limits: readonly ConnectionLimit[], keys: readonly string[], _dryRun = false): ConnectionOutcome {
  let hold: Hold | null = null;
  for (let i = 0; i < limits.length; i++) {
    const key = keys[i];
    if (key === undefined || key.length === 0 || key.length > MAX_CONNECTION_KEY_BYTES) continue;
    const limit = limits[i] as ConnectionLimit;
    const zone = limit.zone;
    const result = zone.acquire(key, limit.conn);
    if (result !== TAKEN) {
      if (hold !== null) hold.release();
      return { verdict: 'rejected', zone: zone.name, nomem: result === NO_MEMORY, applied: true, held: null };
    }
    if (hold === null) hold = new Hold(zone, key, zone.generation);
    else hold.add(zone, key);
  }
  if (hold === null) return NOT_APPLIED;
  return { verdict: 'passed', zone: null, nomem: false, applied: true, held: hold };
}
