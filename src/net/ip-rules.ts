/**
 * nginx `allow` / `deny` lists: an ordered list of address rules compiled once per config, and
 * the per-request lookup, which parses the client's address text into preallocated words and
 * walks the rules (no allocation). As nginx (ngx_http_access_module): an IPv4 client (an
 * IPv4-mapped IPv6 one included, socketClientAddress unwraps it) is matched against the IPv4
 * rules and `all`, an IPv6 client against the IPv6 rules and `all`; the first match decides; no
 * match allows.
 */
import { isIP } from 'node:net';

/** One compiled rule. `family` 0: `all`. IPv6 networks are four 32-bit words, IPv4 one (words[0]). */
export interface IpRule {
  readonly allow: boolean;
  readonly family: 0 | 4 | 6;
  readonly net: Uint32Array;
  readonly mask: Uint32Array;
  /** As written (for messages). */
  readonly text: string;
}

const V4 = new Uint32Array(1);
const V6 = new Uint32Array(4);
const GROUPS = new Uint16Array(8);

/** Parses dotted IPv4 text[start, end) into a number; -1 when it is not one. */
function parseV4(text: string, start: number, end: number): number {
  let value = 0;
  let part = -1;
  let dots = 0;
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c === 46 /* . */) {
      if (part < 0 || dots === 3) return -1;
      value = value * 256 + part;
      part = -1;
      dots++;
    } else if (c >= 48 && c <= 57) {
      part = part < 0 ? c - 48 : part * 10 + (c - 48);
      if (part > 255) return -1;
    } else {
      return -1;
    }
  }
  if (part < 0 || dots !== 3) return -1;
  return value * 256 + part;
}

/** Parses IPv6 text into V6 (zone id ignored); false when it is not one. */
function parseV6(text: string): boolean {
  let end = text.indexOf('%');
  if (end < 0) end = text.length;
  let n = 0; // groups written
  let gap = -1; // index in GROUPS where "::" was
  let i = 0;
  if (text.charCodeAt(0) === 58) {
    if (text.charCodeAt(1) !== 58) return false;
    gap = 0;
    i = 2;
    if (i === end) { GROUPS.fill(0); V6.fill(0); return true; }
  }
  while (i < end) {
    let j = i;
    let value = 0;
    let digits = 0;
    let dot = false;
    while (j < end) {
      const c = text.charCodeAt(j);
      let d: number;
      if (c >= 48 && c <= 57) d = c - 48;
      else if (c >= 97 && c <= 102) d = c - 87;
      else if (c >= 65 && c <= 70) d = c - 55;
      else if (c === 46) { dot = true; break; }
      else break;
      value = value * 16 + d;
      digits++;
      j++;
    }
    if (dot) {
      // An IPv4 tail: the last 32 bits.
      const v4 = parseV4(text, i, end);
      if (v4 < 0 || n > 6) return false;
      GROUPS[n++] = Math.floor(v4 / 65536);
      GROUPS[n++] = v4 % 65536;
      i = end;
      break;
    }
    if (digits === 0 || digits > 4 || n === 8) return false;
    GROUPS[n++] = value;
    if (j === end) { i = end; break; }
    if (text.charCodeAt(j) !== 58) return false;
    j++;
    if (text.charCodeAt(j) === 58) {
      if (gap >= 0) return false;
      gap = n;
      j++;
      if (j === end) { i = end; break; }
    } else if (j === end) {
      return false;
    }
    i = j;
  }
  if (gap < 0) {
    if (n !== 8) return false;
  } else {
    if (n > 7) return false;
    const move = n - gap;
    for (let k = 0; k < move; k++) GROUPS[7 - k] = GROUPS[n - 1 - k]!;
    for (let k = gap; k < 8 - move; k++) GROUPS[k] = 0;
  }
  for (let k = 0; k < 4; k++) V6[k] = GROUPS[2 * k]! * 65536 + GROUPS[2 * k + 1]!;
  return true;
}

/** Compiles "all", an address or a CIDR; returns an error message for anything else. */
export function compileIpRule(allow: boolean, text: string): IpRule | string {
  if (text === 'all') return { allow, family: 0, net: new Uint32Array(0), mask: new Uint32Array(0), text };
  const [addr, prefixText, extra] = text.split('/');
  const family = isIP(addr ?? '');
  if (!addr || family === 0 || extra !== undefined) return `"${text}" is not "all", an address or a CIDR such as "10.0.0.0/8"`;
  const max = family === 4 ? 32 : 128;
  if (prefixText !== undefined && (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > max)) {
    return `"${text}" has an invalid prefix length (0-${max})`;
  }
  const prefix = prefixText === undefined ? max : Number(prefixText);
  const words = family === 4 ? 1 : 4;
  const net = new Uint32Array(words);
  const mask = new Uint32Array(words);
  if (family === 4) net[0] = parseV4(addr, 0, addr.length);
  else { parseV6(addr); net.set(V6); }
  for (let k = 0; k < words; k++) {
    const bits = Math.max(0, Math.min(32, prefix - 32 * k));
    mask[k] = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
    net[k] = (net[k]! & mask[k]!) >>> 0; // nginx: "low address bits ... are meaningless", masked
  }
  return { allow, family: family === 4 ? 4 : 6, net, mask, text };
}

/**
 * Whether `address` (a client address as socketClientAddress gives it: IPv4-mapped ones
 * unwrapped) is allowed by `rules`: the first rule of its family (or `all`) that matches decides;
 * none matches: allowed. Text that is no address (a Unix socket's) meets only `all`.
 */
export function ipAllowed(rules: readonly IpRule[], address: string): boolean {
  let family: 0 | 4 | 6 = 0;
  if (address.indexOf(':') >= 0) {
    if (parseV6(address)) family = 6;
  } else {
    const v4 = parseV4(address, 0, address.length);
    if (v4 >= 0) { V4[0] = v4; family = 4; }
  }
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i]!;
    if (r.family === 0) return r.allow;
    if (r.family !== family) continue;
    if (family === 4) {
      if (((V4[0]! & r.mask[0]!) >>> 0) === r.net[0]) return r.allow;
    } else if (((V6[0]! & r.mask[0]!) >>> 0) === r.net[0] && ((V6[1]! & r.mask[1]!) >>> 0) === r.net[1]
      && ((V6[2]! & r.mask[2]!) >>> 0) === r.net[2] && ((V6[3]! & r.mask[3]!) >>> 0) === r.net[3]) {
      return r.allow;
    }
  }
  return true;
}
