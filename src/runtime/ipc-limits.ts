/**
 * limit_req and limit_conn in a cluster: the zones live in the primary (as nginx's shared memory
 * zones are shared by its workers), and a worker asks it for each limited request (`limit`),
 * releasing the limit_conn counts it took when the request ends (`limit-free`). The primary
 * releases whatever a worker still held when that worker exits.
 *
 * A primary that does not answer within `timeoutMs` (stuck, or gone) does not hold requests up:
 * the worker decides in its own zones instead (a per-worker limit until the primary is back),
 * counted through `onFallback`.
 */
import type { ConnectionHold, ConnectionOutcome } from '../limits/connection-zone.js';
import type { ConnectionRule, LimitDecider, LocalDecider, RequestRule } from '../limits/decider.js';
import type { RequestOutcome } from '../limits/request-zone.js';

/** Worker -> primary. */
export type LimitAsk =
  | { sl: 'limit'; id: number; q: 'req'; r: readonly RequestRule[]; k: readonly string[] }
  | { sl: 'limit'; id: number; q: 'conn'; r: readonly ConnectionRule[]; k: readonly string[]; dry: boolean }
  | { sl: 'limit-free'; h: number };

/** Primary -> worker: a decision (`h`: the id of the counts a limit_conn took; null: none). */
export type LimitAnswer =
  | { sl: 'limit-res'; id: number; req: RequestOutcome }
  | { sl: 'limit-res'; id: number; conn: Omit<ConnectionOutcome, 'held'>; h: number | null };

interface Pending {
  resolve(answer: LimitAnswer | null): void;
  timer: NodeJS.Timeout;
}

let nextId = 1;

/**
 * A worker's decider: asks the primary; its own `local` decider when the primary does not answer.
 * `send` returns false only when the channel is gone (a message queued behind others is sent).
 */
export class IpcLimitDecider implements LimitDecider {
  private readonly pending = new Map<number, Pending>();

  constructor(
    private readonly send: (message: LimitAsk) => boolean,
    private readonly local: LocalDecider,
    private readonly timeoutMs: number,
    private readonly onFallback: (zones: readonly string[]) => void,
  ) {}

  /** Answers from the primary (`limit-res`). */
  answer(message: LimitAnswer): void {
    const p = this.pending.get(message.id);
    if (p === undefined) {
      // Decided here already (no answer in time): counts the primary took for it go back at once.
      if ('conn' in message && message.h !== null) new RemoteHold(this.send, message.h).release();
      return;
    }
    this.pending.delete(message.id);
    clearTimeout(p.timer);
    p.resolve(message);
  }

  private ask(message: LimitAsk & { sl: 'limit' }): Promise<LimitAnswer | null> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(message.id);
        resolve(null);
      }, this.timeoutMs);
      this.pending.set(message.id, { resolve, timer });
      let sent = false;
      try {
        sent = this.send(message);
      } catch {
        sent = false;
      }
      if (!sent) {
        this.pending.delete(message.id);
        clearTimeout(timer);
        resolve(null);
      }
    });
  }

  request(rules: readonly RequestRule[], keys: readonly string[]): Promise<RequestOutcome> {
    return this.ask({ sl: 'limit', id: nextId++, q: 'req', r: rules, k: keys }).then((a) => {
      if (a !== null && 'req' in a) return a.req;
      this.onFallback(rules.map((r) => r.zone));
      return this.local.request(rules, keys);
    });
  }

  connection(rules: readonly ConnectionRule[], keys: readonly string[], dryRun: boolean): Promise<ConnectionOutcome> {
    return this.ask({ sl: 'limit', id: nextId++, q: 'conn', r: rules, k: keys, dry: dryRun }).then((a) => {
      if (a === null || !('conn' in a)) {
        this.onFallback(rules.map((r) => r.zone));
        return this.local.connection(rules, keys, dryRun);
      }
      const h = a.h;
      const held: ConnectionHold | null = h === null ? null : new RemoteHold(this.send, h);
      return { ...a.conn, held };
    });
  }

  /** Pending asks are answered locally at once (the worker is stopping or the channel closed). */
  close(): void {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.resolve(null); // its caller decides locally
    }
  }
}

/** limit_conn counts held in the primary: released once. */
class RemoteHold implements ConnectionHold {
  private released = false;

  constructor(private readonly send: (message: LimitAsk) => boolean, private readonly id: number) {}

  release(): void {
    if (this.released) return;
    this.released = true;
    try {
      this.send({ sl: 'limit-free', h: this.id });
    } catch {
      // The channel is gone: the primary releases this worker's holds when it sees it exit.
    }
  }
}

/** The primary's side: decides for its workers over its own decider, and keeps their holds. */
export class LimitService {
  private readonly holds = new Map<number, { worker: number; hold: ConnectionHold }>();
  private nextHold = 1;

  constructor(private readonly decider: LimitDecider) {}

  /**
   * Serves one `limit` / `limit-free` of `worker`; `reply` sends the answer to it (false: the
   * worker is gone, and the counts just taken for it go back). A malformed message is ignored:
   * it never throws into the cluster's message handler.
   */
  serve(worker: number, message: LimitAsk, reply: (answer: LimitAnswer) => boolean): void {
    if (message.sl === 'limit-free') {
      const h = this.holds.get(message.h);
      if (h !== undefined && h.worker === worker) {
        this.holds.delete(message.h);
        h.hold.release();
      }
      return;
    }
    if (typeof message.id !== 'number' || !wellFormed(message)) return;
    const id = message.id;
    if (message.q === 'req') {
      decide(() => this.decider.request(message.r, message.k)).then(
        (req) => { reply({ sl: 'limit-res', id, req }); },
        () => { reply({ sl: 'limit-res', id, req: NOT_APPLIED }); },
      );
      return;
    }
    decide(() => this.decider.connection(message.r, message.k, message.dry === true)).then((outcome) => {
      let h: number | null = null;
      if (outcome.held !== null) {
        h = this.nextHold++;
        this.holds.set(h, { worker, hold: outcome.held });
      }
      const { held: _held, ...conn } = outcome;
      if (!reply({ sl: 'limit-res', id, conn, h }) && h !== null) {
        this.holds.delete(h);
        outcome.held?.release();
      }
    }, () => { reply({ sl: 'limit-res', id, conn: { verdict: 'passed', zone: null, nomem: false, applied: false }, h: null }); });
  }

  /** A worker exited: the counts its requests held are released. */
  workerGone(worker: number): void {
    for (const [id, h] of this.holds) {
      if (h.worker !== worker) continue;
      this.holds.delete(id);
      h.hold.release();
    }
  }
}

const NOT_APPLIED: RequestOutcome = { verdict: 'passed', delayMs: 0, excess: 0, zone: null, nomem: false, applied: false };

/** A decision as a promise, whether the decider answered at once, later, or threw. */
function decide<T>(run: () => T | Promise<T>): Promise<T> {
  try {
    return Promise.resolve(run());
  } catch (err) {
    return Promise.reject(err as Error);
  }
}

/** Rules of strings and numbers, keys of strings, as a worker of ours sends them. */
function wellFormed(message: LimitAsk & { sl: 'limit' }): boolean {
  if (!Array.isArray(message.r) || !Array.isArray(message.k) || message.r.length !== message.k.length) return false;
  for (const key of message.k) if (typeof key !== 'string') return false;
  for (const rule of message.r as readonly unknown[]) {
    if (typeof rule !== 'object' || rule === null || typeof (rule as { zone?: unknown }).zone !== 'string') return false;
  }
  return true;
}
