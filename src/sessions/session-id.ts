/**
 * Session ids as PHP issues them, read from a request's Cookie header and checked
 * before any other use: PHP's alphabet `[A-Za-z0-9,-]` and a length range (22..256 by
 * default). Anything else — spaces, CR/LF, control bytes, quotes, non-ASCII, too short
 * or too long, or the cookie given several times with different values — is "no
 * session": the caller counts it and routes by the balancer; such a value never
 * reaches a store.
 *
 * Written as a scanner over the header string (no split/regex per request).
 */

export interface SessionIdRules {
  minLength: number;
  maxLength: number;
}

export const DEFAULT_ID_RULES: SessionIdRules = { minLength: 22, maxLength: 256 };

/** Result of reading the session cookie: the id, `null` (no such cookie) or `false` (present but invalid). */
export type SessionIdResult = string | null | false;

/** PHP's session id alphabet: A-Z a-z 0-9 "," "-" (session.sid_bits_per_character 4, 5 or 6). */
const ALLOWED = new Uint8Array(128);
for (let c = 48; c <= 57; c++) ALLOWED[c] = 1;
for (let c = 65; c <= 90; c++) ALLOWED[c] = 1;
for (let c = 97; c <= 122; c++) ALLOWED[c] = 1;
ALLOWED[44] = 1; // ,
ALLOWED[45] = 1; // -

/** True when `id` is a well-formed session id under `rules`. */
export function isValidSessionId(id: string, rules: SessionIdRules): boolean {
  const n = id.length;
  if (n < rules.minLength || n > rules.maxLength) return false;
  for (let i = 0; i < n; i++) {
    const c = id.charCodeAt(i);
    if (c >= 128 || ALLOWED[c] === 0) return false;
  }
  return true;
}

/**
 * Finds cookie `name` in a Cookie header (node joins several Cookie headers with "; ").
 * Returns the raw value, `null` when absent, or `false` when it appears more than
 * once with different values (ambiguous: which one would the backend use?).
 */
export function findCookie(header: string | undefined, name: string): string | null | false {
  if (header === undefined || header.length === 0) return null;
  const len = header.length;
  const nameLen = name.length;
  let found: string | null = null;
  let pos = 0;
  while (pos < len) {
    let c = header.charCodeAt(pos);
    while ((c === 32 || c === 9) && pos < len) c = header.charCodeAt(++pos);
    let end = header.indexOf(';', pos);
    if (end === -1) end = len;
    if (header.charCodeAt(pos + nameLen) === 61 /* = */ && pos + nameLen < end && header.startsWith(name, pos)) {
      let vEnd = end;
      while (vEnd > pos + nameLen + 1 && (header.charCodeAt(vEnd - 1) === 32 || header.charCodeAt(vEnd - 1) === 9)) vEnd--;
      const value = header.slice(pos + nameLen + 1, vEnd);
      if (found !== null && found !== value) return false;
      found = value;
    }
    pos = end + 1;
  }
  return found;
}

/** Reads and validates the session id in cookie `name`: the id, `null` (no cookie) or `false` (invalid or conflicting). */
export function sessionIdFromCookieHeader(header: string | undefined, name: string, rules: SessionIdRules): SessionIdResult {
  const value = findCookie(header, name);
  if (value === null || value === false) return value;
  return isValidSessionId(value, rules) ? value : false;
}

/** What a response's `Set-Cookie` does to the session cookie. */
export type SetCookieEffect =
  | { kind: 'set'; id: string }
  | { kind: 'delete'; id: string }
  | { kind: 'invalid' };

/**
 * Interprets one `Set-Cookie` value if it is for cookie `name` (else null): a new/refreshed
 * id, a deletion (`Max-Age<=0`, an `Expires` in the past, or PHP's `deleted` value), or an
 * invalid id (ignored by the caller).
 */
