/**
 * Header rules (src/proxy/http/headers.ts) with names in any letter case. The copy loops skip
 * lower-casing names that cannot be special (a per-request saving); these properties pin
 * that the shortcut never lets a hop-by-hop or replaced header through.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { clientResponseHeaders, requestHeadStatus, upstreamRequestHeaders, type ForwardInfo } from '../src/proxy/http/headers.js';

const HOP = ['connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-connection', 'proxy-authorization', 'proxy-authenticate', 'proxy-x'];
const REPLACED = ['content-length', 'x-forwarded-for', 'x-real-ip', 'x-forwarded-proto', 'x-forwarded-host', 'expect'];
const ORDINARY = ['accept', 'cookie', 'user-agent', 'content-type', 'date', 'server', 'pragma', 'tk', 'hostx', 'x-custom', 'etag', 'vary', 'location'];

/** A name with each letter upper- or lower-cased by the bits of `mask`. */
function mixCase(name: string, mask: number): string {
  let out = '';
  for (let i = 0; i < name.length; i++) out += (mask >> (i % 30)) & 1 ? name[i]!.toUpperCase() : name[i]!;
  return out;
}

const header = fc.tuple(fc.constantFrom(...HOP, ...REPLACED, ...ORDINARY, 'host'), fc.integer({ min: 0, max: 2 ** 30 - 1 }), fc.constantFrom('v', 'close', 'x-custom, Cookie'));
const info: ForwardInfo = { remoteAddress: '192.0.2.1', scheme: 'http', bodyFraming: null, upgrade: null, proxyHost: 'up' };

function names(flat: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < flat.length; i += 2) out.push(flat[i]!.toLowerCase());
  return out;
}

describe('header rules in any letter case', () => {
  it('upstream requests never carry hop-by-hop headers, nor client copies of the replaced ones', () => {
    fc.assert(fc.property(fc.array(header, { maxLength: 12 }), (hs) => {
      const raw = hs.flatMap(([n, mask, v]) => [mixCase(n, mask), v]);
      const out = upstreamRequestHeaders(raw, info, new Map());
      const lower = names(out);
      for (const n of HOP) expect(lower).not.toContain(n);
      for (const n of ['x-real-ip', 'x-forwarded-proto', 'expect', 'content-length']) {
        expect(lower.filter((x) => x === n).length).toBe(n === 'x-real-ip' || n === 'x-forwarded-proto' ? 1 : 0);
      }
      // Every ordinary header is passed on as it came (name case and order kept).
      const ordinaryIn = raw.filter((_, i) => i % 2 === 0 && ORDINARY.includes(raw[i]!.toLowerCase()));
      const ordinaryOut = out.filter((_, i) => i % 2 === 0 && ORDINARY.includes(out[i]!.toLowerCase()));
      // A Connection header may name an ordinary header (x-custom, cookie): those are dropped too.
      const named = new Set(hs.filter(([n]) => n === 'connection').flatMap(([, , v]) => v.split(',').map((t) => t.trim().toLowerCase())));
      expect(ordinaryOut).toEqual(ordinaryIn.filter((n) => !named.has(n.toLowerCase())));
    }), { numRuns: 500 });
  });

  it('client responses never carry hop-by-hop headers; everything else passes unchanged', () => {
    fc.assert(fc.property(fc.array(header, { maxLength: 12 }), (hs) => {
      const raw = hs.flatMap(([n, mask, v]) => [mixCase(n, mask), v]);
      const out = clientResponseHeaders(raw, false);
      const named = new Set(hs.filter(([n]) => n === 'connection').flatMap(([, , v]) => v.split(',').map((t) => t.trim().toLowerCase())));
      const expected: string[] = [];
      for (let i = 0; i < raw.length; i += 2) {
        const l = raw[i]!.toLowerCase();
        if (HOP.includes(l) || l.startsWith('proxy-') || named.has(l)) continue;
        expected.push(raw[i]!, raw[i + 1]!);
      }
      expect(out).toEqual(expected);
    }), { numRuns: 500 });
  });

  it('a duplicate Host is found in any letter case', () => {
    const limits = { bufferSize: 8192, total: 32768 };
    expect(requestHeadStatus('GET', '/', ['HOST', 'a', 'hOsT', 'b'], limits, true)).toBe(400);
    expect(requestHeadStatus('GET', '/', ['Host', 'a', 'Hosts', 'b', 'Ghost', 'c'], limits, true)).toBe(0);
  });
});
