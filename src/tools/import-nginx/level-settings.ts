/**
 * The directives nginx takes alike in `http`, `server` and `location` and that sessionlb writes
 * at the same level: `allow`/`deny` and `auth_basic*` (access-settings.ts), `add_header` and its
 * kin (header-settings.ts), `gzip*`/`brotli*` (compression-settings.ts), `limit_req*`/`limit_conn*`
 * (limit-settings.ts) and `error_page`/`proxy_intercept_errors` (error-page-settings.ts). One
 * `LevelSettings` per block collects them while its directives are read, then writes them into
 * that level's JSON (the error pages once the server's locations are known: writePages).
 */
import type { Conversion } from './conversion.js';
import type { NginxDirective } from './tokenizer.js';
import { accessDirective, isAccessDirective, writeAccess, type AccessScope } from './access-settings.js';
import { headerDirective, isHeaderDirective, writeHeaders, type HeaderScope } from './header-settings.js';
import { compressionDirective, isCompressionDirective, writeCompression, type CompressionScope } from './compression-settings.js';
import { isLimitDirective, limitDirective, writeLimits, type LimitScope } from './limit-settings.js';
import {
  checkIntercept, errorPageDirective, isErrorPageDirective, writeErrorPages, type ErrorPageScope, type ErrorPageSite,
} from './error-page-settings.js';

export class LevelSettings {
  readonly access: AccessScope = {};
  readonly headers: HeaderScope = {};
  readonly compression: CompressionScope = {};
  readonly limits: LimitScope = {};
  readonly errorPages: ErrorPageScope = {};

  /** `parent`: the enclosing block's (a location's server, a server's http). */
  constructor(private readonly level: 'http' | 'server' | 'location', readonly parent: LevelSettings | null = null) {}

  /** Takes `d` when it is one of these directives (true); false: the caller handles it. */
  take(c: Conversion, d: NginxDirective): boolean {
    if (isHeaderDirective(d, this.level)) headerDirective(c, d, this.headers);
    else if (isAccessDirective(d)) accessDirective(c, d, this.access);
    else if (isCompressionDirective(d)) compressionDirective(c, d, this.compression);
    else if (isLimitDirective(d)) limitDirective(c, d, this.limits, this.level);
    else if (isErrorPageDirective(d)) errorPageDirective(c, d, this.errorPages);
    else return false;
    return true;
  }

  /** Writes what was taken into `out`, the level's JSON object (error pages: writePages). */
  writeTo(out: object): void {
    const o = out as Record<string, unknown>;
    writeAccess(this.access, o);
    writeHeaders(this.headers, o);
    writeCompression(this.compression, o);
    writeLimits(this.limits, o);
  }

  /**
   * A server's or location's own error_page rules into `out`, resolved in `site` (its server);
   * for a proxying location, the proxy_intercept_errors warning (proxying: true).
   */
  writePages(c: Conversion, out: object, site: ErrorPageSite, proxying = false): void {
    writeErrorPages(c, this.errorPages, out as Record<string, unknown>, site);
    if (!proxying) return;
    const chain: ErrorPageScope[] = [];
    for (let s: LevelSettings | null = this; s !== null; s = s.parent) chain.push(s.errorPages);
    checkIntercept(c, chain);
  }
}
