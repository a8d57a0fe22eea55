/**
 * The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): a header a proxy puts in
 * front of a TCP connection to tell the next hop the client's address. Pure codec, no sockets:
 *
 * - `parseProxyHeader(buf)`: incremental and never throwing. `null` while `buf` is a prefix of a
 *   header that may still turn out valid (call again with more bytes), else the header and how
 *   many bytes it took, or a bounded failure reason. Every prefix of a valid header gives null or
 *   the same result (the tests check it), so a caller can feed it each time bytes arrive.
 *   v1: one line of at most 107 bytes ending in CRLF, strict syntax (single spaces, no leading
 *   zeros, ports 0-65535, addresses of the announced family); `UNKNOWN` ignores the rest of the
 *   line. v2: the 12-byte signature, version 2, command LOCAL or PROXY, families UNSPEC, INET,
 *   INET6, UNIX and transports UNSPEC, STREAM, DGRAM; the whole header at most
 *   MAX_V2_HEADER_BYTES; TLVs each within the header (a TLV running past it fails), the known
 *   ones decoded: ALPN, authority, unique id (<= 128 bytes), SSL (client flags, verify, version,
 *   CN, cipher, signature and key algorithms), netns, and CRC32C, which is checked.
 * - `buildProxyV1(src, dst)`, `buildProxyV2(src, dst, tlvs?)`: the header a sender writes, as
 *   HAProxy and nginx write it (v1 `PROXY TCP4 a b p q\r\n`; v2 command PROXY over STREAM).
 *
 * No npm package was used: the maintained one (proxy-protocol-js) throws on bad input, parses
 * only a complete buffer, and neither bounds nor decodes TLVs.
 */
import { isIP } from 'node:net';

/** An address and port as carried in a header. */
export interface ProxyEndpoint {
  address: string;
  port: number;
}

export type ProxyCommand = 'proxy' | 'local';
export type ProxyFamily = 'inet' | 'inet6' | 'unix' | 'unspec';
export type ProxyTransport = 'stream' | 'dgram' | 'unspec';

/** PP2_TYPE_SSL decoded. */
export interface ProxySslInfo {
  /** PP2_CLIENT_SSL, PP2_CLIENT_CERT_CONN, PP2_CLIENT_CERT_SESS bits. */
  client: number;
  /** `verify` was 0: the client's certificate was presented and verified. */
  verified: boolean;
  version?: string;
  commonName?: string;
  cipher?: string;
  signatureAlgorithm?: string;
  keyAlgorithm?: string;
}

export interface ProxyTlv {
  type: number;
  value: Buffer;
}

export interface ProxyHeader {
  version: 1 | 2;
  /** `local`: a connection of the proxy's own (health check): use the connection's addresses. */
  command: ProxyCommand;
  family: ProxyFamily;
  transport: ProxyTransport;
  /** The client; null for LOCAL, UNKNOWN (v1) and UNSPEC (v2). For `unix`, the path and port 0. */
  source: ProxyEndpoint | null;
  /** The address the client connected to; null when `source` is. */
  destination: ProxyEndpoint | null;
  /** Every TLV of a v2 header, in order (values are copies). */
  tlvs: ProxyTlv[];
  alpn?: string;
  authority?: string;
  uniqueId?: Buffer;
  ssl?: ProxySslInfo;
  netns?: string;
}

/** Why a header was refused: a bounded set (metric labels are derived from it). */
export const PROXY_PARSE_FAILURES = [
  'not_proxy', 'v1_too_long', 'v1_syntax', 'v2_version', 'v2_command', 'v2_family', 'v2_too_long', 'v2_address', 'v2_tlv', 'v2_crc',
] as const;
export type ProxyParseFailure = typeof PROXY_PARSE_FAILURES[number];

export type ProxyParseResult =
  | { ok: true; header: ProxyHeader; consumed: number }
  | { ok: false; reason: ProxyParseFailure };

/** The longest v1 line, CRLF included (the spec's worst case, `PROXY UNKNOWN` with two IPv6 addresses). */
export const MAX_V1_HEADER_BYTES = 107;
/** The longest v2 header sessionlb takes (16-byte fixed part, addresses, TLVs). */
export const MAX_V2_HEADER_BYTES = 4096;

