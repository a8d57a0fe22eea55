/**
 * nginx's preaccess phase for a location: limit_req, then limit_conn, after the location is found
 * and before allow/deny and auth_basic. A refused request gets the location's limitReqStatus /
 * limitConnStatus (503 by default); a delayed one waits (its body unread, as nginx) and goes on,
 * unless the client leaves meanwhile; in dry run both are counted and logged and the request goes
 * on. The limit_conn counts a request took are released when its response ends or its connection
 * closes. Who decides (this process, the cluster's primary, memcached for shared zones) is the
 * LimitDecider's business.
 */
import type { IncomingMessage } from 'node:http';
import type { LimitLogLevel, LocationLimits } from '../../config/limits.js';
import type { ConnectionOutcome } from '../../limits/connection-zone.js';
import type { ConnectionRule, LimitDecider, RequestRule } from '../../limits/decider.js';
import type { RequestOutcome } from '../../limits/request-zone.js';
import type { CompiledTemplate, VariableSource } from '../../nginx-language/variables.js';
import { requestClientAddress } from '../../net/client-address.js';
import type { EventLog } from '../../observability/log.js';

/** nginx's $limit_req_status and $limit_conn_status values, lower case (the metrics' `status` label). */
export type LimitStatus = 'passed' | 'delayed' | 'rejected' | 'delayed_dry_run' | 'rejected_dry_run';

/** Where the phase reports its outcomes (metrics). */
export interface LimitCounts {
  limitReq(zone: string, status: LimitStatus): void;
  limitConn(zone: string, status: LimitStatus): void;
}

type PinoLevel = 'error' | 'warn' | 'info';
/** nginx's levels in pino's: there is no "notice". */
const PINO: Record<LimitLogLevel, PinoLevel> = { error: 'error', warn: 'warn', notice: 'info', info: 'info' };
/** nginx logs delays one level below refusals (info stays info). */
const BELOW: Record<LimitLogLevel, LimitLogLevel> = { error: 'warn', warn: 'notice', notice: 'info', info: 'info' };

interface Phase<R> {
  readonly rules: readonly R[];
  readonly keys: readonly CompiledTemplate[];
  readonly status: number;
  readonly dryRun: boolean;
  readonly level: PinoLevel;
  readonly delayLevel: PinoLevel;
}

/** A location's limits, bound to the decider of this process. */
export class RouteLimits {
  readonly req: Phase<RequestRule> | null;
  readonly conn: Phase<ConnectionRule> | null;

  constructor(
    limits: LocationLimits,
    /** Zone name -> its rate and whether it is shared (the config's limitReqZones). */
    zones: ReadonlyMap<string, { rate: number; shared: boolean }>,
    readonly decider: LimitDecider,
    readonly counts: LimitCounts,
  ) {
    const r = limits.req;
    this.req = r === null ? null : {
      rules: r.rules.map((x) => ({ zone: x.zone, rate: zones.get(x.zone)!.rate, burst: x.burst, delay: x.delay, shared: zones.get(x.zone)!.shared })),
      keys: r.rules.map((x) => x.key),
      status: r.status, dryRun: r.dryRun, level: PINO[r.logLevel], delayLevel: PINO[BELOW[r.logLevel]],
    };
    const c = limits.conn;
    this.conn = c === null ? null : {
      rules: c.rules.map((x) => ({ zone: x.zone, conn: x.conn })),
      keys: c.rules.map((x) => x.key),
      status: c.status, dryRun: c.dryRun, level: PINO[c.logLevel], delayLevel: PINO[c.logLevel],
    };
  }
}

const NOT_APPLIED: RequestOutcome = { verdict: 'passed', delayMs: 0, excess: 0, zone: null, nomem: false, applied: false };

function evaluate(keys: readonly CompiledTemplate[], src: VariableSource): string[] {
  const out = new Array<string>(keys.length);
  for (let i = 0; i < keys.length; i++) out[i] = keys[i]!.evaluate(src);
  return out;
}

/** "1.500" for nginx's excess 1500. */
function excessText(excess: number): string {
  return `${Math.floor(excess / 1000)}.${String(excess % 1000).padStart(3, '0')}`;
}

/** What a limit line says about the request (nginx: client, server, request, host). */
function requestFields(req: IncomingMessage, server: string): Record<string, string> {
  return {
    client: requestClientAddress(req),
    server,
    request: `${req.method ?? ''} ${req.url ?? ''} HTTP/${req.httpVersion}`,
    host: req.headers.host ?? '', // HTTP/2: made from :authority (http2.ts)
  };
}

