/**
 * nginx's `hash KEY` and `hash KEY consistent` (ngx_http_upstream_hash_module).
 *
 * Modulo (`{"hash": KEY}`): Cache::Memcached's scheme, as nginx does it. Each round adds
 * ((crc32([round] KEY) >> 16) & 0x7fff) to a running sum (the round number prefix is
 * omitted in round 0); sum % total weight walks the weighted server list. An unavailable
 * or already tried server makes another round; after 20, smooth weighted round robin.
 *
 * Consistent (`{"hash": KEY, "consistent": true}`): a ketama ring built once per config,
 * 160 points per unit of weight. A server's points are crc32(HOST "\0" PORT PREV), PREV
 * being the previous point's hash as 4 little-endian bytes (0 for the first), the scheme
 * of Cache::Memcached::Fast and nginx, so keys land on the same servers as with nginx.
 * A key goes to the first point >= crc32(KEY) (wrapping around); when that point's server
 * cannot take it, the next point is tried (up to 20, then round robin). Peers sharing one
 * configured address (a hostname resolving to several IPs) share its points, and smooth
 * weighted round robin chooses among them, as nginx does. A weight changed through the
 * admin API rebuilds the ring on the next pick (nginx Plus rebuilds it on API changes too).
 */
import type { CompiledTemplate } from '../nginx-language/variables.js';
import type { Peer } from './peer.js';
import type { Policy, PickRequest } from './policy.js';
import { RoundRobin } from './round-robin.js';
import { peerAtWeight, totalWeight } from './weights.js';
import { HashRing, POINTS_PER_WEIGHT } from './hash-ring.js';

const MAX_TRIES = 20;

// ---- CRC-32 (IEEE 802.3, reflected, as ngx_crc32_*) over byte strings ----

const CRC_TABLE = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
})();

export const CRC32_INIT = 0xffffffff;

/** Feeds a byte string (every char one byte) into a running CRC-32 (start with CRC32_INIT). */
export function crc32Update(crc: number, bytes: string): number {
  let c = crc;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes.charCodeAt(i)) & 0xff]! ^ (c >>> 8);
  return c;
}

/** Feeds the 4 little-endian bytes of a 32-bit value. */
function crc32UpdateU32LE(crc: number, v: number): number {
  let c = crc;
  c = CRC_TABLE[(c ^ v) & 0xff]! ^ (c >>> 8);
  c = CRC_TABLE[(c ^ (v >>> 8)) & 0xff]! ^ (c >>> 8);
  c = CRC_TABLE[(c ^ (v >>> 16)) & 0xff]! ^ (c >>> 8);
  c = CRC_TABLE[(c ^ (v >>> 24)) & 0xff]! ^ (c >>> 8);
  return c;
}

export function crc32Final(crc: number): number {
  return (crc ^ 0xffffffff) >>> 0;
}

/** CRC-32 of a byte string, as an unsigned 32-bit number. */
export function crc32(bytes: string): number {
  return crc32Final(crc32Update(CRC32_INIT, bytes));
}

// ---- modulo hash ----

export class HashModulo implements Policy {
  private readonly fallback = new RoundRobin();

  constructor(private readonly key: CompiledTemplate) {}

  pick(peers: readonly Peer[], tried: ReadonlySet<Peer> | null, request: PickRequest, now: number): Peer | null {
    if (peers.length < 2) return this.fallback.pick(peers, tried, request, now);
    const total = totalWeight(peers);
    const key = this.key.evaluate(request);
    let sum = 0;
    for (let round = 0; round <= MAX_TRIES; round++) {
      const crc = round === 0
        ? crc32Update(CRC32_INIT, key)
        : crc32Update(crc32Update(CRC32_INIT, String(round)), key);
      sum = (sum + ((crc32Final(crc) >>> 16) & 0x7fff)) >>> 0;
      const peer = peerAtWeight(peers, sum % total);
      if ((tried === null || !tried.has(peer)) && peer.canTakeNew(now)) return peer;
    }
    return this.fallback.pick(peers, tried, request, now);
  }
}