export const PP2_TYPE_ALPN = 0x01;
export const PP2_TYPE_AUTHORITY = 0x02;
export const PP2_TYPE_CRC32C = 0x03;
export const PP2_TYPE_NOOP = 0x04;
export const PP2_TYPE_UNIQUE_ID = 0x05;
export const PP2_TYPE_SSL = 0x20;
export const PP2_SUBTYPE_SSL_VERSION = 0x21;
export const PP2_SUBTYPE_SSL_CN = 0x22;
export const PP2_SUBTYPE_SSL_CIPHER = 0x23;
export const PP2_SUBTYPE_SSL_SIG_ALG = 0x24;
export const PP2_SUBTYPE_SSL_KEY_ALG = 0x25;
export const PP2_TYPE_NETNS = 0x30;

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V1_SIGNATURE = Buffer.from('PROXY', 'latin1');
const MAX_UNIQUE_ID_BYTES = 128;
const CR = 0x0d;
const LF = 0x0a;

/** Parses the header at the start of `buf`; see the file's comment. Never throws. */
export function parseProxyHeader(buf: Uint8Array): ProxyParseResult | null {
  if (buf.length === 0) return null;
  if (buf[0] === V2_SIGNATURE[0]) return parseV2(buf);
  if (buf[0] === V1_SIGNATURE[0]) return parseV1(buf);
  return fail('not_proxy');
}

function fail(reason: ProxyParseFailure): ProxyParseResult {
  return { ok: false, reason };
}

// ---- version 1 ----

const IPV4_PART = /^(?:0|[1-9]\d{0,2})$/;
const PORT = /^(?:0|[1-9]\d{0,4})$/;
const IPV6_CHARS = /^[0-9A-Fa-f:]+$/;

function parseV1(buf: Uint8Array): ProxyParseResult | null {
  const sig = Math.min(buf.length, V1_SIGNATURE.length);
  for (let i = 0; i < sig; i++) if (buf[i] !== V1_SIGNATURE[i]) return fail('not_proxy');
  // The CR is at index MAX_V1_HEADER_BYTES - 2 at the latest.
  const limit = Math.min(buf.length, MAX_V1_HEADER_BYTES - 1);
  let cr = -1;
  for (let i = V1_SIGNATURE.length; i < limit; i++) {
    const c = buf[i]!;
    if (c === CR) { cr = i; break; }
    // A lone LF, a NUL or a byte outside printable ASCII cannot be part of a valid line.
    if (c < 0x20 || c > 0x7e) return fail('v1_syntax');
  }
  if (cr < 0) return buf.length >= MAX_V1_HEADER_BYTES - 1 ? fail('v1_too_long') : null;
  if (cr + 1 >= buf.length) return null;
  if (buf[cr + 1] !== LF) return fail('v1_syntax');
  const consumed = cr + 2;
  const line = Buffer.from(buf.buffer, buf.byteOffset, cr).toString('latin1');
  const parts = line.split(' ');
  if (parts[0] !== 'PROXY') return fail('v1_syntax');
  if (parts[1] === 'UNKNOWN') {
    // "the receiver must ignore anything presented before the CRLF".
    return { ok: true, consumed, header: { version: 1, command: 'proxy', family: 'unspec', transport: 'unspec', source: null, destination: null, tlvs: [] } };
  }
  if (parts.length !== 6) return fail('v1_syntax');
  const [, proto, src, dst, sport, dport] = parts as [string, string, string, string, string, string];
  let family: ProxyFamily;
  if (proto === 'TCP4') {
    if (!isStrictIPv4(src) || !isStrictIPv4(dst)) return fail('v1_syntax');
    family = 'inet';
  } else if (proto === 'TCP6') {
    if (!isStrictIPv6(src) || !isStrictIPv6(dst)) return fail('v1_syntax');
    family = 'inet6';
  } else {
    return fail('v1_syntax');
  }
  const sp = v1Port(sport);
  const dp = v1Port(dport);
  if (sp < 0 || dp < 0) return fail('v1_syntax');
  return {
    ok: true, consumed,
    header: { version: 1, command: 'proxy', family, transport: 'stream', source: { address: src, port: sp }, destination: { address: dst, port: dp }, tlvs: [] },
  };
}

function isStrictIPv4(s: string): boolean {
  const parts = s.split('.');
  if (parts.length !== 4) return false;
  for (const p of parts) if (!IPV4_PART.test(p) || Number(p) > 255) return false;
  return true;
}

