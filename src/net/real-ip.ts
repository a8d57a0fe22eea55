/**
 * The real client address of a request (nginx ngx_http_realip_module: set_real_ip_from,
 * real_ip_header, real_ip_recursive): when the connection's address (after a PROXY header, if
 * any) is trusted (`from`), the address a header names becomes the request's client address
 * (`requestClientAddress`), walked as nginx's ngx_http_get_forwarded_addr walks it: from the
 * right; without `recursive` the last address; with it, trusted addresses are skipped and the
 * first untrusted one (or the leftmost) is taken. Several X-Forwarded-For headers are walked
 * from the last one back. An address that does not parse keeps the last good one (the
 * connection's when it is the first). Addresses parse and print as nginx's (ngx_inet_addr,
 * ngx_inet6_addr, ngx_parse_addr_port, ngx_sock_ntop), so `$remote_addr` reads the same.
 * With "proxy_protocol", the PROXY header's source is the client only when the TCP peer is trusted.
 */
import { clientAddressString, proxiedClient, setRequestClient, socketClientAddress } from './client-address.js';

/** A parsed address: 4 or 16 bytes. */
type Bytes = Uint8Array;

/** nginx ngx_inet_addr: dotted quad, decimal octets up to 255 (leading zeros and an empty octet allowed, as nginx). */
function inetAddr(s: string, start: number, end: number, out: Bytes, at: number): boolean {
  let octet = 0;
  let n = 0;
  let addr = 0;
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      octet = octet * 10 + (c - 48);
      if (octet > 255) return false;
      continue;
    }
    if (c === 46 /* . */) {
      addr = addr * 256 + octet;
      octet = 0;
      n++;
      if (n > 3) return false;
      continue;
    }
    return false;
  }
  if (n !== 3) return false;
  addr = addr * 256 + octet;
  out[at] = (addr >>> 24) & 0xff;
  out[at + 1] = (addr >>> 16) & 0xff;
  out[at + 2] = (addr >>> 8) & 0xff;
  out[at + 3] = addr & 0xff;
  return true;
}

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  const l = c | 0x20;
  if (l >= 97 && l <= 102) return l - 87;
  return -1;
}

/** nginx ngx_inet6_addr, into 16 bytes. */
function inet6Addr(s: string, start: number, end: number, out: Bytes): boolean {
  let p = start;
  if (p >= end) return false;
  let zero = -1;
  let digit = -1;
  let nibbles = 0;
  let word = 0;
  let n = 8;
  let a = 0;
  if (s.charCodeAt(p) === 58 /* : */) p++;
  for (; p < end;) {
    const c = s.charCodeAt(p++);
    if (c === 58) {
      if (nibbles !== 0) {
        digit = p;
        out[a++] = word >> 8;
        out[a++] = word & 0xff;
        if (--n !== 0) {
          nibbles = 0;
          word = 0;
          continue;
        }
      } else if (zero === -1) {
        digit = p;
        zero = a;
        continue;
      }
      return false;
    }
    if (c === 46 /* . */ && nibbles !== 0) {
      if (n < 2 || digit === -1) return false;
      if (!inetAddr(s, digit, end, out, a)) return false;
      a += 2; // the last two bytes are written below from `word`
      word = (out[a]! << 8) | out[a + 1]!;
      n--;
      nibbles = 1;
      break;
    }
    if (++nibbles > 4) return false;
    const v = hexValue(c);
    if (v < 0) return false;
    word = word * 16 + v;
  }
  if (nibbles === 0 && zero === -1) return false;
  out[a++] = word >> 8;
  out[a++] = word & 0xff;
  if (--n !== 0) {
    if (zero !== -1) {
      const shift = n * 2;
      for (let k = a - 1; k >= zero; k--) out[k + shift] = out[k]!;
      out.fill(0, zero, zero + shift);
      return true;
    }
    return false;
  }
  return zero === -1;
}

/** nginx ngx_parse_addr: IPv4 (4 bytes) or IPv6 (16 bytes), or null. */
export function parseAddr(s: string, start = 0, end = s.length): Bytes | null {
  const v4 = new Uint8Array(4);
  if (inetAddr(s, start, end, v4, 0)) return v4;
  const v6 = new Uint8Array(16);
  return inet6Addr(s, start, end, v6) ? v6 : null;
}

