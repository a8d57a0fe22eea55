/**
 * Response compression (nginx gzip, ngx_brotli): which responses qualify, which coding the
 * client's Accept-Encoding chooses, and the header changes. forward.ts runs the zlib streams
 * (or a one-shot compression of a whole small body).
 *
 * As nginx's gzip header filter: only 200, 403 and 404 responses (so never 206, 204, 304, 1xx,
 * upgrades), with a body (not HEAD), without a Content-Encoding, of a listed type, not shorter than
 * the min length when the length is known; a request with Via is compressed only as gzipProxied
 * allows. Beyond nginx: never with "Cache-Control: no-transform" (RFC 9110 7.7) or a Content-Range.
 */
import { constants, createBrotliCompress, createGzip, brotliCompress, brotliCompressSync, gzip, gzipSync, type BrotliOptions } from 'node:zlib';
import type { Transform } from 'node:stream';
import type { IncomingMessage } from 'node:http';
import type { CompressionCoding, CompressionConfig } from '../../config/model.js';

export type Coding = 'gzip' | 'br';

/** nginx gzip_proxied flags (as config/compression.ts). */
const P_OFF = 0x0002, P_EXPIRED = 0x0004, P_NO_CACHE = 0x0008, P_NO_STORE = 0x0010, P_PRIVATE = 0x0020,
  P_NO_LM = 0x0040, P_NO_ETAG = 0x0080, P_AUTH = 0x0100, P_ANY = 0x0200;

/**
 * The q-value the Accept-Encoding header gives `coding` (RFC 9110 12.5.3): its own entry, else "*",
 * else 0 (not acceptable). Malformed q-values count as 0.
 */
export function acceptQ(header: string, coding: string): number {
  let star = -1;
  for (const part of header.split(',')) {
    const semi = part.indexOf(';');
    const name = (semi < 0 ? part : part.slice(0, semi)).trim().toLowerCase();
    if (name !== coding && name !== '*' && !(coding === 'gzip' && name === 'x-gzip')) continue;
    let q = 1;
    if (semi >= 0) {
      const m = /(?:^|;)\s*q\s*=\s*([0-9.]+)\s*(?:;|$)/i.exec(part.slice(semi));
      if (m !== null) {
        q = /^(0(\.\d{0,3})?|1(\.0{0,3})?)$/.test(m[1]!) ? Number(m[1]) : 0;
      }
    }
    if (name === '*') star = q;
    else return q;
  }
  return star < 0 ? 0 : star;
}

/**
 * The coding for a client's Accept-Encoding among those enabled: the higher q wins, br on a tie;
 * q=0 refuses. `identity;q=0` with nothing else acceptable still gets the identity (no 406, as nginx).
 */
export function chooseCoding(header: string | undefined, gzipOn: boolean, brotliOn: boolean): Coding | null {
  if (header === undefined || header.length === 0) return null;
  const br = brotliOn ? acceptQ(header, 'br') : 0;
  const gz = gzipOn ? acceptQ(header, 'gzip') : 0;
  if (br === 0 && gz === 0) return null;
  return br >= gz ? 'br' : 'gzip';
}

function header(headers: readonly string[], lower: string): string | undefined {
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i]!.length === lower.length && headers[i]!.toLowerCase() === lower) return headers[i + 1];
  }
  return undefined;
}

function remove(headers: string[], lower: string): void {
  for (let i = headers.length - 2; i >= 0; i -= 2) {
    if (headers[i]!.toLowerCase() === lower) headers.splice(i, 2);
  }
}

function hasToken(value: string | undefined, token: string): boolean {
  if (value === undefined) return false;
  return value.toLowerCase().split(',').some((t) => t.trim().split('=')[0] === token);
}

/** nginx ngx_http_test_content_type: the type up to ";", lower case, in the list (or "*"). */
function typeListed(c: CompressionCoding, contentType: string | undefined): boolean {
  if (c.anyType) return true;
  if (contentType === undefined) return false;
  const semi = contentType.indexOf(';');
  return c.types.has((semi < 0 ? contentType : contentType.slice(0, semi)).trim().toLowerCase());
}

function eligible(c: CompressionCoding | null, contentType: string | undefined, length: number): boolean {
  return c !== null && typeListed(c, contentType) && (length < 0 || length >= c.minLength);
}