/** Hex groups and colons only (no zone, no embedded IPv4), 128 bits as node reads it. */
function isStrictIPv6(s: string): boolean {
  return s.length <= 39 && IPV6_CHARS.test(s) && isIP(s) === 6;
}

function v1Port(s: string): number {
  if (!PORT.test(s)) return -1;
  const n = Number(s);
  return n <= 65535 ? n : -1;
}

// ---- version 2 ----

const FAMILIES: readonly ProxyFamily[] = ['unspec', 'inet', 'inet6', 'unix'];
const TRANSPORTS: readonly ProxyTransport[] = ['unspec', 'stream', 'dgram'];
/** Bytes of the address block per family (ports included for INET and INET6). */
const ADDRESS_BYTES = [0, 12, 36, 216];

function parseV2(buf: Uint8Array): ProxyParseResult | null {
  const sig = Math.min(buf.length, V2_SIGNATURE.length);
  for (let i = 0; i < sig; i++) if (buf[i] !== V2_SIGNATURE[i]) return fail('not_proxy');
  if (buf.length < 13) return null;
  const verCmd = buf[12]!;
  if (verCmd >> 4 !== 2) return fail('v2_version');
  const cmd = verCmd & 0x0f;
  if (cmd > 1) return fail('v2_command');
  if (buf.length < 14) return null;
  const fam = buf[13]!;
  const familyCode = fam >> 4;
  const transportCode = fam & 0x0f;
  if (familyCode > 3 || transportCode > 2) return fail('v2_family');
  if (buf.length < 16) return null;
  const total = 16 + ((buf[14]! << 8) | buf[15]!);
  if (total > MAX_V2_HEADER_BYTES) return fail('v2_too_long');
  if (buf.length < total) return null;
  const command: ProxyCommand = cmd === 1 ? 'proxy' : 'local';
  const family = FAMILIES[familyCode]!;
  const transport = TRANSPORTS[transportCode]!;
  const addrBytes = ADDRESS_BYTES[familyCode]!;
  const header: ProxyHeader = { version: 2, command, family, transport, source: null, destination: null, tlvs: [] };
  const view = Buffer.from(buf.buffer, buf.byteOffset, total);
  let tlvStart = 16;
  if (16 + addrBytes > total) {
    // LOCAL: "discard the protocol block including the family": a short block is ignored whole.
    if (command === 'local') return { ok: true, header, consumed: total };
    return fail('v2_address');
  }
  tlvStart = 16 + addrBytes;
  if (command === 'proxy' && addrBytes > 0) {
    const ends = v2Addresses(view, familyCode);
    if (ends === null) return fail('v2_address');
    header.source = ends[0];
    header.destination = ends[1];
  }
  const tlvOk = readTlvs(view, tlvStart, total, header);
  if (tlvOk !== null) return fail(tlvOk);
  return { ok: true, header, consumed: total };
}

function v2Addresses(b: Buffer, familyCode: number): [ProxyEndpoint, ProxyEndpoint] | null {
  if (familyCode === 1) {
    return [
      { address: `${b[16]}.${b[17]}.${b[18]}.${b[19]}`, port: b.readUInt16BE(24) },
      { address: `${b[20]}.${b[21]}.${b[22]}.${b[23]}`, port: b.readUInt16BE(26) },
    ];
  }
  if (familyCode === 2) {
    return [
      { address: ipv6Text(b, 16), port: b.readUInt16BE(48) },
      { address: ipv6Text(b, 32), port: b.readUInt16BE(50) },
    ];
  }
  // AF_UNIX: two 108-byte NUL-padded paths.
  return [{ address: unixPath(b, 16), port: 0 }, { address: unixPath(b, 124), port: 0 }];
}

/** RFC 5952 text of 16 bytes at `at` (lower case, the longest run of two or more zero groups as `::`). */
function ipv6Text(b: Buffer, at: number): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(b.readUInt16BE(at + 2 * i));
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

function unixPath(b: Buffer, at: number): string {
  let end = at;
  while (end < at + 108 && b[end] !== 0) end++;
  return b.toString('utf8', at, end);
}