// ---- consistent hash (ketama) ----

/** nginx splits a server address into host and port at the last ":" followed only by digits. */
export function splitServer(server: string): { host: string; port: string } {
  for (let j = server.length - 1; j >= 0; j--) {
    const c = server.charCodeAt(j);
    if (c === 58 /* : */) return { host: server.slice(0, j), port: server.slice(j + 1) };
    if (c < 48 || c > 57) break;
  }
  return { host: server, port: '' };
}

/** The configured address a peer came from (a resolved hostname's peers are named "name:port#ip:port"). */
function serverOf(peer: Peer): string {
  const hash = peer.address.indexOf('#');
  return hash === -1 ? peer.address : peer.address.slice(0, hash);
}

export class ConsistentHash implements Policy {
  /** The ring: points ascending and unique, each owned by an index into `groups`. */
  private ring = HashRing.EMPTY;
  /** Peers per configured server address, in config order. */
  private groups: Peer[][] = [];
  /** The weights the ring was built with (a weight changed through the admin API rebuilds it). */
  private weights: Float64Array;
  private readonly fallback = new RoundRobin();

  constructor(private readonly peers: readonly Peer[], private readonly key: CompiledTemplate) {
    this.weights = new Float64Array(peers.length);
    this.build();
  }

  private build(): void {
    const groupIndex = new Map<string, number>();
    const groups: Peer[][] = [];
    const hashes: number[] = [];
    const owners: number[] = [];
    this.peers.forEach((peer, index) => {
      this.weights[index] = peer.state.weight;
      const server = serverOf(peer);
      let g = groupIndex.get(server);
      if (g !== undefined) {
        groups[g]!.push(peer);
      } else {
        g = groups.length;
        groupIndex.set(server, g);
        groups.push([peer]);
      }
      // Like nginx, every peer adds its points (a hostname's addresses add the same values; duplicates go below).
      const { host, port } = splitServer(server);
      const base = crc32Update(crc32Update(crc32Update(CRC32_INIT, Buffer.from(host, 'utf8').toString('latin1')), '\0'), port);
      let prev = 0;
      const n = peer.state.weight * POINTS_PER_WEIGHT;
      for (let j = 0; j < n; j++) {
        const h = crc32Final(crc32UpdateU32LE(base, prev));
        hashes.push(h);
        owners.push(g);
        prev = h;
      }
    });
    this.groups = groups;
    this.ring = HashRing.from(hashes, owners, () => 0, true);
  }

  /** The ring has no points (no server has weight). */
  get empty(): boolean {
    return this.ring.points.length === 0;
  }

  /** The configured server address a key (a byte string) maps to when every server is available. */
  serverFor(key: string): string {
    const g = this.ring.owners[this.ring.at(crc32(key))]!;
    return serverOf(this.groups[g]![0]!);
  }

  pick(peers: readonly Peer[], tried: ReadonlySet<Peer> | null, request: PickRequest, now: number): Peer | null {
    const ws = this.weights;
    for (let i = 0; i < ws.length; i++) {
      if (this.peers[i]!.state.weight !== ws[i]) {
        this.build();
        break;
      }
    }
    const ring = this.ring;
    if (peers.length < 2 || ring.points.length === 0) return this.fallback.pick(peers, tried, request, now);
    const n = ring.points.length;
    let at = ring.at(crc32(this.key.evaluate(request)));
    for (let tries = 0; tries <= MAX_TRIES; tries++, at++) {
      const group = this.groups[ring.owners[at % n]!]!;
      if (group.length === 1) {
        const peer = group[0]!;
        if ((tried === null || !tried.has(peer)) && peer.canTakeNew(now)) return peer;
        continue;
      }
      // Several addresses of one hostname share a point: nginx picks among them by weighted round robin.
      const best = this.fallback.pick(group, tried, request, now);
      if (best !== null) return best;
    }
    return this.fallback.pick(peers, tried, request, now);
  }
}
