/**
 * nginx's `random` and `random two least_conn` (ngx_http_upstream_random_module).
 * random: a peer drawn with probability proportional to its weight; an unavailable or
 * tried draw is redrawn (up to 20 draws in all, then smooth weighted round robin).
 * two: draw two different available peers the same way and take the one with fewer
 * active requests relative to weight (a.active * b.weight vs b.active * a.weight; on a
 * tie the second draw wins, as in nginx) — "the power of two choices".
 * Weights are read on every pick, so weights changed through the admin API apply at once.
 */
import type { Peer } from './peer.js';
import type { Policy, PickRequest } from './policy.js';
import { RoundRobin } from './round-robin.js';
import { peerAtWeight, totalWeight } from './weights.js';

const MAX_TRIES = 20;

/** Returns a float in [0, 1), like Math.random (injectable for deterministic tests). */
export type RandomSource = () => number;

export class RandomPolicy implements Policy {
  private readonly fallback = new RoundRobin();

  constructor(
    private readonly two: boolean,
    private readonly random: RandomSource = Math.random,
  ) {}

  /**
   * Draws a peer with probability weight / total weight (weights are read on every pick:
   * the admin API may change them at runtime). A linear walk: upstreams are small.
   */
  private draw(peers: readonly Peer[], total: number): Peer {
    return peerAtWeight(peers, Math.floor(this.random() * total));
  }

  pick(peers: readonly Peer[], tried: ReadonlySet<Peer> | null, request: PickRequest, now: number): Peer | null {
    if (peers.length < 2) return this.fallback.pick(peers, tried, request, now);
    const total = totalWeight(peers);
    if (!this.two) {
      for (let tries = 0; tries <= MAX_TRIES; tries++) {
        const peer = this.draw(peers, total);
        if ((tried === null || !tried.has(peer)) && peer.canTakeNew(now)) return peer;
      }
      return this.fallback.pick(peers, tried, request, now);
    }
    let first: Peer | null = null;
    for (let tries = 0; tries <= MAX_TRIES; tries++) {
      const peer = this.draw(peers, total);
      if (peer === first) continue;
      if (tried !== null && tried.has(peer)) continue;
      if (!peer.canTakeNew(now)) continue;
      if (first === null) {
        first = peer;
        continue;
      }
      return peer.active * first.state.weight > first.active * peer.state.weight ? first : peer;
    }
    // Fewer than two usable draws in 21: smooth weighted round robin, as nginx falls back.
    return this.fallback.pick(peers, tried, request, now);
  }
}
