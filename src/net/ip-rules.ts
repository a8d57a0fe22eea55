/**
 * nginx `allow` / `deny` lists: an ordered list of address rules compiled once per config, and
 * the per-request lookup, which parses the client's address text into preallocated words and
 * walks the rules (no allocation). As nginx (ngx_http_access_module): an IPv4 client (an
 * IPv4-mapped IPv6 one included, socketClientAddress unwraps it) is matched against the IPv4
 * rules and `all`, an IPv6 client against the IPv6 rules and `all`; the first match decides; no
 * match allows.
 */
import { parseV4, parseV6 } from '../nginx-language/ip-address.js';
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
  else { parseV6(addr, V6); net.set(V6); }
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
    if (parseV6(address, V6)) family = 6;
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