/** Reads the TLVs of `b[start, end)` into `header`; returns the failure, or null when all are well formed. */
function readTlvs(b: Buffer, start: number, end: number, header: ProxyHeader): ProxyParseFailure | null {
  let crcAt = -1;
  for (let at = start; at < end;) {
    if (at + 3 > end) return 'v2_tlv';
    const type = b[at]!;
    const len = b.readUInt16BE(at + 1);
    const from = at + 3;
    const to = from + len;
    if (to > end) return 'v2_tlv';
    const value = Buffer.from(b.subarray(from, to));
    header.tlvs.push({ type, value });
    switch (type) {
      case PP2_TYPE_ALPN: header.alpn ??= value.toString('latin1'); break;
      case PP2_TYPE_AUTHORITY: header.authority ??= value.toString('utf8'); break;
      case PP2_TYPE_CRC32C:
        if (len !== 4 || crcAt >= 0) return 'v2_tlv';
        crcAt = from;
        break;
      case PP2_TYPE_UNIQUE_ID:
        if (len > MAX_UNIQUE_ID_BYTES) return 'v2_tlv';
        header.uniqueId ??= value;
        break;
      case PP2_TYPE_SSL: {
        const ssl = sslTlv(value);
        if (ssl === null) return 'v2_tlv';
        header.ssl ??= ssl;
        break;
      }
      case PP2_TYPE_NETNS: header.netns ??= value.toString('latin1'); break;
      default: break; // NOOP, custom, experimental: skipped
    }
    at = to;
  }
  if (crcAt >= 0) {
    const expected = b.readUInt32BE(crcAt);
    const copy = Buffer.from(b.subarray(0, end));
    copy.writeUInt32BE(0, crcAt);
    if (crc32c(copy) !== expected) return 'v2_crc';
  }
  return null;
}

function sslTlv(v: Buffer): ProxySslInfo | null {
  if (v.length < 5) return null;
  const ssl: ProxySslInfo = { client: v[0]!, verified: v.readUInt32BE(1) === 0 };
  for (let at = 5; at < v.length;) {
    if (at + 3 > v.length) return null;
    const type = v[at]!;
    const len = v.readUInt16BE(at + 1);
    const to = at + 3 + len;
    if (to > v.length) return null;
    const text = v.toString('latin1', at + 3, to);
    switch (type) {
      case PP2_SUBTYPE_SSL_VERSION: ssl.version ??= text; break;
      case PP2_SUBTYPE_SSL_CN: ssl.commonName ??= v.toString('utf8', at + 3, to); break;
      case PP2_SUBTYPE_SSL_CIPHER: ssl.cipher ??= text; break;
      case PP2_SUBTYPE_SSL_SIG_ALG: ssl.signatureAlgorithm ??= text; break;
      case PP2_SUBTYPE_SSL_KEY_ALG: ssl.keyAlgorithm ??= text; break;
      default: break;
    }
    at = to;
  }
  return ssl;
}

let crcTable: Uint32Array | null = null;

