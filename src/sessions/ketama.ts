/**
 * Ketama consistent hashing (libketama, as twemproxy and most memcached clients do
 * it): every node gets 160 points per unit of weight on a 32-bit ring, each point
 * from 4 bytes of md5("<name>-<i>"); a key goes to the first point at or after
 * md5(key). Adding or removing one node moves only the keys of that node. The ring
 * depends only on the node names and weights, not on their order, so every
 * sessionlb instance with the same list agrees on where a key lives.
 */
import { createHash } from 'node:crypto';
import { HashRing, POINTS_PER_WEIGHT } from '../balancer/hash-ring.js';

export function ketamaHash(key: string): number {
  const d = createHash('md5').update(key).digest();
  return d.readUInt32LE(0);
}

export class KetamaRing<T> {
  private readonly ring: HashRing;

  constructor(readonly nodes: readonly T[], name: (node: T) => string, weight: (node: T) => number = () => 1) {
    const hashes: number[] = [];
    const owners: number[] = [];
    nodes.forEach((node, index) => {
      const n = name(node);
      const iterations = Math.max(1, Math.round((POINTS_PER_WEIGHT * Math.max(1, weight(node))) / 4));
      for (let i = 0; i < iterations; i++) {
        const d = createHash('md5').update(`${n}-${i}`).digest();
        for (let k = 0; k < 4; k++) {
          hashes.push(d.readUInt32LE(k * 4));
          owners.push(index);
        }
      }
    });
    // Ties (vanishingly rare) are broken by node name so that every instance builds the same ring.
    const names = nodes.map(name);
    this.ring = HashRing.from(hashes, owners, (a, b) => (names[a]! < names[b]! ? -1 : names[a]! > names[b]! ? 1 : 0), false);
  }

  /** The node owning `key`, or undefined for an empty ring. */
  get(key: string): T | undefined {
    if (this.ring.points.length === 0) return undefined;
    return this.nodes[this.ring.owners[this.ring.at(ketamaHash(key))]!];
  }
}
