/**
 * The compression settings of a location (nginx ngx_http_gzip_module, ngx_brotli) resolved across
 * the three levels: each key comes from the nearest level that sets it. Null when neither gzip nor
 * brotli is on, so the response path pays one null check.
 */
import { parseSize } from '../nginx-language/units.js';
import type { CompressionConfig, CompressionCoding } from './model.js';
import type { RawCompression } from './schema.js';

/** nginx gzip_proxied flags (ngx_http_core_module.c). */
export const PROXIED = {
  off: 0x0002, expired: 0x0004, 'no-cache': 0x0008, 'no-store': 0x0010, private: 0x0020,
  no_last_modified: 0x0040, no_etag: 0x0080, auth: 0x0100, any: 0x0200,
} as const;

function nearest<K extends keyof RawCompression>(levels: readonly { raw: RawCompression }[], key: K): RawCompression[K] {
  for (let i = levels.length - 1; i >= 0; i--) {
    const v = levels[i]!.raw[key];
    if (v !== undefined) return v;
  }
  return undefined;
}

function coding(on: boolean | undefined, types: readonly string[] | undefined, min: number | string | undefined, level: number): CompressionCoding | null {
  if (on !== true) return null;
  const list = (types ?? []).map((t) => t.toLowerCase());
  return {
    anyType: list.includes('*'),
    types: new Set(['text/html', ...list]),
    minLength: min === undefined ? 20 : typeof min === 'number' ? min : parseSize(min),
    level,
  };
}

/** The location's compression (levels: top, server, location), or null when gzip and brotli are both off. */
export function resolveCompression(levels: readonly { raw: RawCompression }[]): CompressionConfig | null {
  const gzip = coding(nearest(levels, 'gzip'), nearest(levels, 'gzipTypes'), nearest(levels, 'gzipMinLength'), nearest(levels, 'gzipCompLevel') ?? 1);
  const brotli = coding(nearest(levels, 'brotli'), nearest(levels, 'brotliTypes'), nearest(levels, 'brotliMinLength'), nearest(levels, 'brotliCompLevel') ?? 6);
  if (gzip === null && brotli === null) return null;
  const proxiedRaw = nearest(levels, 'gzipProxied') ?? 'off';
  let proxied = 0;
  for (const v of typeof proxiedRaw === 'string' ? [proxiedRaw] : proxiedRaw) proxied |= PROXIED[v];
  if (proxied === 0) proxied = PROXIED.off;
  return { gzip, brotli, proxied, vary: nearest(levels, 'gzipVary') ?? false };
}
