/**
 * Maps the config's `balance` to a policy instance (one per peer list; Upstream makes one
 * for its primary and one for its backup servers, and makes new ones on every reload,
 * so per-config work such as the consistent-hash ring happens here, once).
 */
import type { BalanceConfig } from '../config/model.js';
import type { Peer } from './peer.js';
import type { Policy } from './policy.js';
import { RoundRobin } from './round-robin.js';
import { LeastConn } from './least-conn.js';
import { IpHash } from './ip-hash.js';
import { ConsistentHash, HashModulo } from './hash.js';
import { RandomPolicy } from './random.js';

export function createPolicy(balance: BalanceConfig, peers: readonly Peer[]): Policy {
  switch (balance.kind) {
    case 'round_robin':
      return new RoundRobin();
    case 'least_conn':
      return new LeastConn();
    case 'ip_hash':
      return new IpHash();
    case 'hash':
      return balance.consistent ? new ConsistentHash(peers, balance.key) : new HashModulo(balance.key);
    case 'random':
      return new RandomPolicy(balance.two);
  }
}
