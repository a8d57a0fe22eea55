/**
 * A consistent-hash ring (ketama): 32-bit points in ascending order, each owned by a node; a
 * key goes to the first point at or after its hash, wrapping around. Two rings use it, with
 * their own point hashes: nginx's `hash ... consistent` (crc32, balancer/hash.ts) and the
 * memcached client's (md5, as libketama, sessions/ketama.ts).
 */

/** libketama's points per unit of weight (nginx and the memcached clients use the same). */
export const POINTS_PER_WEIGHT = 160;

export class HashRing {
  private constructor(
    /** Point hashes, ascending. */
    readonly points: Uint32Array,
    /** For each point, the index of the node owning it. */
    readonly owners: Uint32Array,
  ) {}

  /**
   * A ring from parallel lists of point hashes and owner indexes. Equal points are ordered by
   * `tie(ownerA, ownerB)`; with `unique` only the first of them is kept (nginx drops duplicates,
   * libketama keeps them).
   */
  static from(hashes: readonly number[], owners: readonly number[], tie: (a: number, b: number) => number, unique: boolean): HashRing {
    const order = hashes.map((_, i) => i).sort((a, b) => hashes[a]! - hashes[b]! || tie(owners[a]!, owners[b]!) || a - b);
    const pts: number[] = [];
    const own: number[] = [];
    for (const i of order) {
      if (unique && pts.length > 0 && pts[pts.length - 1] === hashes[i]) continue;
      pts.push(hashes[i]!);
      own.push(owners[i]!);
    }
    return new HashRing(Uint32Array.from(pts), Uint32Array.from(own));
  }

  static readonly EMPTY = new HashRing(new Uint32Array(0), new Uint32Array(0));

  /** Index of the first point >= `hash`, wrapping to 0 past the last one (the ring must not be empty). */
  at(hash: number): number {
    const pts = this.points;
    let lo = 0;
    let hi = pts.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (pts[mid]! < hash) lo = mid + 1;
      else hi = mid;
    }
    return lo === pts.length ? 0 : lo;
  }
}
