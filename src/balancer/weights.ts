/**
 * Weighted positions, as nginx's hash, ip_hash and random policies walk them: a number in
 * [0, total weight) names the peer whose share of the weight line it falls in. Weights are
 * read on every pick (the admin API may change them at runtime); upstreams are small.
 */
import type { Peer } from './peer.js';

export function totalWeight(peers: readonly Peer[]): number {
  let total = 0;
  for (let i = 0; i < peers.length; i++) total += peers[i]!.state.weight;
  return total;
}

/** The peer at position `w` (0 <= w < totalWeight) of the weight line. */
export function peerAtWeight(peers: readonly Peer[], w: number): Peer {
  let i = 0;
  while (i < peers.length - 1 && w >= peers[i]!.state.weight) w -= peers[i++]!.state.weight;
  return peers[i]!;
}