export function parseSetCookie(value: string, name: string, rules: SessionIdRules, now: number): SetCookieEffect | null {
  let start = 0;
  while (value.charCodeAt(start) === 32) start++;
  if (!value.startsWith(name, start) || value.charCodeAt(start + name.length) !== 61) return null;
  const semi = value.indexOf(';', start);
  let idEnd = semi === -1 ? value.length : semi;
  while (idEnd > start && value.charCodeAt(idEnd - 1) === 32) idEnd--;
  const id = value.slice(start + name.length + 1, idEnd);
  let deleting = id === '' || id === 'deleted';
  if (!deleting && semi !== -1) {
    const attrs = value.slice(semi + 1).toLowerCase();
    const maxAge = /(?:^|;)\s*max-age\s*=\s*(-?\d+)/.exec(attrs);
    if (maxAge !== null) {
      deleting = Number(maxAge[1]) <= 0; // Max-Age wins over Expires (RFC 6265 5.3)
    } else {
      const expires = /(?:^|;)\s*expires\s*=\s*([^;]+)/.exec(attrs);
      if (expires !== null) {
        const t = Date.parse(expires[1]!.trim());
        if (!Number.isNaN(t) && t <= now) deleting = true;
      }
    }
  }
  if (!isValidSessionId(id, rules)) {
    // "deleted" or an empty value: a deletion without a usable id (the request's id is meant).
    return deleting ? { kind: 'delete', id: '' } : { kind: 'invalid' };
  }
  return deleting ? { kind: 'delete', id } : { kind: 'set', id };
}

/**
 * `source` mode: the "session id" of a client is its address cut to a prefix (`ipv4` / `ipv6`
 * bits), written canonically with the prefix length: `192.0.2.0/24`, `2001:db8:0:0:0:0:0:0/64`,
 * `192.0.2.7/32`. The same client (or prefix) gives the same string whatever form its address
 * came in (IPv6 compressed or not, upper or lower case, a zone). The `/` keeps it apart from any
 * PHP session id. Like a session id it only ever leaves the process through the keyed hash of
 * the store key. Null when `address` is not an IP address (the connection is then balanced
 * normally).
 */
export function sourceSessionId(address: string, mask: { readonly ipv4: number; readonly ipv6: number }): string | null {
  const v4 = parseIpv4(address);
  if (v4 !== null) {
    const bits = mask.ipv4;
    const masked = bits >= 32 ? v4 : (v4 & (~0 << (32 - bits))) >>> 0;
    return `${masked >>> 24}.${(masked >>> 16) & 255}.${(masked >>> 8) & 255}.${masked & 255}/${bits}`;
  }
  const v6 = parseIpv6(address);
  if (v6 === null) return null;
  const bits = mask.ipv6;
  let out = '';
  for (let i = 0; i < 8; i++) {
    const keep = Math.max(0, Math.min(16, bits - i * 16));
    const group = keep === 0 ? 0 : v6[i]! & ((0xffff << (16 - keep)) & 0xffff);
    out += (i === 0 ? '' : ':') + group.toString(16);
  }
  return `${out}/${bits}`;
}

/** Dotted-quad IPv4 as an unsigned 32-bit number, or null. */
function parseIpv4(s: string): number | null {
  let value = 0;
  let part = -1;
  let parts = 0;
  for (let i = 0; i <= s.length; i++) {
    const c = i < s.length ? s.charCodeAt(i) : 46;
    if (c === 46 /* . */) {
      if (part < 0 || ++parts > 4) return null;
      value = value * 256 + part;
      part = -1;
    } else if (c >= 48 && c <= 57) {
      part = (part < 0 ? 0 : part * 10) + c - 48;
      if (part > 255) return null;
    } else {
      return null;
    }
  }
  return parts === 4 ? value : null;
}

/** IPv6 text (`::` compression, an IPv4 tail, a `%zone` ignored) as eight 16-bit groups, or null. */
function parseIpv6(text: string): number[] | null {
  const zone = text.indexOf('%');
  const s = zone >= 0 ? text.slice(0, zone) : text;
  if (s.length < 2 || s.length > 45) return null;
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const groupsOf = (part: string, last: boolean): number[] | null => {
    if (part === '') return [];
    const out: number[] = [];
    const fields = part.split(':');
    for (let i = 0; i < fields.length; i++) {
      const f = fields[i]!;
      if (last && i === fields.length - 1 && f.includes('.')) {
        const v4 = parseIpv4(f);
        if (v4 === null) return null;
        out.push(v4 >>> 16, v4 & 0xffff);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(f)) return null;
        out.push(parseInt(f, 16));
      }
    }
    return out;
  };
  const head = groupsOf(halves[0]!, halves.length === 1);
  const tail = halves.length === 2 ? groupsOf(halves[1]!, true) : [];
  if (head === null || tail === null) return null;
  if (halves.length === 1) return head.length === 8 ? head : null;
  const fill = 8 - head.length - tail.length;
  if (fill < 1) return null;
  return [...head, ...new Array<number>(fill).fill(0), ...tail];
}
