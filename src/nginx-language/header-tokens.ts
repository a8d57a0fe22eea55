/** Header names and tokens as HTTP compares them: ASCII case-insensitive. */

/**
 * `s` equals `lower` ignoring ASCII letter case (`lower` in lower case, starting with a letter):
 * header names and the few token values the proxy acts on. Length and first letter are compared
 * before any lower-casing, so other fields cost no allocation.
 */
export function equalsLower(s: string, lower: string): boolean {
  return s.length === lower.length
    && (s === lower || ((s.charCodeAt(0) | 0x20) === lower.charCodeAt(0) && s.toLowerCase() === lower));
}
