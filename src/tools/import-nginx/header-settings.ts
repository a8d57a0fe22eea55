/**
 * nginx `add_header NAME VALUE [always]`, `proxy_hide_header NAME` (http, server, location) and
 * `ignore_invalid_headers on|off` (http, server) -> `addHeader`, `proxyHideHeader`,
 * `ignoreInvalidHeaders` at the same level (sessionlb inherits the first two as nginx does: a
 * level that sets any replaces its parent's).
 */
import { compileTemplate } from '../../nginx-language/variables.js';
import type { Conversion } from './conversion.js';
import type { NginxDirective } from './tokenizer.js';

/** What one level's header directives give, in the order written. */
export interface HeaderScope {
  addHeader?: Record<string, string | { value: string; always: true }>;
  proxyHideHeader?: string[];
  ignoreInvalidHeaders?: boolean;
}

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Whether `d` is one of the directives this file handles (`ignore_invalid_headers` only where nginx allows it). */
export function isHeaderDirective(d: NginxDirective, level: 'http' | 'server' | 'location'): boolean {
  if (d.block !== null) return false;
  if (d.name === 'add_header' || d.name === 'proxy_hide_header') return true;
  return d.name === 'ignore_invalid_headers' && level !== 'location';
}

/** One header directive of a level into `scope`. */
export function headerDirective(c: Conversion, d: NginxDirective, scope: HeaderScope): void {
  switch (d.name) {
    case 'add_header': {
      const [name, value, flag] = d.args;
      if (name === undefined || value === undefined || d.args.length > 3 || (flag !== undefined && flag !== 'always')) {
        c.error(d.line, 'invalid parameters in "add_header" directive (expected NAME VALUE [always])');
        return;
      }
      if (!HEADER_NAME.test(name)) {
        c.warn(d.line, `"add_header ${name}": not a header name sessionlb can send; not converted`);
        return;
      }
      const compiled = compileTemplate(value, { serverName: '' });
      if (typeof compiled === 'string') {
        c.warn(d.line, `"add_header ${name}": ${compiled}; not converted`);
        return;
      }
      const headers = scope.addHeader ??= {};
      const existing = Object.keys(headers).find((k) => k.toLowerCase() === name.toLowerCase());
      if (existing !== undefined) {
        c.warn(d.line, `"add_header ${name}" a second time at this level: nginx sends both, sessionlb's addHeader one per name; this one replaces the earlier`);
        delete headers[existing];
      }
      headers[name] = flag === 'always' ? { value, always: true } : value;
      return;
    }
    case 'proxy_hide_header': {
      const name = c.oneArg(d);
      if (name === null) return;
      const list = scope.proxyHideHeader ??= [];
      if (!list.some((n) => n.toLowerCase() === name.toLowerCase())) list.push(name);
      return;
    }
    case 'ignore_invalid_headers': {
      const a = c.oneArg(d);
      if (a === null) return;
      if (a !== 'on' && a !== 'off') c.error(d.line, `"ignore_invalid_headers": "${a}" must be "on" or "off"`);
      else scope.ignoreInvalidHeaders = a === 'on';
      return;
    }
  }
}

/** `scope`'s keys on the output object of its level. */
export function writeHeaders(scope: HeaderScope, out: Record<string, unknown>): void {
  if (scope.addHeader !== undefined) out.addHeader = scope.addHeader;
  if (scope.proxyHideHeader !== undefined) out.proxyHideHeader = scope.proxyHideHeader;
  if (scope.ignoreInvalidHeaders !== undefined) out.ignoreInvalidHeaders = scope.ignoreInvalidHeaders;
}