/** nginx ngx_parse_addr_port: an address, "1.2.3.4:80", "[::1]", "[::1]:80" (the port is checked, then dropped). */
export function parseAddrPort(s: string, start = 0, end = s.length): Bytes | null {
  const plain = parseAddr(s, start, end);
  if (plain !== null) return plain;
  let text = start;
  let len = end - start;
  let colon: number;
  if (len > 0 && s.charCodeAt(start) === 91 /* [ */) {
    const close = s.indexOf(']', start);
    if (close === -1 || close >= end) return null;
    if (close === end - 1) return parseAddr(s, start + 1, end - 1);
    if (s.charCodeAt(close + 1) !== 58) return null;
    colon = close + 1;
    text++;
    len -= 2;
  } else {
    colon = s.indexOf(':', start);
    if (colon === -1 || colon >= end) return null;
  }
  const portText = s.slice(colon + 1, end);
  if (!/^\d+$/.test(portText)) return null;
  const port = Number(portText);
  if (port < 1 || port > 65535) return null;
  len -= portText.length + 1;
  return parseAddr(s, text, text + len);
}

/** nginx ngx_sock_ntop without a port: dotted IPv4, ngx_inet6_ntop's IPv6. */
export function formatAddr(b: Bytes): string {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  let zero = -1;
  let last = -1;
  let max = 1;
  let n = 0;
  for (let i = 0; i < 16; i += 2) {
    if (b[i] !== 0 || b[i + 1] !== 0) {
      if (max < n) { zero = last; max = n; }
      n = 0;
      continue;
    }
    if (n++ === 0) last = i;
  }
  if (max < n) { zero = last; max = n; }
  let out = '';
  let end = 16;
  if (zero === 0) {
    if ((max === 5 && b[10] === 0xff && b[11] === 0xff) || max === 6 || (max === 7 && b[14] !== 0 && b[15] !== 1)) end = 12;
    out += ':';
  }
  for (let i = 0; i < end; i += 2) {
    if (i === zero) {
      out += ':';
      i += (max - 1) * 2;
      continue;
    }
    out += ((b[i]! << 8) | b[i + 1]!).toString(16);
    if (i < 14) out += ':';
  }
  if (end === 12) out += `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  return out;
}

/** One `from` entry: address bytes and mask bytes of the same family. */
interface Cidr { readonly addr: Bytes; readonly mask: Bytes }

function parseCidr(text: string): Cidr | null {
  const slash = text.indexOf('/');
  const addr = parseAddr(text, 0, slash === -1 ? text.length : slash);
  if (addr === null) return null;
  const bits = addr.length * 8;
  const prefix = slash === -1 ? bits : Number(text.slice(slash + 1));
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > bits) return null;
  const mask = new Uint8Array(addr.length);
  for (let i = 0; i < addr.length; i++) {
    const left = prefix - i * 8;
    mask[i] = left >= 8 ? 0xff : left <= 0 ? 0 : (0xff << (8 - left)) & 0xff;
    addr[i] = addr[i]! & mask[i]!;
  }
  return { addr, mask };
}

/** nginx ngx_cidr_match: an IPv4-mapped IPv6 address is matched as the IPv4 address it maps. */
function cidrMatch(a: Bytes, cidrs: readonly Cidr[]): boolean {
  let b = a;
  if (b.length === 16 && b[10] === 0xff && b[11] === 0xff && b.subarray(0, 10).every((x) => x === 0)) b = b.subarray(12);
  for (const c of cidrs) {
    if (c.addr.length !== b.length) continue;
    let ok = true;
    for (let i = 0; i < b.length; i++) {
      if ((b[i]! & c.mask[i]!) !== c.addr[i]) { ok = false; break; }
    }
    if (ok) return true;
  }
  return false;
}

/** The `realIp` settings a virtual server resolved (nearest of server, top level). */
export interface RealIpSettings {
  readonly from: readonly string[];
  /** "X-Forwarded-For", "X-Real-IP", "proxy_protocol" or another header's name. */
  readonly header: string;
  readonly recursive: boolean;
}

/** What the walk of one header value ended with (nginx NGX_OK / NGX_DONE / NGX_DECLINED). */
const OK = 0;
const DONE = 1;
const DECLINED = 2;

/** realIp of one virtual server, built once per config. */
export class RealIp {
  private readonly from: Cidr[];
  /** 'xff', 'proxy', or the lower-case header name (x-real-ip or another). */
  private readonly kind: 'xff' | 'proxy' | 'header';
  private readonly headerLower: string;
  private readonly recursive: boolean;
  /** The walk's current address (one request at a time). */
  private addr: Bytes = new Uint8Array(4);

  constructor(settings: RealIpSettings) {
    this.from = [];
    for (const c of settings.from) {
      const cidr = parseCidr(c);
      if (cidr !== null) this.from.push(cidr);
    }
    const lower = settings.header.toLowerCase();
    this.kind = lower === 'x-forwarded-for' ? 'xff' : settings.header === 'proxy_protocol' ? 'proxy' : 'header';
    this.headerLower = lower;
    this.recursive = settings.recursive;
  }

  /** Whether `address` (text, possibly IPv4-mapped) is in `from`. */
  trusts(address: string): boolean {
    const a = parseAddr(address);
    return a !== null && cidrMatch(a, this.from);
  }

  /**
   * Records on `req` its client address (requestClientAddress) and whether its peer is trusted
   * (requestPeerTrusted): once per request, before anything reads them.
   */
  apply(req: { readonly socket: object | null; readonly rawHeaders: readonly string[] }): void {
    const socket = (req.socket ?? {}) as { readonly remoteAddress?: string };
    let connection: string;
    let value: string | null = null;
    let values: string[] | null = null;
    if (this.kind === 'proxy') {
      connection = clientAddressString(socket.remoteAddress);
      const p = proxiedClient(socket);
      if (p !== undefined) value = p.address;
    } else {
      connection = socketClientAddress(socket);
      const raw = req.rawHeaders;
      for (let i = 0; i < raw.length; i += 2) {
        const name = raw[i]!;
        if (name.length !== this.headerLower.length || name.toLowerCase() !== this.headerLower) continue;
        if (this.kind === 'xff') (values ??= []).push(raw[i + 1]!);
        else { value = raw[i + 1]!; break; }
      }
    }
    const conn = parseAddr(connection);
    const trusted = conn !== null && cidrMatch(conn, this.from);
    let address = connection;
    if (trusted && conn !== null && (value !== null || values !== null)) {
      this.addr = conn;
      const rc = values !== null ? this.walkHeaders(values) : this.walk(value!);
      if (rc !== DECLINED) address = formatAddr(this.addr);
    }
    setRequestClient(req, address, trusted);
  }

  /** nginx ngx_http_get_forwarded_addr over several headers: the last one first. */
  private walkHeaders(values: readonly string[]): number {
    let rc = DECLINED;
    let found = false;
    for (let h = values.length - 1; h >= 0; h--) {
      rc = this.walk(values[h]!);
      if (!this.recursive) break;
      if (rc === DECLINED && found) return DONE;
      if (rc !== OK) break;
      found = true;
    }
    return rc;
  }

  /** nginx ngx_http_get_forwarded_addr_internal over one value, from `this.addr`. */
  private walk(xff: string): number {
    let found = false;
    let len = xff.length;
    let p: number;
    do {
      if (!cidrMatch(this.addr, this.from)) return found ? DONE : DECLINED;
      for (p = len - 1; p > 0; p--, len--) {
        const c = xff.charCodeAt(p);
        if (c !== 32 && c !== 44) break;
      }
      for (; p > 0; p--) {
        const c = xff.charCodeAt(p);
        if (c === 32 || c === 44) { p++; break; }
      }
      if (p < 0) p = 0;
      const a = p < len ? parseAddrPort(xff, p, len) : null;
      if (a === null) return found ? DONE : DECLINED;
      this.addr = a;
      found = true;
      len = p - 1;
    } while (this.recursive && p > 0);
    return OK;
  }
}
