/**
 * The directives nginx takes alike in `http`, `server` and `location` and that sessionlb writes
 * at the same level: `allow`/`deny` and `auth_basic*` (access-settings.ts), `add_header` and its
 * kin (header-settings.ts), `gzip*`/`brotli*` (compression-settings.ts). One `LevelSettings` per
 * block collects them while its directives are read, then writes them into that level's JSON.
 */
import type { Conversion } from './conversion.js';
import type { NginxDirective } from './tokenizer.js';
import { accessDirective, isAccessDirective, writeAccess, type AccessScope } from './access-settings.js';
import { headerDirective, isHeaderDirective, writeHeaders, type HeaderScope } from './header-settings.js';
import { compressionDirective, isCompressionDirective, writeCompression, type CompressionScope } from './compression-settings.js';

export class LevelSettings {
  readonly access: AccessScope = {};
  readonly headers: HeaderScope = {};
  readonly compression: CompressionScope = {};

  constructor(private readonly level: 'http' | 'server' | 'location') {}

  /** Takes `d` when it is one of these directives (true); false: the caller handles it. */
  take(c: Conversion, d: NginxDirective): boolean {
    if (isHeaderDirective(d, this.level)) headerDirective(c, d, this.headers);
    else if (isAccessDirective(d)) accessDirective(c, d, this.access);
    else if (isCompressionDirective(d)) compressionDirective(c, d, this.compression);
    else return false;
    return true;
  }

  /** Writes what was taken into `out`, the level's JSON object. */
  writeTo(out: object): void {
    const o = out as Record<string, unknown>;
    writeAccess(this.access, o);
    writeHeaders(this.headers, o);
    writeCompression(this.compression, o);
  }
}
