/**
 * Who decides a request's limits: the process itself (LocalDecider, over its LimitZones, with
 * `shared` zones counted in memcached by SharedBuckets), or, in a cluster worker, the primary
 * over IPC (runtime/ipc-limits.ts), so that a zone holds across workers as nginx's shared memory
 * zones do. The proxy (proxy/http/limits.ts) sees only this interface.
 */
import { limitConnection, type ConnectionLimit, type ConnectionOutcome } from './connection-zone.js';
import { limitRequest, type RequestLimit, type RequestOutcome } from './request-zone.js';
import type { SharedBuckets } from './shared-buckets.js';
import type { LimitZones } from './zones.js';
import type { ConnectionRule, RequestRule } from './rules.js';

export type { ConnectionRule, RequestRule } from './rules.js';

export interface LimitDecider {
  /** `keys[i]`: the evaluated key of `rules[i]`. */
  request(rules: readonly RequestRule[], keys: readonly string[]): RequestOutcome | Promise<RequestOutcome>;
  connection(rules: readonly ConnectionRule[], keys: readonly string[], dryRun: boolean): ConnectionOutcome | Promise<ConnectionOutcome>;
}

/** nginx's clock for local zones: milliseconds, monotonic. */
export function monotonicMs(): number {
  return Math.floor(performance.now());
}

const NOT_APPLIED: ConnectionOutcome = { verdict: 'passed', zone: null, nomem: false, applied: false, held: null };

/** Decides in this process, over `zones` (and memcached for shared zones, when `shared` is set). */
export class LocalDecider implements LimitDecider {
  /** The zones bound to a location's rules, per LimitZones configuration (rebuilt after a reload). */
  private readonly boundRequests = new WeakMap<readonly RequestRule[], { generation: number; limits: RequestLimit[] | null }>();
  private readonly boundConnections = new WeakMap<readonly ConnectionRule[], { generation: number; limits: ConnectionLimit[] | null }>();

  constructor(private readonly zones: LimitZones, private shared: SharedBuckets | null = null) {}

  /** The memcached counting of shared zones (null: none, or not configured). */
  useShared(shared: SharedBuckets | null): void {
    this.shared = shared;
  }

  request(rules: readonly RequestRule[], keys: readonly string[]): RequestOutcome | Promise<RequestOutcome> {
    if (this.shared !== null && rules.some((r) => r.shared)) return this.shared.decide(rules, keys, this.zones);
    const limits = this.requestLimits(rules);
    if (limits === null) return { verdict: 'passed', delayMs: 0, excess: 0, zone: null, nomem: false, applied: false };
    return limitRequest(limits, keys, monotonicMs());
  }

  connection(rules: readonly ConnectionRule[], keys: readonly string[], dryRun: boolean): ConnectionOutcome {
    const limits = this.connectionLimits(rules);
    return limits === null ? NOT_APPLIED : limitConnection(limits, keys, dryRun);
  }

  private requestLimits(rules: readonly RequestRule[]): RequestLimit[] | null {
    return this.bind(this.boundRequests, rules, this.requestLimitOf);
  }

  private connectionLimits(rules: readonly ConnectionRule[]): ConnectionLimit[] | null {
    return this.bind(this.boundConnections, rules, this.connectionLimitOf);
  }

  private readonly requestLimitOf = (r: RequestRule): RequestLimit | null => {
    const zone = this.zones.request(r.zone);
    return zone === undefined ? null : { zone, burst: r.burst, delay: r.delay };
  };

  private readonly connectionLimitOf = (r: ConnectionRule): ConnectionLimit | null => {
    const zone = this.zones.connection(r.zone);
    return zone === undefined ? null : { zone, conn: r.conn };
  };

  /**
   * A location's rules bound to this process's zones, made once per LimitZones configuration;
   * null when one of its zones is not in the config in use here (a reload under way).
   */
  private bind<R extends object, L>(cache: WeakMap<readonly R[], { generation: number; limits: L[] | null }>, rules: readonly R[], limitOf: (rule: R) => L | null): L[] | null {
    const generation = this.zones.generation;
    const bound = cache.get(rules);
    if (bound !== undefined && bound.generation === generation) return bound.limits;
    let limits: L[] | null = [];
    for (const r of rules) {
      const limit = limitOf(r);
      if (limit === null) { limits = null; break; }
      limits.push(limit);
    }
    cache.set(rules, { generation, limits });
    return limits;
  }
}
