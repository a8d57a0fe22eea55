/**
 * nginx-style variable templates ("$cookie_PHPSESSID", "$host$request_uri", "${arg_id}x"),
 * compiled once per config into a small function that builds the value for a request.
 * Used by the hash balancing policy; reusable by anything else that needs a per-request key.
 *
 * Values are "byte strings": every character is one byte (0-255), the way Node hands us
 * header values and URLs (latin1). Literal text from the config is UTF-8 encoded at compile
 * time so that hashes over a key match nginx, which hashes raw bytes.
 */
import type { IncomingMessage } from 'node:http';
import { normaliseHost } from './server-names.js';
import { binaryAddress } from './ip-address.js';

/** What a template reads from a request (the balancer's PickRequest satisfies it). */
export interface VariableSource {
  readonly req: IncomingMessage;
  /** The client's address as the socket reports it (IPv4-mapped IPv6 is unwrapped). */
  readonly remoteAddress: string;
}

/** A compiled template: evaluate it with `template.evaluate(source)`. */
export interface CompiledTemplate {
  /** The template text as written in the config. */
  readonly source: string;
  /** Variable names used, without "$" (for docs and diagnostics). */
  readonly variables: readonly string[];
  readonly evaluate: (src: VariableSource) => string;
}

/** The variables a template may use; NAME in the prefixed forms is any of [A-Za-z0-9_-]. */
export const SUPPORTED_VARIABLES = [
  '$remote_addr', '$binary_remote_addr', '$request_uri', '$uri', '$args', '$host', '$scheme', '$server_port', '$arg_NAME', '$http_NAME', '$cookie_NAME',
] as const;

/** Compile-time values of a template's context; `$server_name` is known only where it is given. */
export interface TemplateContext {
  /** nginx $server_name: the server's first name ("" when it has none). */
  readonly serverName?: string;
}

type Getter = (src: VariableSource) => string;

// ---- per-variable getters (module-level functions: no closure per request) ----

function remoteAddr(src: VariableSource): string {
  const a = src.remoteAddress;
  return a.length > 7 && a.charCodeAt(0) === 58 /* : */ && a.startsWith('::ffff:') && a.indexOf('.') !== -1 ? a.slice(7) : a;
}

/** nginx $binary_remote_addr: 4 bytes (IPv4) or 16 (IPv6), one character each. */
function binaryRemoteAddr(src: VariableSource): string {
  return binaryAddress(remoteAddr(src));
}

function requestUri(src: VariableSource): string {
  return src.req.url ?? '';
}

function args(src: VariableSource): string {
  const url = src.req.url ?? '';
  const q = url.indexOf('?');
  return q === -1 ? '' : url.slice(q + 1);
}

function uri(src: VariableSource): string {
  const url = src.req.url ?? '';
  const q = url.indexOf('?');
  return normalizeUriPath(q === -1 ? url : url.slice(0, q));
}

function host(src: VariableSource): string {
  const h = src.req.headers.host;
  return h === undefined || h === '' ? '' : normaliseHost(h);
}

/**
 * nginx's $uri: the path decoded (%XX), with "//" merged and "." / ".." segments resolved.
 * Fast path when there is nothing to normalise.
 */
export function normalizeUriPath(path: string): string {
  if (path.indexOf('%') === -1 && path.indexOf('//') === -1 && path.indexOf('/.') === -1) return path;
  let decoded = '';
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c === 37 /* % */ && i + 2 < path.length && isHex(path.charCodeAt(i + 1)) && isHex(path.charCodeAt(i + 2))) {
      decoded += String.fromCharCode(parseInt(path.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      decoded += path[i];
    }
  }
  const out: string[] = [];
  const segments = decoded.split('/');
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i]!;
    if (s === '' && i !== 0 && i !== segments.length - 1) continue; // merge slashes
    if (s === '.') {
      if (i === segments.length - 1) out.push('');
      continue;
    }
    if (s === '..') {
      if (out.length > 1) out.pop();
      if (i === segments.length - 1) out.push('');
      continue;
    }
    out.push(s);
  }
  const joined = out.join('/');
  return joined.startsWith('/') ? joined : `/${joined}`;
}

function isHex(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);
}

/** Does `text` at `start` equal `lowerName` ignoring ASCII case? (no allocation) */
function matchesLower(text: string, start: number, lowerName: string): boolean {
  for (let i = 0; i < lowerName.length; i++) {
    let c = text.charCodeAt(start + i);
    if (c >= 65 && c <= 90) c += 32;
    if (c !== lowerName.charCodeAt(i)) return false;
  }
  return true;
}

/** nginx $arg_NAME: the first query argument NAME (name compared case-insensitively), undecoded; "" when absent. */
export function queryArg(url: string, lowerName: string): string {
  const q = url.indexOf('?');
  if (q === -1) return '';
  let start = q + 1;
  const n = lowerName.length;
  while (start < url.length) {
    let end = url.indexOf('&', start);
    if (end === -1) end = url.length;
    if (end - start >= n && (end - start === n || url.charCodeAt(start + n) === 61 /* = */)
      && matchesLower(url, start, lowerName)) {
      return end - start === n ? '' : url.slice(start + n + 1, end);
    }
    start = end + 1;
  }
  return '';
}

