/**
 * nginx's smooth weighted round robin (ngx_http_upstream_get_peer): every eligible
 * peer gains its effective weight, the largest current weight wins and gives back the
 * total. Weights 5,1,1 give a a b a c a a. A peer whose effective weight was lowered
 * by a failure regains one unit per pick until it is back to its weight.
 */
import type { Peer } from './peer.js';
import type { Policy } from './policy.js';

export class RoundRobin implements Policy {
  pick(peers: readonly Peer[], tried: ReadonlySet<Peer> | null, _request: unknown, now: number): Peer | null {
    let best: Peer | null = null;
    let total = 0;
    for (let i = 0; i < peers.length; i++) {
      const peer = peers[i]!;
      if (tried !== null && tried.has(peer)) continue;
      if (!peer.canTakeNew(now)) continue;
      // Slow start caps the effective weight while a server ramps up after coming back.
      const max = peer.currentMaxWeight(now);
      const weight = peer.state.effectiveWeight < max ? peer.state.effectiveWeight : max;
      peer.state.currentWeight += weight;
      total += weight;
      if (peer.state.effectiveWeight < peer.state.weight) peer.state.effectiveWeight++;
      if (best === null || peer.state.currentWeight > best.state.currentWeight) best = peer;
    }
    if (best === null) return null;
    best.state.currentWeight -= total;
    return best;
  }
}
