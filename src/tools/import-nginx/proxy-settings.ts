/**
 * nginx's proxy_* directives of http, server and location blocks: inherited http -> server ->
 * location (ProxyScope), and the proxy_set_header list a location ends up with.
 */
import { NEXT_UPSTREAM_CONDITIONS } from '../../config/schema.js';
import type { NginxDirective } from './tokenizer.js';
import type { Conversion, ProxyScope, Sourced } from './conversion.js';
import { isInt, nginxDuration } from './values.js';

const NEXT_UPSTREAM = new Set<string>(NEXT_UPSTREAM_CONDITIONS);

/**
 * nginx idioms that only restate what sessionlb does by itself (`proxy_set_header Host $host`,
 * X-Forwarded-*, the websocket Connection/Upgrade pair): converting them is not needed.
 */
function headerIsDefault(name: string, value: string): boolean {
  const n = name.toLowerCase();
  const v = value.trim();
  switch (n) {
    case 'host': return v === '$host' || v === '$http_host';
    case 'x-real-ip': return v === '$remote_addr';
    case 'x-forwarded-for': return v === '$proxy_add_x_forwarded_for';
    case 'x-forwarded-proto': return v === '$scheme';
    case 'x-forwarded-host': return v === '$host' || v === '$http_host';
    // Hop-by-hop: sessionlb strips them and passes websocket upgrades on its own.
    case 'connection': return v === '' || v === 'upgrade' || v === '$connection_upgrade' || v === 'keep-alive' || v === 'close';
    case 'upgrade': return v === '$http_upgrade';
    default: return false;
  }
}

export function isProxyDirective(d: NginxDirective): boolean {
  return d.block === null && (d.name === 'proxy_set_header' || d.name === 'proxy_next_upstream'
    || d.name === 'proxy_next_upstream_tries' || d.name === 'proxy_next_upstream_timeout'
    || d.name === 'proxy_connect_timeout' || d.name === 'proxy_send_timeout' || d.name === 'proxy_read_timeout'
    || d.name === 'proxy_http_version');
}

/** Records an inheritable proxy_* directive into `scope` (the scope of the block it is in). */
export function proxyDirective(c: Conversion, d: NginxDirective, scope: ProxyScope): void {
  if (!isProxyDirective(d)) return;
  const timeout = (key: 'connect' | 'send' | 'read' | 'nextTimeout'): void => {
    const a = c.oneArg(d);
    if (a === null) return;
    const v = nginxDuration(a);
    if (v === null) c.error(d.line, `"${d.name}": "${a}" is not a time such as "500ms", "10s" or "1m"`);
    else scope[key] = { value: v, line: d.line };
  };
  switch (d.name) {
    case 'proxy_set_header': {
      if (d.args.length !== 2) {
        c.error(d.line, `invalid number of arguments in "proxy_set_header" directive (expected a name and a value)`);
        return;
      }
      // `scope` holds only this level's directives: they add up; the parent's list is replaced.
      const list = scope.setHeaders?.value ?? [];
      list.push([d.args[0]!, d.args[1]!, d.line]);
      scope.setHeaders = { value: list, line: list[0]![2] };
      return;
    }
    case 'proxy_next_upstream': {
      const on: string[] = [];
      for (const cond of d.args) {
        if (NEXT_UPSTREAM.has(cond)) on.push(cond);
        else c.warn(d.line, `"proxy_next_upstream ${cond}" is not supported by sessionlb; that condition is ignored`);
      }
      if (on.length === 0) {
        if (d.args.length === 0) c.error(d.line, 'invalid number of arguments in "proxy_next_upstream" directive');
        return;
      }
      scope.nextUpstream = { value: on, line: d.line };
      return;
    }
    case 'proxy_next_upstream_tries': {
      const a = c.oneArg(d);
      if (a === null) return;
      if (!isInt(a)) c.error(d.line, `"proxy_next_upstream_tries": "${a}" is not a number`);
      else scope.tries = { value: Number(a), line: d.line };
      return;
    }
    case 'proxy_next_upstream_timeout': timeout('nextTimeout'); return;
    case 'proxy_connect_timeout': timeout('connect'); return;
    case 'proxy_send_timeout': timeout('send'); return;
    case 'proxy_read_timeout': timeout('read'); return;
    case 'proxy_http_version':
      if (d.args[0] !== '1.1') c.warn(d.line, `"proxy_http_version ${d.args.join(' ')}": sessionlb always speaks HTTP/1.1 to upstreams; ignored`);
      return;
  }
}

/** The scope of a block: its parent's settings overridden by its own proxy_* directives. */
export function childScope(c: Conversion, parent: ProxyScope, block: NginxDirective[]): ProxyScope {
  const own: ProxyScope = {};
  for (const d of block) proxyDirective(c, d, own);
  const scope: ProxyScope = { ...parent };
  for (const [k, v] of Object.entries(own) as Array<[keyof ProxyScope, Sourced<never>]>) scope[k] = v;
  return scope;
}

/**
 * A location's proxySetHeader from the proxy_set_header list of its scope, leaving out what sessionlb
 * does by itself; null when nothing is left.
 */
export function proxySetHeaders(c: Conversion, scope: ProxyScope, target: string, where: string, locLine: number): Record<string, string> | null {
  const out: Record<string, string> = {};
  let hasHost = false;
  for (const [name, value, line] of scope.setHeaders?.value ?? []) {
    if (name.toLowerCase() === 'host') hasHost = true;
    if (headerIsDefault(name, value)) continue;
    if (name.toLowerCase() === 'host' && value === '$proxy_host') {
      out[name] = target;
    } else if (!value.includes('$')) {
      out[name] = value;
    } else if (!c.headerWarned.has(line)) {
      // Once per directive, even when many locations inherit it.
      c.headerWarned.add(line);
      c.warn(line, `proxy_set_header ${name} "${value}": variables are not supported in sessionlb's proxySetHeader; not converted (${where})`);
    }
  }
  if (!hasHost && !c.hostNoteGiven) {
    c.hostNoteGiven = true;
    c.notes.push({ line: locLine, message: `nginx sends "Host: ${target}" ($proxy_host) upstream unless told "proxy_set_header Host $host"; sessionlb keeps the client's Host (set proxySetHeader {"Host": "${target}"} for the old behaviour)` });
  }
  return Object.keys(out).length > 0 ? out : null;
}
