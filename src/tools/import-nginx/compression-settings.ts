/**
 * nginx gzip directives (ngx_http_gzip_module) and ngx_brotli's brotli directives, at http, server
 * and location level -> the `gzip*` / `brotli*` keys at the same level (sessionlb takes each key
 * from the nearest level, as nginx).
 */
import type { RawCompression } from '../../config/schema.js';
import { GZIP_PROXIED } from '../../config/compression-schema.js';
import { nginxSize } from './values.js';
import type { Conversion, Mutable } from './conversion.js';
import type { NginxDirective } from './tokenizer.js';

export type CompressionScope = Mutable<RawCompression>;

/** Directives of the gzip module sessionlb has no setting for (warned, ignored). */
const IGNORED = new Set(['gzip_buffers', 'gzip_http_version', 'gzip_disable', 'gzip_static', 'gunzip', 'gzip_window', 'gzip_hash', 'gzip_no_buffer',
  'brotli_static', 'brotli_buffers', 'brotli_window']);
const KEYS = ['gzip', 'gzipTypes', 'gzipMinLength', 'gzipCompLevel', 'gzipProxied', 'gzipVary', 'brotli', 'brotliTypes', 'brotliCompLevel', 'brotliMinLength'] as const;

export function isCompressionDirective(d: NginxDirective): boolean {
  return d.block === null && (d.name.startsWith('gzip') || d.name.startsWith('brotli') || d.name === 'gunzip');
}

function onOff(c: Conversion, d: NginxDirective, set: (v: boolean) => void): void {
  const a = d.args[0];
  if (d.args.length !== 1 || (a !== 'on' && a !== 'off')) c.error(d.line, `"${d.name}": must be "on" or "off"`);
  else set(a === 'on');
}

function level(c: Conversion, d: NginxDirective, max: number, set: (v: number) => void): void {
  const a = d.args[0] ?? '';
  if (d.args.length !== 1 || !/^\d+$/.test(a) || Number(a) > max) c.error(d.line, `"${d.name}": must be a level from 0 to ${max}`);
  else set(Number(a));
}

function types(d: NginxDirective): string[] {
  return d.args.filter((t) => t.toLowerCase() !== 'text/html');
}

/** One compression directive of a level into `scope`. */
export function compressionDirective(c: Conversion, d: NginxDirective, scope: CompressionScope): void {
  switch (d.name) {
    case 'gzip': onOff(c, d, (v) => { scope.gzip = v; }); return;
    case 'brotli': onOff(c, d, (v) => { scope.brotli = v; }); return;
    case 'gzip_vary': onOff(c, d, (v) => { scope.gzipVary = v; }); return;
    case 'gzip_types': scope.gzipTypes = types(d); return;
    case 'brotli_types': scope.brotliTypes = types(d); return;
    case 'gzip_comp_level': level(c, d, 9, (v) => { scope.gzipCompLevel = v; }); return;
    case 'brotli_comp_level': level(c, d, 11, (v) => { scope.brotliCompLevel = v; }); return;
    case 'gzip_min_length':
    case 'brotli_min_length': {
      const v = d.args.length === 1 ? nginxSize(d.args[0]!) : null;
      if (v === null) c.error(d.line, `"${d.name}": "${d.args.join(' ')}" is not a size such as "1000" or "1k"`);
      else if (d.name === 'gzip_min_length') scope.gzipMinLength = v;
      else scope.brotliMinLength = v;
      return;
    }
    case 'gzip_proxied': {
      const bad = d.args.filter((a) => !(GZIP_PROXIED as readonly string[]).includes(a));
      if (d.args.length === 0 || bad.length > 0) c.error(d.line, `"gzip_proxied": invalid value "${bad[0] ?? ''}"`);
      else scope.gzipProxied = d.args as (typeof GZIP_PROXIED)[number][];
      return;
    }
    default:
      if (IGNORED.has(d.name)) c.warn(d.line, `"${d.name}" is not supported by sessionlb; ignored`);
      else c.warn(d.line, `"${d.name}" is not a known compression directive; ignored`);
  }
}

/** `scope`'s keys on the output object of its level. */
export function writeCompression(scope: CompressionScope, out: Record<string, unknown>): void {
  for (const k of KEYS) if (scope[k] !== undefined) out[k] = scope[k];
}
