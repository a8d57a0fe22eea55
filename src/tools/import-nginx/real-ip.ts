/**
 * nginx's realip module: `set_real_ip_from`, `real_ip_header` and `real_ip_recursive` -> `realIp`
 * where they are written (http: the top level; a server with any of its own: its own `realIp`,
 * merged with http's per directive as nginx inherits them, since sessionlb's per-server key replaces
 * the top-level one whole). With `real_ip_header proxy_protocol` (http, server) and in a stream (the
 * stream realip module reads only the PROXY header) the list becomes `proxyProtocolFrom`;
 * `listen ... proxy_protocol` without such a list is a warning at the listen line (nginx takes a
 * header from anyone, sessionlb's `check` refuses that).
 */
import { BlockList } from 'node:net';
import { addCidrTo } from '../../net/client-address.js';
import type { RawConfig } from '../../config/schema.js';
import type { NginxDirective } from './tokenizer.js';
import type { Conversion, Sourced } from './conversion.js';

/** The realip settings of one level (http, server, stream, stream server). */
export interface RealIpScope {
  /** The `set_real_ip_from` addresses of this level, and the lines they are on. */
  from?: { value: string[]; lines: number[] };
  header?: Sourced<string>;
  recursive?: Sourced<string>;
}

/** A `listen ... proxy_protocol` entry and its line. */
export interface ProxyProtocolListen {
  text: string;
  line: number;
}

const REAL_IP_DIRECTIVES = new Set(['set_real_ip_from', 'real_ip_header', 'real_ip_recursive']);

/** The realip directives of the http module (the stream module has only set_real_ip_from). */
export function isRealIpDirective(d: NginxDirective): boolean {
  return REAL_IP_DIRECTIVES.has(d.name);
}

/** Collects one realip directive into `scope`. */
export function realIpDirective(c: Conversion, d: NginxDirective, scope: RealIpScope): void {
  const a = c.oneArg(d);
  if (a === null) return;
  switch (d.name) {
    case 'set_real_ip_from': {
      if (a.startsWith('unix:')) {
        c.warn(d.line, `"set_real_ip_from ${a}": unix sockets are not supported by sessionlb; ignored`);
        return;
      }
      const err = addCidrTo(new BlockList(), a);
      if (err !== null) {
        c.error(d.line, `"set_real_ip_from": ${err} (sessionlb takes no host names here)`);
        return;
      }
      scope.from ??= { value: [], lines: [] };
      if (!scope.from.value.includes(a)) scope.from.value.push(a);
      scope.from.lines.push(d.line);
      break;
    }
    case 'real_ip_header':
      scope.header = { value: a, line: d.line };
      break;
    case 'real_ip_recursive':
      if (a === 'on' || a === 'off') scope.recursive = { value: a, line: d.line };
      else c.error(d.line, `"real_ip_recursive": "${a}" must be "on" or "off"`);
      break;
  }
}

/** What nginx uses at a level: its own list/header, else the enclosing level's (arrays are replaced, not merged). */
function merged(outer: RealIpScope, own: RealIpScope): RealIpScope {
  const out: RealIpScope = {};
  const from = own.from ?? outer.from;
  const header = own.header ?? outer.header;
  const recursive = own.recursive ?? outer.recursive;
  if (from !== undefined) out.from = from;
  if (header !== undefined) out.header = header;
  if (recursive !== undefined) out.recursive = recursive;
  return out;
}

function isProxyProtocolHeader(s: RealIpScope): boolean {
  return s.header?.value === 'proxy_protocol';
}

export type RawRealIp = NonNullable<RawConfig['realIp']>;

/** The `realIp` key for settings with a `set_real_ip_from` list (nginx's defaults left out). */
function realIpKey(s: RealIpScope): RawRealIp | undefined {
  if (s.from === undefined) return undefined;
  const header = s.header?.value;
  return {
    from: [...s.from.value],
    ...(header !== undefined && header !== 'X-Real-IP' ? { header } : {}),
    ...(s.recursive?.value === 'on' && header !== 'proxy_protocol' ? { recursive: true } : {}),
  };
}

/**
 * http-level settings: `set_real_ip_from` with `real_ip_header proxy_protocol` becomes the
 * top-level list; with a request header (X-Real-IP, nginx's default, X-Forwarded-For, ...) the top-level `realIp`.
 */
