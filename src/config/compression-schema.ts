/**
 * The compression keys of the top level, a server and a location (nginx gzip_* and ngx_brotli's
 * brotli_*): spread into their schemas by schema.ts. Each key comes from the nearest level that
 * sets it (nginx's inheritance), resolved by compression.ts.
 */
import { z } from 'zod';
import { SIZE_PATTERN } from '../nginx-language/units.js';

export const GZIP_PROXIED = ['off', 'any', 'expired', 'no-cache', 'no-store', 'private', 'no_last_modified', 'no_etag', 'auth'] as const;

const bool = z.boolean({ error: 'must be true or false' });
const types = z.array(z.string({ error: 'must be a MIME type such as "text/css" or "*"' })
  .regex(/^(\*|[!#$%&'*+.^_`|~0-9A-Za-z-]+\/[!#$%&'*+.^_`|~0-9A-Za-z-]+)$/, { error: 'must be a MIME type such as "text/css" or "*"' }),
{ error: 'must be an array of MIME types such as ["text/css", "application/json"]' });
const minLength = z.union([
  z.number().int().min(0),
  z.string().regex(new RegExp(SIZE_PATTERN)),
], { error: 'must be a number of bytes or a size such as "1k"' });
const level = (max: number) => z.number({ error: `must be an integer from 0 to ${max}` }).int({ error: `must be an integer from 0 to ${max}` })
  .min(0, { error: `must be an integer from 0 to ${max}` }).max(max, { error: `must be an integer from 0 to ${max}` });
const proxiedValue = z.enum(GZIP_PROXIED, { error: `must be one of ${GZIP_PROXIED.map((v) => `"${v}"`).join(', ')}` });

export const compressionKeys = {
  gzip: bool.optional().describe('nginx `gzip on`: compress responses with gzip for clients whose Accept-Encoding allows it (default false)'),
  gzipTypes: types.optional().describe('nginx gzip_types: the MIME types compressed besides "text/html" (always), "*" = any (default: only "text/html")'),
  gzipMinLength: minLength.optional().describe('nginx gzip_min_length: responses whose Content-Length is below this are not compressed (default 20; an unknown length always qualifies)'),
  gzipCompLevel: level(9).optional().describe('nginx gzip_comp_level: 1 (fastest) to 9 (smallest) (default 1)'),
  gzipProxied: z.union([proxiedValue, z.array(proxiedValue, { error: 'must be an array of nginx gzip_proxied values' })]).optional()
    .describe('nginx gzip_proxied: which responses to requests with a Via header (from a proxy) are compressed: "off" (default: none), "any", or any of "expired", "no-cache", "no-store", "private", "no_last_modified", "no_etag", "auth". Also applies to brotli'),
  gzipVary: bool.optional().describe('nginx gzip_vary: add "Vary: Accept-Encoding" to responses that could be compressed (default false). Also applies to brotli'),
  brotli: bool.optional().describe('ngx_brotli `brotli on`: compress with brotli ("br") for clients whose Accept-Encoding allows it; preferred to gzip at equal q (default false)'),
  brotliTypes: types.optional().describe('ngx_brotli brotli_types: the MIME types compressed besides "text/html" (always), "*" = any (default: only "text/html")'),
  brotliCompLevel: level(11).optional().describe('ngx_brotli brotli_comp_level: 0 to 11 (default 6, as ngx_brotli)'),
  brotliMinLength: minLength.optional().describe('ngx_brotli brotli_min_length: responses whose Content-Length is below this are not compressed (default 20)'),
};
