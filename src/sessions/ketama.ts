/**
 * Ketama consistent hashing (libketama, as twemproxy and most memcached clients do
 * it): every node gets 160 points per unit of weight on a 32-bit ring, each point
 * from 4 bytes of md5("<name>-<i>"); a key goes to the first point at or after
 * md5(key). Adding or removing one node moves only the keys of that node. The ring
 * depends only on the node names and weights, not on their order, so every
 * sessionlb instance with the same list agrees on where a key lives.
 */
import { createHash } from 'node:crypto';

const POINTS_PER_WEIGHT = 160;

export function ketamaHash(key: string): number {
  const d = createHash('md5').update(key).digest();
  return d.readUInt32LE(0);
}

export class KetamaRing<T> {
  private readonly points: Uint32Array;
  private readonly owners: Int32Array;

  constructor(readonly nodes: readonly T[], name: (node: T) => string, weight: (node: T) => number = () => 1) {
    const pairs: Array<[number, number]> = [];
    nodes.forEach((node, index) => {
      const n = name(node);
      const iterations = Math.max(1, Math.round((POINTS_PER_WEIGHT * Math.max(1, weight(node))) / 4));
      for (let i = 0; i < iterations; i++) {
        const d = createHash('md5').update(`${n}-${i}`).digest();
        for (let k = 0; k < 4; k++) pairs.push([d.readUInt32LE(k * 4), index]);
      }
    });
    // Ties (vanishingly rare) are broken by node name so that every instance builds the same ring.
    pairs.sort((a, b) => a[0] - b[0] || (name(nodes[a[1]]!) < name(nodes[b[1]]!) ? -1 : 1));
    this.points = new Uint32Array(pairs.length);
    this.owners = new Int32Array(pairs.length);
    pairs.forEach(([p, o], i) => { this.points[i] = p; this.owners[i] = o; });
  }

  private position(hash: number): number {
    const points = this.points;
    let lo = 0;
    let hi = points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (points[mid]! < hash) lo = mid + 1;
      else hi = mid;
    }
    return lo === points.length ? 0 : lo;
  }

  /** The node owning `key`, or undefined for an empty ring. */
  get(key: string): T | undefined {
    if (this.points.length === 0) return undefined;
    return this.nodes[this.owners[this.position(ketamaHash(key))]!];
  }
}
