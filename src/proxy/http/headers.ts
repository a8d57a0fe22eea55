/**
 * Header rules between client and upstream (nginx proxy module semantics, with the
 * client's Host kept): hop-by-hop headers are dropped both ways, X-Forwarded-* and
 * X-Real-IP are added (the client's X-Forwarded-Proto kept from a peer in `realIp.from`), and a
 * location's proxySetHeader overrides.
 */
import type { HeaderLimits } from '../../config/model.js';
import { equalsLower } from '../../nginx-language/header-tokens.js';

/** Headers that describe one connection, never forwarded (RFC 9110 7.6.1), lower case. */
const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade',
  'proxy-connection', 'proxy-authenticate', 'proxy-authorization',
]);

/** Names listed in a Connection header value, lower case; null when there are none to add. */
function connectionTokens(rawHeaders: readonly string[]): Set<string> | null {
  let tokens: Set<string> | null = null;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (equalsLower(name, 'connection')) {
      const value = rawHeaders[i + 1]!;
      if (value === 'keep-alive' || value === 'close') continue; // the usual values: nothing named
      for (const t of value.split(',')) {
        const token = t.trim().toLowerCase();
        if (token !== '' && token !== 'close' && token !== 'keep-alive') (tokens ??= new Set()).add(token);
      }
    }
  }
  return tokens;
}

/**
 * False when `name` (an HTTP token, ASCII) cannot be, in any letter case, one of the names the
 * rules below act on: hop-by-hop ones, `proxy-*`, content-length, x-forwarded-*, x-real-ip,
 * expect or host. Decided from length and first letter, so most headers (Accept, Cookie,
 * User-Agent, Content-Type, Date, Server, ...) are copied without being lower-cased.
 * A false positive only costs the full check; it must never say false for one of them.
 */
function mayBeSpecial(name: string): boolean {
  const c = name.charCodeAt(0) | 0x20; // ASCII letters to lower case
  if (c === 112 /* p */) return name.length >= 6; // proxy-*
  switch (name.length) {
    case 2: return c === 116; // te
    case 4: return c === 104; // host
    case 6: return c === 101; // expect
    case 7: return c === 116 || c === 117; // trailer, upgrade
    case 9: return c === 120; // x-real-ip
    case 10: return c === 99 || c === 107; // connection, keep-alive
    case 14: return c === 99; // content-length
    case 15: case 16: return c === 120; // x-forwarded-for, x-forwarded-host
    case 17: return c === 116 || c === 120; // transfer-encoding, x-forwarded-proto
    default: return false;
  }
}

function isHopByHop(lower: string, named: Set<string> | null): boolean {
  if (HOP_BY_HOP.has(lower)) return true;
  if (lower.startsWith('proxy-')) return true;
  return named !== null && named.has(lower);
}

export interface ForwardInfo {
  remoteAddress: string;
  /** "http" or "https": how the client reached us. */
  scheme: string;
  /** The peer is trusted (`realIp.from`): the client's X-Forwarded-Proto is passed on instead of `scheme`. */
  keepForwardedProto?: boolean;
  /** How the body is sent upstream: a length, chunked, or none. */
  bodyFraming: { contentLength: number } | 'chunked' | null;
  /** For an upgrade request: the client's Upgrade value to pass on. */
  upgrade: string | null;
  /**
   * Host to send when the client sent none (HTTP/1.0): nginx's default `$proxy_host`,
   * the upstream name or `host:port` of proxyPass. An HTTP/1.1 upstream needs a Host.
   */
  proxyHost?: string;
  /** nginx underscores_in_headers: "_" is a valid name character (absent/false: it is not). */
  underscoresInHeaders?: boolean;
  /** nginx ignore_invalid_headers (absent = true): names with a character that is not valid are dropped; false passes them. */
  ignoreInvalidHeaders?: boolean;
}

/** nginx's valid header name characters: letters, digits, "-" (and "_" with underscores_in_headers). */
const INVALID_NAME = /[^A-Za-z0-9-]/;
const INVALID_NAME_UNDERSCORES = /[^A-Za-z0-9_-]/;

/**
 * Builds the flat header list for the upstream request from the client's raw headers.
 * `setHeaders` (lower-case name -> value, "" removes) is applied last and wins.
 */