/**
 * What ends with the request: its response (ServerResponse, http2 compat response), or for an
 * Upgrade (WebSocket) the client's socket, which holds its limit_conn counts until it closes.
 */
export interface LimitTarget {
  readonly closed: boolean;
  readonly destroyed: boolean;
  once(event: 'close', listener: () => void): unknown;
  off(event: 'close', listener: () => void): unknown;
}

/**
 * One request through limit_req and limit_conn: `next()` when it may go on (at once, or after its
 * delay), `refuse(status)` when refused; neither when the client left while it waited.
 */
export function applyLimits(
  req: IncomingMessage, res: LimitTarget, limits: RouteLimits, server: string, log: EventLog,
  refuse: (status: number) => void, next: () => void,
): void {
  const src: VariableSource = { req, remoteAddress: requestClientAddress(req) };
  // Whether the client left (the response or socket closed): read here rather than through
  // `closed`/`destroyed`, which an HTTP/2 compat response does not have.
  let gone = res.closed || res.destroyed;
  res.once('close', () => { gone = true; });
  const failed = (err: unknown): void => {
    log.error({ err: (err as Error).message }, 'a limited request failed after its limits');
  };
  const conn = (): void => {
    const phase = limits.conn;
    if (phase === null) {
      next();
      return;
    }
    let decided: ConnectionOutcome | Promise<ConnectionOutcome>;
    try {
      decided = limits.decider.connection(phase.rules, evaluate(phase.keys, src), phase.dryRun);
    } catch (err) {
      log.error({ err: (err as Error).message }, 'limit_conn failed; the request goes on');
      next();
      return;
    }
    const after = (o: ConnectionOutcome): void => {
      if (gone) {
        o.held?.release();
        return;
      }
      if (!o.applied) {
        next();
        return;
      }
      if (o.verdict === 'rejected') {
        limits.counts.limitConn(o.zone ?? '', phase.dryRun ? 'rejected_dry_run' : 'rejected');
        const what = o.nomem ? `could not allocate node in limit_conn zone "${o.zone}"` : `limiting connections${phase.dryRun ? ', dry run,' : ''} by zone "${o.zone}"`;
        log[phase.level](requestFields(req, server), what);
        if (phase.dryRun) next();
        else refuse(phase.status);
        return;
      }
      limits.counts.limitConn(o.zone ?? '', 'passed');
      if (o.held !== null) {
        const held = o.held;
        res.once('close', () => held.release());
      }
      next();
    };
    if (decided instanceof Promise) decided.then(after, () => { if (!gone) next(); }).catch(failed);
    else after(decided);
  };

  const phase = limits.req;
  if (phase === null) {
    conn();
    return;
  }
  let decided: RequestOutcome | Promise<RequestOutcome>;
  try {
    decided = limits.decider.request(phase.rules, evaluate(phase.keys, src));
  } catch (err) {
    log.error({ err: (err as Error).message }, 'limit_req failed; the request goes on');
    decided = NOT_APPLIED;
  }
  const after = (o: RequestOutcome): void => {
    if (gone) return;
    if (!o.applied) {
      conn();
      return;
    }
    const zone = o.zone ?? '';
    if (o.verdict === 'rejected') {
      limits.counts.limitReq(zone, phase.dryRun ? 'rejected_dry_run' : 'rejected');
      const what = o.nomem ? `could not allocate node in limit_req zone "${zone}"`
        : `limiting requests${phase.dryRun ? ', dry run' : ''}, excess: ${excessText(o.excess)} by zone "${zone}"`;
      log[phase.level](requestFields(req, server), what);
      if (phase.dryRun) conn();
      else refuse(phase.status);
      return;
    }
    if (o.verdict === 'delayed') {
      limits.counts.limitReq(zone, phase.dryRun ? 'delayed_dry_run' : 'delayed');
      log[phase.delayLevel](requestFields(req, server), `delaying request${phase.dryRun ? ', dry run' : ''}, excess: ${excessText(o.excess)}, by zone "${zone}"`);
      if (phase.dryRun) {
        conn();
        return;
      }
      // nginx waits with the body unread; a client that leaves meanwhile ends it.
      const timer = setTimeout(() => {
        res.off('close', cancel);
        if (!gone) conn();
      }, o.delayMs);
      const cancel = (): void => clearTimeout(timer);
      res.once('close', cancel);
      return;
    }
    limits.counts.limitReq(zone, 'passed');
    conn();
  };
  if (decided instanceof Promise) decided.then(after, () => after(NOT_APPLIED)).catch(failed);
  else after(decided);
}