export function httpRealIp(c: Conversion, http: RealIpScope): void {
  if (http.from !== undefined && isProxyProtocolHeader(http)) c.top.proxyProtocolFrom = [...http.from.value];
  else if (http.from !== undefined) c.top.realIp = realIpKey(http);
}

/**
 * A server's own `realIp` (undefined: it inherits the top-level one, or has none): written when
 * the server has realip directives of its own and they change what it uses.
 */
export function serverRealIpKey(c: Conversion, http: RealIpScope, own: RealIpScope): RawRealIp | undefined {
  if (own.from === undefined && own.header === undefined && own.recursive === undefined) return undefined;
  const eff = merged(http, own);
  // proxy_protocol is written as proxyProtocolFrom (serverRealIp); a realIp only to replace the top-level one.
  if (isProxyProtocolHeader(eff) && c.top.realIp === undefined) return undefined;
  return realIpKey(eff);
}

/** Warns once per directive line (several servers may inherit one). */
function warnOnce(c: Conversion, line: number, message: string): void {
  if (c.inheritedWarned.has(line)) return;
  c.inheritedWarned.add(line);
  c.warn(line, message);
}

const ADD_LIST = 'add "proxyProtocolFrom": ["CIDR", ...] with the addresses of the proxies in front '
  + '(nginx accepts a PROXY header from anyone here; sessionlb\'s check refuses a proxy_protocol address without that list)';

/**
 * One http server: returns the server's own `proxyProtocolFrom` (undefined: none to write), after
 * warning about what is not converted and about `proxy_protocol` listens without a list.
 */
export function serverRealIp(c: Conversion, http: RealIpScope, own: RealIpScope, listens: ProxyProtocolListen[]): string[] | undefined {
  const eff = merged(http, own);
  const pp = isProxyProtocolHeader(eff);
  let list: string[] | undefined;
  if (pp && eff.from !== undefined) {
    // The top-level list already says it when both come from http { }.
    if (!(eff.from === http.from && isProxyProtocolHeader(http))) list = [...eff.from.value];
    if (eff.recursive?.value === 'on') {
      warnOnce(c, eff.recursive.line, '"real_ip_recursive on" has no effect with "real_ip_header proxy_protocol" (one PROXY header, one address); ignored');
    }
  } else if (pp && listens.length === 0) {
    warnOnce(c, eff.header!.line, '"real_ip_header proxy_protocol" without "set_real_ip_from": nginx changes no address; nothing to convert');
  } else if (!pp && eff.from === undefined) {
    for (const d of [eff.header, eff.recursive]) {
      if (d !== undefined) warnOnce(c, d.line, '"real_ip_header"/"real_ip_recursive" without "set_real_ip_from": nginx changes no address either; ignored');
    }
  }
  const applies = list ?? c.top.proxyProtocolFrom;
  for (const l of listens) {
    const parts: string[] = [];
    if (!pp) {
      parts.push('sessionlb takes the PROXY header\'s source as the client\'s address ($remote_addr, logs, X-Forwarded-For, ip_hash), '
        + 'which nginx does only with "real_ip_header proxy_protocol" (here it keeps the proxy\'s address and sets $proxy_protocol_addr)');
    }
    if (applies === undefined || applies.length === 0) parts.push(ADD_LIST);
    if (parts.length > 0) c.warn(l.line, `listen ${l.text}: ${parts.join('; ')}`);
  }
  return list;
}

/**
 * One stream server: its `proxyProtocolFrom` (its own `set_real_ip_from`, else the stream block's;
 * undefined: none), after warning about `proxy_protocol` listens with no list.
 */
export function streamRealIp(c: Conversion, stream: RealIpScope, own: RealIpScope, listens: ProxyProtocolListen[]): string[] | undefined {
  const from = own.from ?? stream.from;
  if (from !== undefined) return [...from.value];
  for (const l of listens) {
    const top = c.top.proxyProtocolFrom;
    if (top !== undefined && top.length > 0) {
      c.warn(l.line, `listen ${l.text}: no "set_real_ip_from" in this stream, so nginx accepts a PROXY header from anyone; sessionlb applies the top-level "proxyProtocolFrom" `
        + '(http\'s set_real_ip_from) here: give the stream its own "proxyProtocolFrom" if other proxies are in front of it');
    } else {
      c.warn(l.line, `listen ${l.text}: ${ADD_LIST}`);
    }
  }
  return undefined;
}