export function upstreamRequestHeaders(
  rawHeaders: readonly string[],
  info: ForwardInfo,
  setHeaders: ReadonlyMap<string, string>,
): string[] {
  const named = connectionTokens(rawHeaders);
  const out: string[] = [];
  let xff: string | null = null;
  let host: string | null = null;
  let proto: string | null = null;
  // Connection-named headers and proxySetHeader need every name in lower case; otherwise most skip that.
  const everyName = named !== null || setHeaders.size !== 0;
  // nginx ignore_invalid_headers: a name with another character than these is dropped; with
  // underscores_in_headers off "_" is one (CGI-style backends read "X_Real_IP" as X-Real-IP).
  // node's parser already refuses what is not an HTTP token; what it passes and nginx drops:
  // "_" (unless underscoresInHeaders) and ! # $ % & ' * + . ^ ` | ~.
  const invalid = info.ignoreInvalidHeaders === false ? null : info.underscoresInHeaders === true ? INVALID_NAME_UNDERSCORES : INVALID_NAME;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (invalid !== null && invalid.test(name)) continue;
    if (!everyName && !mayBeSpecial(name)) {
      out.push(name, rawHeaders[i + 1]!);
      continue;
    }
    const lower = name.toLowerCase();
    if (isHopByHop(lower, named)) continue;
    switch (lower) {
      case 'content-length':
        continue; // re-sent below from what we actually forward
      case 'x-forwarded-for':
        xff = xff === null ? rawHeaders[i + 1]! : `${xff}, ${rawHeaders[i + 1]!}`;
        continue;
      case 'x-forwarded-proto':
        if (proto === null && info.keepForwardedProto === true) proto = rawHeaders[i + 1]!;
        continue;
      case 'x-real-ip':
      case 'x-forwarded-host':
        continue; // replaced by ours
      case 'expect':
        continue; // "100-continue" was answered to the client already (node's server does it); the upstream gets the body at once
      case 'host':
        host = rawHeaders[i + 1]!;
        break;
    }
    if (setHeaders.size !== 0 && setHeaders.has(lower)) continue;
    out.push(name, rawHeaders[i + 1]!);
  }
  const remote = info.remoteAddress;
  out.push('X-Forwarded-For', xff === null ? remote : `${xff}, ${remote}`);
  out.push('X-Real-IP', remote);
  out.push('X-Forwarded-Proto', proto ?? info.scheme);
  if (host !== null) out.push('X-Forwarded-Host', host);
  else if (info.proxyHost !== undefined && !setHeaders.has('host')) out.push('Host', info.proxyHost);
  const framing = info.bodyFraming;
  if (framing === 'chunked') out.push('Transfer-Encoding', 'chunked');
  else if (framing !== null) out.push('Content-Length', String(framing.contentLength));
  if (info.upgrade !== null) out.push('Connection', 'upgrade', 'Upgrade', info.upgrade);
  if (setHeaders.size !== 0) {
    for (const [name, value] of setHeaders) {
      if (value === '') {
        removeHeader(out, name);
      } else if (name === 'x-forwarded-for' || name === 'x-real-ip' || name === 'x-forwarded-proto' || name === 'x-forwarded-host') {
        removeHeader(out, name);
        out.push(name, value);
      } else {
        out.push(name, value);
      }
    }
  }
  return out;
}

function removeHeader(flat: string[], lowerName: string): void {
  for (let i = flat.length - 2; i >= 0; i -= 2) {
    if (flat[i]!.toLowerCase() === lowerName) flat.splice(i, 2);
  }
}

/**
 * The upstream's response headers minus hop-by-hop ones (an upgrade keeps Connection/Upgrade)
 * and minus `hide` (nginx proxy_hide_header, lower case; null: none, the fast path).
 */
export function clientResponseHeaders(rawHeaders: readonly string[], upgrading: boolean, hide: ReadonlySet<string> | null = null): string[] {
  const named = connectionTokens(rawHeaders);
  const out: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (hide !== null && hide.has(name.toLowerCase())) continue;
    if (named === null && !mayBeSpecial(name)) {
      out.push(name, rawHeaders[i + 1]!);
      continue;
    }
    const lower = name.toLowerCase();
    if (upgrading && (lower === 'connection' || lower === 'upgrade')) {
      out.push(name, rawHeaders[i + 1]!);
      continue;
    }
    if (isHopByHop(lower, named)) continue;
    out.push(name, rawHeaders[i + 1]!);
  }
  return out;
}

/**
 * What nginx answers to a request head before routing it, or 0 when it may go on: 414 for a
 * request line longer than one header buffer; 400 for a header line longer than one buffer
 * (nginx "Request Header Or Cookie Too Large"), a second Host (nginx "client sent duplicate host
 * header": which Host routes and which goes upstream would be ambiguous) or none in HTTP/1.1;
 * 431 for a head over NUMBER x SIZE. node's maxHeaderSize is set to the same total but counts
 * only names and values, so many short headers would pass it.
 */
export function requestHeadStatus(method: string, url: string, rawHeaders: readonly string[], limits: HeaderLimits, needsHost: boolean): number {
  // "METHOD SP target SP HTTP/1.1 CRLF"
  let size = method.length + url.length + 12;
  if (size - 2 > limits.bufferSize) return 414;
  let host = false;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    const line = name.length + rawHeaders[i + 1]!.length + 2;
    if (line > limits.bufferSize) return 400;
    size += line + 2;
    if (name.length === 4 && equalsLower(name, 'host')) {
      if (host) return 400;
      host = true;
    }
  }
  if (size + 2 > limits.total) return 431;
  return needsHost && !host ? 400 : 0;
}

/** Whether a flat header list has a Content-Length field (any letter case). */
export function hasContentLength(flat: readonly string[]): boolean {
  for (let i = 0; i < flat.length; i += 2) if (equalsLower(flat[i]!, 'content-length')) return true;
  return false;
}

/** nginx $scheme of a request (its connection: TLS or not). */
export { requestScheme } from '../../nginx-language/variables.js';
