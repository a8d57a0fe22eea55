/**
 * The one interface every balancing policy implements (HAProxy's lb_*.c, Caddy's
 * Selector): choose one peer for a request among those it may use. The proxy never
 * knows which policy runs.
 */
import type { IncomingMessage } from 'node:http';
import type { Peer } from './peer.js';

/** What a policy may look at to choose (hash keys, client address). */
export interface PickRequest {
  readonly req: IncomingMessage;
  readonly remoteAddress: string;
}

export interface Policy {
  /**
   * Picks a peer from `peers` that `peer.canTakeNew(now)` allows and that is not in `tried`
   * (peers already attempted for this request; null on the first attempt), or null when none can serve.
   * A policy that keeps per-pick state (round robin weights) updates it here.
   */
  pick(peers: readonly Peer[], tried: ReadonlySet<Peer> | null, request: PickRequest, now: number): Peer | null;
}
