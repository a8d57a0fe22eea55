/**
 * IP address text to numbers, without allocating: dotted IPv4 and IPv6 (with "::" and an IPv4
 * tail). Used by allow/deny rules and nginx's $binary_remote_addr.
 */

const GROUPS = new Uint16Array(8);

/** Parses dotted IPv4 text[start, end) into a number; -1 when it is not one. */
export function parseV4(text: string, start: number, end: number): number {
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

/** Parses IPv6 text into `out` (4 words, network order; zone id ignored); false when it is not one. */
export function parseV6(text: string, out: Uint32Array): boolean {
  let end = text.indexOf('%');
  if (end < 0) end = text.length;
  let n = 0; // groups written
  let gap = -1; // index in GROUPS where "::" was
  let i = 0;
  if (text.charCodeAt(0) === 58) {
    if (text.charCodeAt(1) !== 58) return false;
    gap = 0;
    i = 2;
    if (i === end) { GROUPS.fill(0); out.fill(0); return true; }
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
  for (let k = 0; k < 4; k++) out[k] = GROUPS[2 * k]! * 65536 + GROUPS[2 * k + 1]!;
  return true;
}

const WORDS = new Uint32Array(4);

/**
 * nginx $binary_remote_addr: the address as raw bytes, one character per byte (4 for IPv4, 16 for
 * IPv6); "" for anything else (a unix socket has no address).
 */
export function binaryAddress(address: string): string {
  const v4 = parseV4(address, 0, address.length);
  if (v4 >= 0) return String.fromCharCode(v4 >>> 24, (v4 >>> 16) & 255, (v4 >>> 8) & 255, v4 & 255);
  if (!parseV6(address, WORDS)) return '';
  let out = '';
  for (let k = 0; k < 4; k++) {
    const w = WORDS[k]!;
    out += String.fromCharCode(w >>> 24, (w >>> 16) & 255, (w >>> 8) & 255, w & 255);
  }
  return out;
}
