/**
 * nginx's ip_hash (ngx_http_upstream_ip_hash_module). The key is the first three octets
 * of a client's IPv4 address (so a whole /24 goes to one server) or all 16 bytes of an
 * IPv6 address. Starting from 89, each byte folds in as hash = (hash * 113 + byte) % 6271;
 * hash % total weight walks the weighted server list. When that server is down, failed,
 * tried, or full, the fold runs again over the same bytes (continuing from the last
 * hash): up to 20 times, then smooth weighted round robin. Because the server list
 * and weights do not change when a server becomes unavailable, only that server's
 * clients move.
 */
import type { Peer } from './peer.js';
import type { Policy, PickRequest } from './policy.js';
import { RoundRobin } from './round-robin.js';
import { peerAtWeight, totalWeight } from './weights.js';

const MAX_TRIES = 20;

/** Scratch space for the key bytes (one request at a time: JS is single-threaded). */
const KEY = new Uint8Array(16);

/**
 * Writes nginx's ip_hash key bytes for `address` into KEY and returns how many there are:
 * 3 for IPv4 (IPv4-mapped IPv6 counts as IPv4), 16 for IPv6, and 3 zero bytes for anything
 * else (nginx's pseudo address for unix sockets).
 */
export function ipHashKey(address: string, out: Uint8Array = KEY): number {
  let s = address;
  if (s.startsWith('::ffff:') && s.indexOf('.') !== -1) s = s.slice(7);
  if (s.indexOf(':') === -1) {
    if (parseIPv4Prefix(s, out)) return 3;
  } else if (parseIPv6(s, out)) {
    return 16;
  }
  out[0] = 0; out[1] = 0; out[2] = 0;
  return 3;
}

function parseIPv4Prefix(s: string, out: Uint8Array): boolean {
  let octet = 0;
  let value = 0;
  let digits = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46 /* . */) {
      if (digits === 0 || octet >= 3) return false;
      out[octet++] = value;
      value = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      value = value * 10 + (c - 48);
      if (++digits > 3 || value > 255) return false;
    } else {
      return false;
    }
  }
  return octet === 3 && digits > 0;
}

function parseIPv6(text: string, out: Uint8Array): boolean {
  let s = text;
  const zone = s.indexOf('%');
  if (zone !== -1) s = s.slice(0, zone);
  const halves = s.split('::');
  if (halves.length > 2) return false;
  const groups: number[] = [];
  if (!parseGroups(halves[0]!, groups)) return false;
  if (halves.length === 2) {
    const gap = groups.length;
    if (!parseGroups(halves[1]!, groups) || groups.length > 7) return false;
    groups.splice(gap, 0, ...new Array<number>(8 - groups.length).fill(0));
  }
  if (groups.length !== 8) return false;
  for (let g = 0; g < 8; g++) {
    out[g * 2] = groups[g]! >> 8;
    out[g * 2 + 1] = groups[g]! & 0xff;
  }
  return true;
}

/** Parses "a:b:c" (the last item may be a dotted IPv4) into 16-bit groups. */
function parseGroups(part: string, groups: number[]): boolean {
  if (part === '') return true;
  const items = part.split(':');
  for (let k = 0; k < items.length; k++) {
    const item = items[k]!;
    if (k === items.length - 1 && item.indexOf('.') !== -1) {
      const v4 = item.split('.');
      if (v4.length !== 4) return false;
      const b: number[] = [];
      for (const x of v4) {
        if (!/^\d{1,3}$/.test(x) || Number(x) > 255) return false;
        b.push(Number(x));
      }
      groups.push((b[0]! << 8) | b[1]!, (b[2]! << 8) | b[3]!);
    } else {
      if (!/^[0-9a-fA-F]{1,4}$/.test(item)) return false;
      groups.push(parseInt(item, 16));
    }
  }
  return true;
}

export class IpHash implements Policy {
  private readonly fallback = new RoundRobin();

  pick(peers: readonly Peer[], tried: ReadonlySet<Peer> | null, request: PickRequest, now: number): Peer | null {
    if (peers.length < 2) return this.fallback.pick(peers, tried, request, now);
    const total = totalWeight(peers);
    const len = ipHashKey(request.remoteAddress);
    let hash = 89;
    for (let tries = 0; tries <= MAX_TRIES; tries++) {
      for (let i = 0; i < len; i++) hash = (hash * 113 + KEY[i]!) % 6271;
      const peer = peerAtWeight(peers, hash % total);
      if ((tried === null || !tried.has(peer)) && peer.canTakeNew(now)) return peer;
    }
    return this.fallback.pick(peers, tried, request, now);
  }
}
