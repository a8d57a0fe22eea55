/** Maps the config's `balance` to a policy instance (one per peer list). */
import type { BalanceConfig } from '../config/load.js';
import type { Peer } from './peer.js';
import type { Policy } from './policy.js';
import { RoundRobin } from './round-robin.js';

export function createPolicy(balance: BalanceConfig, _peers: readonly Peer[]): Policy {
  switch (balance.kind) {
    case 'round_robin':
      return new RoundRobin();
  }
}