/** The value of cookie `name` in a Cookie header (case-insensitive name, first match), or "" when absent. */
export function cookieValue(header: string | undefined, lowerName: string): string {
  if (header === undefined || header === '') return '';
  const n = lowerName.length;
  let start = 0;
  while (start < header.length) {
    while (start < header.length && (header.charCodeAt(start) === 32 || header.charCodeAt(start) === 9)) start++;
    let end = header.indexOf(';', start);
    if (end === -1) end = header.length;
    if (end - start > n && header.charCodeAt(start + n) === 61 /* = */
      && matchesLower(header, start, lowerName)) {
      let v = end;
      while (v > start + n + 1 && (header.charCodeAt(v - 1) === 32 || header.charCodeAt(v - 1) === 9)) v--;
      return header.slice(start + n + 1, v);
    }
    start = end + 1;
  }
  return '';
}

function argGetter(name: string): Getter {
  const lower = name.toLowerCase();
  return (src) => queryArg(src.req.url ?? '', lower);
}

function httpGetter(name: string): Getter {
  const header = name.toLowerCase().replace(/_/g, '-');
  if (header === 'cookie') return (src) => src.req.headers.cookie ?? '';
  return (src) => {
    const v = src.req.headers[header];
    return v === undefined ? '' : typeof v === 'string' ? v : v.join(', ');
  };
}

function cookieGetter(name: string): Getter {
  const lower = name.toLowerCase();
  return (src) => cookieValue(src.req.headers.cookie, lower);
}

function literalGetter(text: string): Getter {
  return () => text;
}

/** nginx $scheme: "https" for a request that came over TLS (its socket is a TLSSocket), else "http". */
export function requestScheme(req: IncomingMessage): 'http' | 'https' {
  return (req.socket as { encrypted?: boolean } | null)?.encrypted === true ? 'https' : 'http';
}

function scheme(src: VariableSource): string {
  return requestScheme(src.req);
}

/** nginx $server_port: the port the connection was accepted on. */
function serverPort(src: VariableSource): string {
  const port = src.req.socket?.localPort;
  return port === undefined ? '' : String(port);
}

const SIMPLE: Record<string, Getter> = {
  scheme,
  server_port: serverPort,
  remote_addr: remoteAddr,
  binary_remote_addr: binaryRemoteAddr,
  request_uri: requestUri,
  uri,
  document_uri: uri,
  args,
  query_string: args,
  host,
};

function getterFor(name: string): Getter | null {
  const simple = Object.hasOwn(SIMPLE, name) ? SIMPLE[name]! : undefined;
  if (simple) return simple;
  const m = /^(arg|http|cookie)_(.+)$/.exec(name);
  if (!m) return null;
  if (m[1] === 'arg') return argGetter(m[2]!);
  if (m[1] === 'http') return httpGetter(m[2]!);
  return cookieGetter(m[2]!);
}

/**
 * Compiles a template, or returns an error message (for config problems).
 * A "$" must start a variable; "${name}" separates a variable from following letters.
 */
export function compileTemplate(text: string, context: TemplateContext = {}): CompiledTemplate | string {
  const parts: Getter[] = [];
  const variables: string[] = [];
  let literal = '';
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c !== '$') {
      literal += c;
      i++;
      continue;
    }
    let name: string;
    if (text[i + 1] === '{') {
      const close = text.indexOf('}', i + 2);
      if (close === -1) return `missing "}" after "\${" in "${text}"`;
      name = text.slice(i + 2, close);
      i = close + 1;
    } else {
      const m = /^[A-Za-z0-9_]+/.exec(text.slice(i + 1));
      if (!m) return `"$" must be followed by a variable name in "${text}" (use one of ${SUPPORTED_VARIABLES.join(', ')})`;
      name = m[0];
      i += 1 + name.length;
    }
    if (!/^[A-Za-z0-9_-]+$/.test(name)) return `invalid variable name "${name}" in "${text}"`;
    const getter = name === 'server_name' && context.serverName !== undefined
      ? literalGetter(Buffer.from(context.serverName, 'utf8').toString('latin1'))
      : getterFor(name);
    if (getter === null) {
      const names = context.serverName === undefined ? SUPPORTED_VARIABLES : [...SUPPORTED_VARIABLES, '$server_name'];
      return `unknown variable "$${name}" (supported: ${names.join(', ')})`;
    }
    if (literal !== '') {
      parts.push(literalGetter(Buffer.from(literal, 'utf8').toString('latin1')));
      literal = '';
    }
    parts.push(getter);
    variables.push(name);
  }
  if (literal !== '') parts.push(literalGetter(Buffer.from(literal, 'utf8').toString('latin1')));
  let evaluate: Getter;
  if (parts.length === 0) evaluate = literalGetter('');
  else if (parts.length === 1) evaluate = parts[0]!;
  else if (parts.length === 2) {
    const [a, b] = parts as [Getter, Getter];
    evaluate = (src) => a(src) + b(src);
  } else {
    evaluate = (src) => {
      let out = '';
      for (let k = 0; k < parts.length; k++) out += parts[k]!(src);
      return out;
    };
  }
  return { source: text, variables, evaluate };
}