/** CRC32C (Castagnoli, RFC 4960 appendix B). */
export function crc32c(data: Uint8Array): number {
  let table = crcTable;
  if (table === null) {
    table = crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
      table[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (let i = 0; i < data.length; i++) crc = table[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

// ---- building ----

/** `::ffff:1.2.3.4` as `1.2.3.4`; other addresses as they are. */
function unmapped(address: string): string {
  return address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}

/**
 * The two endpoints in one family, as a sender must present them: both IPv4 when both are (or
 * are IPv4-mapped), else both IPv6 (an IPv4 address as `::ffff:a.b.c.d`); null when either is
 * not an IP address or a port is out of range.
 */
function sameFamily(src: ProxyEndpoint, dst: ProxyEndpoint): { family: 4 | 6; src: string; dst: string } | null {
  if (!validPort(src.port) || !validPort(dst.port)) return null;
  const s = unmapped(src.address);
  const d = unmapped(dst.address);
  const fs = isIP(s);
  const fd = isIP(d);
  if (fs === 0 || fd === 0 || s.includes('%') || d.includes('%')) return null;
  if (fs === 4 && fd === 4) return { family: 4, src: s, dst: d };
  return { family: 6, src: fs === 4 ? `::ffff:${s}` : s, dst: fd === 4 ? `::ffff:${d}` : d };
}

function validPort(p: number): boolean {
  return Number.isInteger(p) && p >= 0 && p <= 65535;
}

/**
 * The v1 line for a connection from `src` to `dst` (`PROXY TCP4 ...` or `PROXY TCP6 ...`);
 * `PROXY UNKNOWN\r\n` when the endpoints are not IP addresses (the spec's rule).
 */
export function buildProxyV1(src: ProxyEndpoint, dst: ProxyEndpoint): Buffer {
  const ends = sameFamily(src, dst);
  if (ends === null) return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
  // IPv6 in node's canonical text (compressed, lower case): what nginx and HAProxy send.
  const s = ends.family === 6 ? canonicalIPv6(ends.src) : ends.src;
  const d = ends.family === 6 ? canonicalIPv6(ends.dst) : ends.dst;
  return Buffer.from(`PROXY TCP${ends.family} ${s} ${d} ${src.port} ${dst.port}\r\n`, 'latin1');
}

function canonicalIPv6(a: string): string {
  return ipv6Text(ipv6Bytes(a), 0);
}

/**
 * The v2 header for a connection from `src` to `dst` (command PROXY, transport STREAM, INET or
 * INET6), followed by `tlvs` in order; command LOCAL with family UNSPEC when the endpoints are
 * not IP addresses. Throws when the TLVs make it longer than MAX_V2_HEADER_BYTES (a caller's bug).
 */
export function buildProxyV2(src: ProxyEndpoint, dst: ProxyEndpoint, tlvs: readonly ProxyTlv[] = []): Buffer {
  const ends = sameFamily(src, dst);
  const addrBytes = ends === null ? 0 : ends.family === 4 ? 12 : 36;
  let tlvBytes = 0;
  for (const t of tlvs) {
    if (!Number.isInteger(t.type) || t.type < 0 || t.type > 255 || t.value.length > 0xffff) throw new Error('invalid PROXY v2 TLV');
    tlvBytes += 3 + t.value.length;
  }
  const total = 16 + addrBytes + tlvBytes;
  if (total > MAX_V2_HEADER_BYTES) throw new Error(`PROXY v2 header of ${total} bytes is over ${MAX_V2_HEADER_BYTES}`);
  const out = Buffer.alloc(total);
  V2_SIGNATURE.copy(out, 0);
  out[12] = ends === null ? 0x20 : 0x21;
  out[13] = ends === null ? 0x00 : ends.family === 4 ? 0x11 : 0x21;
  out.writeUInt16BE(total - 16, 14);
  let at = 16;
  if (ends !== null) {
    if (ends.family === 4) {
      ipv4Bytes(ends.src).copy(out, 16);
      ipv4Bytes(ends.dst).copy(out, 20);
      out.writeUInt16BE(src.port, 24);
      out.writeUInt16BE(dst.port, 26);
    } else {
      ipv6Bytes(ends.src).copy(out, 16);
      ipv6Bytes(ends.dst).copy(out, 32);
      out.writeUInt16BE(src.port, 48);
      out.writeUInt16BE(dst.port, 50);
    }
    at += addrBytes;
  }
  let crcAt = -1;
  for (const t of tlvs) {
    out[at] = t.type;
    out.writeUInt16BE(t.value.length, at + 1);
    if (t.type === PP2_TYPE_CRC32C && t.value.length === 4) crcAt = at + 3;
    t.value.copy(out, at + 3);
    at += 3 + t.value.length;
  }
  if (crcAt >= 0) {
    // The spec's procedure: the field zeroed, the checksum of the whole header written into it.
    out.writeUInt32BE(0, crcAt);
    out.writeUInt32BE(crc32c(out), crcAt);
  }
  return out;
}

function ipv4Bytes(a: string): Buffer {
  return Buffer.from(a.split('.').map(Number));
}

/** 16 bytes of a valid IPv6 address (possibly with `::` and a dotted IPv4 tail). */
function ipv6Bytes(a: string): Buffer {
  const out = Buffer.alloc(16);
  let text = a;
  const lastColon = text.lastIndexOf(':');
  if (text.indexOf('.', lastColon) > 0) {
    // A dotted IPv4 tail (`::ffff:1.2.3.4`) as its two groups.
    const v4 = text.slice(lastColon + 1).split('.').map(Number);
    text = `${text.slice(0, lastColon + 1)}${((v4[0]! << 8) | v4[1]!).toString(16)}:${((v4[2]! << 8) | v4[3]!).toString(16)}`;
  }
  const [head = '', rest] = text.split('::') as [string, string | undefined];
  const parse = (s: string): number[] => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  const h = parse(head);
  const r = rest === undefined ? [] : parse(rest);
  const groups = rest === undefined ? h : [...h, ...new Array<number>(8 - h.length - r.length).fill(0), ...r];
  for (let i = 0; i < 8; i++) out.writeUInt16BE(groups[i] ?? 0, 2 * i);
  return out;
}
