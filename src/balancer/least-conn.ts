/**
 * nginx's least_conn (ngx_http_upstream_least_conn_module): the peer with the fewest
 * active requests relative to its weight wins (a.active * b.weight < b.active * a.weight);
 * when several peers tie, smooth weighted round robin chooses among the tied ones only.
 * The weight is the one in use now (slow start ramps it up after a server comes back).
 */
import type { Peer } from './peer.js';
import type { Policy } from './policy.js';

export class LeastConn implements Policy {
  pick(peers: readonly Peer[], tried: ReadonlySet<Peer> | null, _request: unknown, now: number): Peer | null {
    let best: Peer | null = null;
    let bestWeight = 0;
    let bestIndex = 0;
    let many = false;
    for (let i = 0; i < peers.length; i++) {
      const peer = peers[i]!;
      if (tried !== null && tried.has(peer)) continue;
      if (!peer.canTakeNew(now)) continue;
      const weight = peer.currentMaxWeight(now);
      if (best === null) {
        best = peer;
        bestWeight = weight;
        bestIndex = i;
        many = false;
        continue;
      }
      const lhs = peer.active * bestWeight;
      const rhs = best.active * weight;
      if (lhs < rhs) {
        best = peer;
        bestWeight = weight;
        bestIndex = i;
        many = false;
      } else if (lhs === rhs) {
        many = true;
      }
    }
    if (best === null) return null;
    if (!many) return best;

    // Smooth weighted round robin among the peers tied with `best` (all at or after its index).
    const first = best;
    const firstWeight = bestWeight;
    let total = 0;
    for (let i = bestIndex; i < peers.length; i++) {
      const peer = peers[i]!;
      if (tried !== null && tried.has(peer)) continue;
      if (!peer.canTakeNew(now)) continue;
      const max = peer.currentMaxWeight(now);
      if (peer.active * firstWeight !== first.active * max) continue;
      const weight = peer.state.effectiveWeight < max ? peer.state.effectiveWeight : max;
      peer.state.currentWeight += weight;
      total += weight;
      if (peer.state.effectiveWeight < peer.state.weight) peer.state.effectiveWeight++;
      if (peer.state.currentWeight > best.state.currentWeight) best = peer;
    }
    best.state.currentWeight -= total;
    return best;
  }
}