/** nginx ngx_http_gzip_ok's gzip_proxied part, for a request with Via. */
function proxiedAllows(p: number, req: IncomingMessage, headers: readonly string[]): boolean {
  if ((p & P_OFF) !== 0) return false;
  if ((p & P_ANY) !== 0) return true;
  if ((p & P_AUTH) !== 0 && req.headers.authorization !== undefined) return true;
  const expires = header(headers, 'expires');
  if (expires !== undefined) {
    if ((p & P_EXPIRED) === 0) return false;
    const e = Date.parse(expires);
    if (Number.isNaN(e)) return false;
    const dateText = header(headers, 'date');
    const d = dateText === undefined ? Date.now() : Date.parse(dateText);
    return e < d;
  }
  const cc = header(headers, 'cache-control');
  if (cc !== undefined) {
    return ((p & P_NO_CACHE) !== 0 && hasToken(cc, 'no-cache')) || ((p & P_NO_STORE) !== 0 && hasToken(cc, 'no-store'))
      || ((p & P_PRIVATE) !== 0 && hasToken(cc, 'private'));
  }
  if ((p & P_NO_LM) !== 0 && header(headers, 'last-modified') !== undefined) return false;
  if ((p & P_NO_ETAG) !== 0 && header(headers, 'etag') !== undefined) return false;
  return true;
}

/**
 * Decides whether this response is compressed and, if so, rewrites `headers` for it (Content-Encoding,
 * no Content-Length nor Accept-Ranges, a weak ETag, Vary when configured). `length`: the body's
 * length when known, else -1. Returns the coding and its settings, or null (headers then get only Vary).
 */
export function prepareCompression(
  config: CompressionConfig, req: IncomingMessage, status: number, headers: string[], length: number,
): { coding: Coding; settings: CompressionCoding } | null {
  if ((status !== 200 && status !== 403 && status !== 404) || req.method === 'HEAD') return null;
  const ce = header(headers, 'content-encoding');
  if (ce !== undefined && ce.length > 0) return null;
  const type = header(headers, 'content-type');
  const gzipOk = eligible(config.gzip, type, length);
  const brOk = eligible(config.brotli, type, length);
  if (!gzipOk && !brOk) return null;
  if (hasToken(header(headers, 'cache-control'), 'no-transform') || header(headers, 'content-range') !== undefined) return null;
  // nginx adds Vary to every response that qualifies, whatever the client accepts (caches must know).
  if (config.vary) headers.push('Vary', 'Accept-Encoding');
  const coding = chooseCoding(req.headers['accept-encoding'], gzipOk, brOk);
  if (coding === null) return null;
  if (req.headers.via !== undefined && !proxiedAllows(config.proxied, req, headers)) return null;
  remove(headers, 'content-length');
  remove(headers, 'accept-ranges');
  // nginx ngx_http_weak_etag: a strong ETag becomes weak, a malformed one is dropped.
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i]!.toLowerCase() !== 'etag') continue;
    const v = headers[i + 1]!;
    if (v.startsWith('"')) headers[i + 1] = 'W/' + v;
    else if (!v.startsWith('W/')) { headers.splice(i, 2); i -= 2; }
  }
  headers.push('Content-Encoding', coding);
  return { coding, settings: coding === 'gzip' ? config.gzip! : config.brotli! };
}

function brotliOptions(level: number, size: number): BrotliOptions {
  const params: Record<number, number> = { [constants.BROTLI_PARAM_QUALITY]: level, [constants.BROTLI_PARAM_MODE]: constants.BROTLI_MODE_TEXT };
  if (size >= 0) params[constants.BROTLI_PARAM_SIZE_HINT] = size;
  return { params };
}

/** A compressing stream for a streamed body. */
export function compressStream(coding: Coding, level: number): Transform {
  return coding === 'gzip' ? createGzip({ level }) : createBrotliCompress(brotliOptions(level, -1));
}

/**
 * Bodies up to this size are compressed on the main thread, as nginx does in its worker, at the
 * levels where that stays short: a zlib call through the thread pool costs 250-450 us more CPU
 * than the compression itself (20 KiB at gzip level 1: about 107 us in one synchronous call,
 * 360-440 us through the pool). 32 KiB at gzip 6 or brotli 4 holds the event loop for about
 * 0.3-0.5 ms; higher levels (brotli 9: ~17 ms, 11: ~60 ms) and larger bodies go to the pool.
 */
const SYNC_MAX_BYTES = 32 * 1024;
const SYNC_MAX_GZIP_LEVEL = 6;
const SYNC_MAX_BROTLI_LEVEL = 4;

/** Compresses a whole body: small ones here (see SYNC_MAX_BYTES), others in zlib's thread pool; `done` is called asynchronously either way. */
export function compressWhole(coding: Coding, level: number, body: Buffer, done: (err: Error | null, out: Buffer) => void): void {
  if (body.length <= SYNC_MAX_BYTES && level <= (coding === 'gzip' ? SYNC_MAX_GZIP_LEVEL : SYNC_MAX_BROTLI_LEVEL)) {
    let out: Buffer;
    try {
      out = coding === 'gzip' ? gzipSync(body, { level }) : brotliCompressSync(body, brotliOptions(level, body.length));
    } catch (err) {
      process.nextTick(done, err as Error, body);
      return;
    }
    process.nextTick(done, null, out);
    return;
  }
  if (coding === 'gzip') gzip(body, { level }, done);
  else brotliCompress(body, brotliOptions(level, body.length), done);
}
