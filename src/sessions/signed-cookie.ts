/**
 * `sticky: {mode: "cookie"}` (HAProxy `cookie insert indirect nocache`): sessionlb's own
 * cookie names the server by an opaque id (never its address) and is signed, so a
 * client can neither forge a cookie that pins it to a server of its choice nor keep
 * using one for a server that was removed or after it expired.
 *
 * Value: `<sid>.<t>.<sig>`
 *   sid = first 12 chars of base64url(HMAC-SHA256(key, "sid" NUL upstream NUL server))
 *   t   = issue time, seconds since epoch, base 36 (the cookie is stale after `ttl` unused)
 *   sig = first 22 chars of base64url(HMAC-SHA256(key, upstream NUL sid "." t))
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export type CookieCheck =
  | { ok: true; sid: string; issuedAt: number }
  | { ok: false; reason: 'forged' | 'stale' };

const SID_LENGTH = 12;
const SIG_LENGTH = 22;
const B64URL = /^[A-Za-z0-9_-]+$/;
const BASE36 = /^[0-9a-z]{1,10}$/;

export class CookieSigner {
  constructor(private readonly key: string, private readonly upstream: string) {}

  /** The opaque id of a server (stable for a key, upstream and server name). */
  serverId(server: string): string {
    return createHmac('sha256', this.key).update('sid\0').update(this.upstream).update('\0').update(server)
      .digest('base64url').slice(0, SID_LENGTH);
  }

  private signature(sid: string, t: string): string {
    return createHmac('sha256', this.key).update(this.upstream).update('\0').update(sid).update('.').update(t)
      .digest('base64url').slice(0, SIG_LENGTH);
  }

  /** A cookie value for server id `sid` issued at `now` (ms). */
  value(sid: string, now: number): string {
    const t = Math.floor(now / 1000).toString(36);
    return `${sid}.${t}.${this.signature(sid, t)}`;
  }

  /** Checks a cookie value: a well-formed, correctly signed value not older than `ttlMs`. */
  check(value: string, now: number, ttlMs: number): CookieCheck {
    if (value.length > 64) return { ok: false, reason: 'forged' };
    const a = value.indexOf('.');
    const b = a === -1 ? -1 : value.indexOf('.', a + 1);
    if (a !== SID_LENGTH || b === -1 || value.length - b - 1 !== SIG_LENGTH) return { ok: false, reason: 'forged' };
    const sid = value.slice(0, a);
    const t = value.slice(a + 1, b);
    const sig = value.slice(b + 1);
    if (!B64URL.test(sid) || !BASE36.test(t) || !B64URL.test(sig)) return { ok: false, reason: 'forged' };
    const expected = this.signature(sid, t);
    if (!timingSafeEqual(Buffer.from(sig, 'latin1'), Buffer.from(expected, 'latin1'))) return { ok: false, reason: 'forged' };
    const issuedAt = parseInt(t, 36) * 1000;
    // A little tolerance for clocks of several instances being slightly apart.
    if (issuedAt > now + 60_000 || now - issuedAt > ttlMs) return { ok: false, reason: 'stale' };
    return { ok: true, sid, issuedAt };
  }
}

/** The Set-Cookie value for sessionlb's own cookie. */
export function ownCookieHeader(name: string, value: string, secure: boolean): string {
  return `${name}=${value}; Path=/; HttpOnly; SameSite=Lax${secure ? '; Secure' : ''}`;
}

/**
 * Removes cookie `name` from Cookie header values in a flat [name, value, ...] header list
 * (HAProxy `indirect`: the backend never sees sessionlb's cookie). Drops the header if empty.
 */
export function stripCookie(headers: string[], name: string): void {
  for (let i = headers.length - 2; i >= 0; i -= 2) {
    const h = headers[i]!;
    if (h.length !== 6 || h.toLowerCase() !== 'cookie') continue;
    const value = headers[i + 1]!;
    if (!value.includes(name)) continue;
    const kept: string[] = [];
    for (const part of value.split(';')) {
      const p = part.trim();
      if (p === '') continue;
      if (p.startsWith(name) && p.charCodeAt(name.length) === 61) continue;
      kept.push(p);
    }
    if (kept.length === 0) headers.splice(i, 2);
    else headers[i + 1] = kept.join('; ');
  }
}
