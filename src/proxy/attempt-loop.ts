/**
 * The one attempt loop of the proxy, shared by HTTP requests (http/forward.ts), upgrades
 * (http/upgrade.ts) and TCP sessions (stream/tcp-session.ts): on the first attempt the
 * session's bound server, else (a source-affinity client leaving its server: the next server on
 * its hash ring, Affinity.replacement) the upstream's policy among the servers not tried yet; each
 * server at most once; another attempt only for a failure nextUpstream names, within its tries
 * and its timeout (nginx proxy_next_upstream, _tries, _timeout). What differs (how an attempt
 * is sent, what a failure costs) stays in the subclasses.
 *
 * A subclass is the request's one object: the loop adds no allocation per request, except the
 * StickyState of a request whose upstream has `sticky`.
 */
import type { IncomingMessage } from 'node:http';
import type { NextUpstreamCondition } from '../config/model.js';
import type { Peer } from '../balancer/peer.js';
import type { PickRequest } from '../balancer/policy.js';
import type { Upstream } from '../balancer/upstream.js';
import type { FailureKind } from '../net/errors.js';
import { StickyState, type Affinity, type StickyOwner } from '../sessions/affinity.js';

/** The nextUpstream rules an attempt loop follows (an upstream's `nextUpstream`, or a stream's). */
export interface RetryRules {
  /** The failures that move on to another server. */
  readonly on: ReadonlySet<NextUpstreamCondition>;
  /** No new attempt once this long (ms) has passed since the first; 0 = no limit. */
  readonly timeoutMs: number;
}

/** The nextUpstream condition a connection failure falls under. */
export function failureCondition(kind: FailureKind): NextUpstreamCondition {
  return kind === 'timeout' ? 'timeout' : kind === 'invalid_header' ? 'invalid_header' : 'error';
}

export abstract class AttemptLoop implements PickRequest, StickyOwner {
  /** Session affinity of this request; null when its upstream has no `sticky`. */
  protected readonly sticky: StickyState | null;
  /** The server of the attempt in progress (acquired), or null. */
  protected peer: Peer | null = null;
  /** Attempts still allowed (a stale keep-alive connection's retry gives its try back). */
  protected triesLeft: number;
  /** Servers tried so far: the first in `firstTried`, the Set only once there is a second attempt (most requests make one). */
  private firstTried: Peer | null = null;
  private tried: Set<Peer> | null = null;
  private readonly startedMs = Date.now();
  /** The first attempt waits for a session store lookup (bounded by the store's timeout). */
  private waitingForSticky = false;

  constructor(
    readonly req: IncomingMessage,
    readonly remoteAddress: string,
    protected readonly upstream: Upstream,
    protected readonly affinity: Affinity | null,
    protected readonly rules: RetryRules,
    /** Attempts in all (nginx tries, bounded by the number of servers). */
    tries: number,
  ) {
    this.triesLeft = tries;
    this.sticky = affinity === null ? null : new StickyState(req, remoteAddress, affinity, this);
  }

  /** Reads the session cookie and starts its lookup (`headers`: the upstream request's, from which cookie mode strips its cookie). */
  protected beginSticky(headers: string[] | null, now: number): void {
    if (this.affinity !== null) this.affinity.begin(this.sticky!, headers, now);
  }

  /**
   * The server for the next attempt, already counted as active and tried: on the first attempt
   * the session's bound server when it can take the request, else the policy's pick among the
   * servers not tried yet. null: none is left (nginx "no live upstreams"). undefined: the
   * session lookup is still running; `resumeAfterLookup` runs when it answers.
   */
  protected nextServer(now: number): Peer | null | undefined {
    let peer: Peer | null = null;
    if (this.firstTried === null && this.affinity !== null) {
      const sticky = this.sticky!;
      if (sticky.pending) {
        this.waitingForSticky = true;
        return undefined;
      }
      peer = this.affinity.choose(sticky, now);
    }
    // A bound client leaving its server (source mode): where every instance moves it.
    if (peer === null && this.affinity !== null) peer = this.affinity.replacement(this.sticky!, this.triedPeers(), now);
    if (peer === null) peer = this.upstream.select(this, this.triedPeers(), now);
    if (peer === null) return null;
    this.triesLeft--;
    if (this.firstTried === null) this.firstTried = peer;
    else this.triedPeers()!.add(peer);
    this.peer = peer;
    return peer;
  }

  /** The servers tried so far as a Set (made on the first retry), null before the first attempt. */
  private triedPeers(): Set<Peer> | null {
    if (this.tried === null && this.firstTried !== null) this.tried = new Set([this.firstTried]);
    return this.tried;
  }

  /** Whether nextUpstream lets a failure of `condition` move on to another server now (tries and timeout left). */
  protected mayMoveOn(condition: NextUpstreamCondition, now: number): boolean {
    return this.rules.on.has(condition) && this.mayTryAnother(now);
  }

  /** Tries and nextUpstream timeout left for another attempt. */
  protected mayTryAnother(now: number): boolean {
    const limit = this.rules.timeoutMs;
    return this.triesLeft > 0 && (limit === 0 || now - this.startedMs < limit);
  }

  /** StickyOwner: the session lookup answered. */
  stickyResolved(): void {
    if (!this.waitingForSticky) return;
    this.waitingForSticky = false;
    this.resumeAfterLookup();
  }

  /** Continues the first attempt that waited for the session lookup. */
  protected abstract resumeAfterLookup(): void;
}
