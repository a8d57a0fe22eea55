/**
 * nginx realip (`set_real_ip_from`, `real_ip_header`, `real_ip_recursive`) -> `realIp`, at the
 * level it is written: http -> top level, server -> the server. nginx merges each directive on
 * its own (a server's `real_ip_header` keeps http's `set_real_ip_from`); sessionlb's per-server
 * `realIp` replaces the top-level one whole, so a server with any of them gets the merged result.
 * In a location they are not converted (warning): sessionlb has realIp per server only.
 */
import type { RawConfig } from '../../config/schema.js';
import type { NginxDirective } from './tokenizer.js';
import type { Conversion } from './conversion.js';

/** What one level wrote. */
export interface RealIpScope {
  from?: string[];
  header?: string;
  recursive?: boolean;
  /** A directive of this level was seen. */
  seen?: boolean;
}

export type RawRealIp = NonNullable<RawConfig['realIp']>;

export function isRealIpDirective(d: NginxDirective): boolean {
  return d.name === 'set_real_ip_from' || d.name === 'real_ip_header' || d.name === 'real_ip_recursive';
}

/** Records one realip directive of a level. */
export function realIpDirective(c: Conversion, d: NginxDirective, scope: RealIpScope): void {
  if (d.args.length !== 1) {
    c.error(d.line, `invalid number of arguments in "${d.name}" directive`);
    return;
  }
  const a = d.args[0]!;
  scope.seen = true;
  switch (d.name) {
    case 'set_real_ip_from':
      if (a.startsWith('unix:')) {
        c.warn(d.line, `"set_real_ip_from ${a}": unix sockets are not supported by sessionlb; ignored`);
        return;
      }
      (scope.from ??= []).push(a);
      break;
    case 'real_ip_header':
      scope.header = a;
      break;
    case 'real_ip_recursive':
      if (a !== 'on' && a !== 'off') c.error(d.line, `"real_ip_recursive": "${a}" must be "on" or "off"`);
      else scope.recursive = a === 'on';
      break;
  }
}

/** The `realIp` a level gets (its own settings over its parent's, as nginx merges them); undefined when it has none to write. */
export function realIpFor(c: Conversion, own: RealIpScope, parent: RealIpScope | null, line: number): RawRealIp | undefined {
  if (parent !== null && own.seen !== true) return undefined; // inherits the top-level key
  const from = own.from ?? parent?.from;
  const header = own.header ?? parent?.header;
  const recursive = own.recursive ?? parent?.recursive;
  if (from === undefined) {
    if (own.seen === true) c.warn(line, '"real_ip_header"/"real_ip_recursive" without "set_real_ip_from": nginx does not use them either; ignored');
    return undefined;
  }
  return {
    from,
    ...(header !== undefined && header !== 'X-Real-IP' ? { header } : {}),
    ...(recursive === true ? { recursive: true } : {}),
  };
}

/** The http level's realip settings of a conversion (read by every server, wherever it is written). */
const HTTP_LEVEL = new WeakMap<Conversion, RealIpScope>();

/** Reads the realip directives of `http` (before its servers are converted: nginx's http settings apply to every server). */
export function httpRealIp(c: Conversion, http: readonly NginxDirective[]): RawRealIp | undefined {
  const scope: RealIpScope = {};
  for (const d of http) if (isRealIpDirective(d)) realIpDirective(c, d, scope);
  HTTP_LEVEL.set(c, scope);
  const line = http.find(isRealIpDirective)?.line ?? 0;
  return realIpFor(c, scope, null, line);
}

/** The http level's realip settings (empty when none). */
export function httpRealIpScope(c: Conversion): RealIpScope {
  return HTTP_LEVEL.get(c) ?? {};
}
