/** nginx's stream module (TCP proxies): `stream { }` blocks -> sessionlb's `streams`, and their upstreams. */
import type { RawStream, RawStreamRoute } from '../../config/schema.js';
import { sniKeyProblem } from '../../config/streams.js';
import { formatHostPort, parseHostPort } from '../../nginx-language/address.js';
import type { NginxDirective } from './tokenizer.js';
import type { Conversion, Mutable } from './conversion.js';
import { convertUpstream } from './upstream-block.js';
import { isInt, nginxDuration } from './values.js';
import { parseDuration } from '../../nginx-language/units.js';
import { realIpDirective, streamRealIp, type ProxyProtocolListen, type RealIpScope } from './real-ip.js';

/** The proxy_* directives of nginx's stream module that `streams` has. */
const STREAM_PROXY_DIRECTIVES = new Set([
  'proxy_connect_timeout', 'proxy_timeout', 'proxy_next_upstream', 'proxy_next_upstream_tries', 'proxy_next_upstream_timeout', 'proxy_half_close',
  'proxy_protocol', 'proxy_protocol_timeout',
]);

/** nginx's stream proxy_protocol_timeout default, the wait sessionlb always uses for a stream's PROXY header. */
const PROXY_PROTOCOL_TIMEOUT_MS = 30_000;

/** nginx `stream { upstream ...; server { listen; proxy_pass; ... } }` -> `streams` and `upstreams`. */
export function convertStream(c: Conversion, d: NginxDirective): void {
  const block = d.block!;
  for (const item of block) {
    if (item.name !== 'upstream') continue;
    const name = item.args[0];
    if (name !== undefined && c.upstreams.has(name)) {
      c.error(item.line, `stream upstream "${name}" has the name of the http upstream on ${c.at(c.upstreamLines.get(name)!)}: sessionlb has one set of upstream names; rename one`);
      continue;
    }
    convertUpstream(c, item);
  }
  const defaults: Partial<Mutable<RawStream>> = {};
  for (const item of block) streamProxyDirective(c, item, defaults);
  // ngx_stream_realip_module: set_real_ip_from (stream and server level), for the PROXY header.
  const realIp: RealIpScope = {};
  for (const item of block) if (item.name === 'set_real_ip_from') realIpDirective(c, item, realIp);
  const maps = new Map<string, PrereadMap | null>();
  for (const item of block) if (item.name === 'map') prereadMap(c, item, maps);
  c.notes.push({ line: d.line, message: 'sessionlb streams always pass a half-close on (nginx "proxy_half_close on"; nginx\'s default is off): the session ends when both sides have closed' });
  for (const item of block) {
    if (item.name === 'upstream' || item.name === 'map' || item.name === 'set_real_ip_from' || STREAM_PROXY_DIRECTIVES.has(item.name)) continue;
    if (item.name === 'server' && item.block !== null) streamServer(c, item, defaults, maps, realIp);
    else c.unsupported(item, 'in stream');
  }
}

function streamServer(
  c: Conversion, d: NginxDirective, defaults: Partial<Mutable<RawStream>>, maps: Map<string, PrereadMap | null>, streamRealIpScope: RealIpScope,
): void {
  const listen: string[] = [];
  const proxyProtocolListens: ProxyProtocolListen[] = [];
  const ownRealIp: RealIpScope = {};
  let proxyPass: string | null = null;
  let routeVar: { name: string; line: number } | null = null;
  let sslPreread = false;
  const preread: { prereadTimeout?: string; prereadBufferSize?: string } = {};
  const own: Partial<Mutable<RawStream>> = {};
  for (const item of d.block!) {
    if (streamProxyDirective(c, item, own)) continue;
    switch (item.name) {
      case 'set_real_ip_from':
        realIpDirective(c, item, ownRealIp);
        break;
      case 'ssl_preread': {
        const a = c.oneArg(item);
        if (a === 'on' || a === 'off') sslPreread = a === 'on';
        else if (a !== null) c.error(item.line, `"ssl_preread": "${a}" must be "on" or "off"`);
        break;
      }
      case 'preread_timeout': {
        const a = c.oneArg(item);
        const v = a === null ? null : nginxDuration(a);
        if (v === null) c.error(item.line, `"preread_timeout": "${a ?? ''}" is not a time such as "10s"`);
        else preread.prereadTimeout = v;
        break;
      }
      case 'preread_buffer_size': {
        const a = c.oneArg(item);
        if (a !== null && /^\d+[kKmM]?$/.test(a)) preread.prereadBufferSize = a.toLowerCase();
        else c.error(item.line, `"preread_buffer_size": "${a ?? ''}" is not a size such as "16k"`);
        break;
      }
      case 'listen': {
        const a = c.oneArg(item);
        if (a === null) break;
        const all = item.args.slice(1);
        const proxyProtocol = all.includes('proxy_protocol');
        const params = all.filter((p) => p !== 'proxy_protocol');
        if (params.includes('udp')) {
          c.error(item.line, `"listen ${item.args.join(' ')}": UDP is not supported by sessionlb (TCP only)`);
          break;
        }
        if (params.includes('ssl')) {
          c.error(item.line, `"listen ${item.args.join(' ')}": TLS termination is not supported by sessionlb's streams (proxy the TLS bytes without "ssl")`);
          break;
        }
        if (params.length > 0) c.warn(item.line, `"listen": parameters "${params.join(' ')}" are not supported by sessionlb; ignored`);
        const hp = parseHostPort(a, undefined);
        if (typeof hp === 'string') c.error(item.line, `"listen ${a}": ${hp}`);
        else {
          const text = `${/^\d+$/.test(a) ? a : formatHostPort(hp.host, hp.port)}${proxyProtocol ? ' proxy_protocol' : ''}`;
          listen.push(text);
          if (proxyProtocol) proxyProtocolListens.push({ text, line: item.line });
        }
        break;
      }
      case 'proxy_pass': {
        const a = c.oneArg(item);
        if (a === null) break;
        if (/^\$[A-Za-z_][A-Za-z0-9_]*$/.test(a) && maps.has(a.slice(1))) routeVar = { name: a.slice(1), line: item.line };
        else if (a.includes('$')) c.error(item.line, `"proxy_pass ${a}": variables are not supported by sessionlb (only one set by a map on $ssl_preread_server_name or $ssl_preread_alpn_protocols); name an upstream or write host:port`);
        else if (a.startsWith('unix:')) c.error(item.line, `"proxy_pass ${a}": unix sockets are not supported by sessionlb (use host:port)`);
        else proxyPass = a;
        break;
      }
      default:
        c.unsupported(item, 'in a stream server');
    }
  }
  let route: RawStreamRoute | null = null;
  if (routeVar !== null) {
    const map = maps.get(routeVar.name)!;
    if (map === null) {
      c.error(routeVar.line, `stream server: "proxy_pass $${routeVar.name}" uses a map that was not converted: not converted`);
      return;
    }
    if (!sslPreread) {
      c.error(routeVar.line, `stream server: "proxy_pass $${routeVar.name}" without "ssl_preread on": $ssl_preread_${map.by === 'sni' ? 'server_name' : 'alpn_protocols'} would be empty: not converted`);
      return;
    }
    route = { ...map.route, ...preread };
  } else if (sslPreread) {
    c.warn(d.line, '"ssl_preread on" without a "proxy_pass" from a map of $ssl_preread_server_name or $ssl_preread_alpn_protocols: the ClientHello is not read; ignored');
  }
  if (listen.length === 0 || (proxyPass === null && route === null)) {
    c.error(d.line, `stream server without ${listen.length === 0 ? '"listen"' : '"proxy_pass"'}: not converted`);
    return;
  }
  const out: Mutable<RawStream> = route === null ? { listen, proxyPass: proxyPass! } : { listen, route };
  for (const key of ['proxyConnectTimeout', 'proxyTimeout', 'nextUpstream', 'nextUpstreamTries', 'nextUpstreamTimeout', 'proxyProtocol'] as const) {
    const v = own[key] ?? defaults[key];
    // Each key keeps its own type; the loop only copies.
    if (v !== undefined) (out as Record<string, unknown>)[key] = v;
  }
  if (out.proxyProtocol === false) delete out.proxyProtocol;
  const proxyProtocolFrom = streamRealIp(c, streamRealIpScope, ownRealIp, proxyProtocolListens);
  if (proxyProtocolFrom !== undefined) out.proxyProtocolFrom = proxyProtocolFrom;
  c.streams.push(out);
}

/** proxy_* of nginx's stream module (stream or server level); true when `d` was one. */
function streamProxyDirective(c: Conversion, d: NginxDirective, into: Partial<Mutable<RawStream>>): boolean {
  if (!STREAM_PROXY_DIRECTIVES.has(d.name)) return false;
  const a = c.oneArg(d);
  if (a === null) return true;
  const time = (set: (v: string) => void): void => {
    const v = nginxDuration(a);
    if (v === null) c.error(d.line, `"${d.name}": "${a}" is not a time such as "10s"`);
    else set(v);
  };
  switch (d.name) {
    case 'proxy_connect_timeout': time((v) => { into.proxyConnectTimeout = v; }); break;
    case 'proxy_timeout': time((v) => { into.proxyTimeout = v; }); break;
    case 'proxy_next_upstream_timeout': time((v) => { into.nextUpstreamTimeout = v; }); break;
    case 'proxy_next_upstream':
      if (a === 'on' || a === 'off') into.nextUpstream = a === 'on';
      else c.error(d.line, `"proxy_next_upstream": "${a}" must be "on" or "off" in a stream`);
      break;
    case 'proxy_next_upstream_tries':
      if (isInt(a)) into.nextUpstreamTries = Number(a);
      else c.error(d.line, `"proxy_next_upstream_tries": "${a}" is not a number`);
      break;
    case 'proxy_protocol':
      if (a === 'on' || a === 'off') into.proxyProtocol = a === 'on';
      else c.error(d.line, `"proxy_protocol": "${a}" must be "on" or "off"`);
      break;
    case 'proxy_protocol_timeout': {
      const v = nginxDuration(a);
      if (v === null) c.error(d.line, `"proxy_protocol_timeout": "${a}" is not a time such as "30s"`);
      else if (parseDuration(v) !== PROXY_PROTOCOL_TIMEOUT_MS) {
        c.warn(d.line, `"proxy_protocol_timeout ${a}": sessionlb waits 30 s (nginx's default) for a stream's PROXY header, and clientHeaderTimeout on HTTP addresses; ignored`);
      }
      break;
    }
    case 'proxy_half_close':
      if (a !== 'on') c.warn(d.line, `"proxy_half_close ${a}": sessionlb always passes half-closes on (as "proxy_half_close on")`);
      break;
  }
  return true;
}

/** A converted `map $ssl_preread_server_name $var { }` (or of $ssl_preread_alpn_protocols): the route it gives. */
interface PrereadMap {
  by: 'sni' | 'alpn';
  route: RawStreamRoute;
}

const PREREAD_SOURCES: Record<string, 'sni' | 'alpn'> = { $ssl_preread_server_name: 'sni', $ssl_preread_alpn_protocols: 'alpn' };

/**
 * `map $ssl_preread_server_name $var { hostnames; NAME UPSTREAM; ... default UPSTREAM; }` (stream
 * level) -> the `route` of the servers whose `proxy_pass $var`; `maps` gets null for a map that
 * cannot be converted (an error says why), and nothing for a map on another variable.
 */
function prereadMap(c: Conversion, d: NginxDirective, maps: Map<string, PrereadMap | null>): void {
  const [source, target] = d.args;
  const by = source === undefined ? undefined : PREREAD_SOURCES[source];
  if (by === undefined || target === undefined || d.args.length !== 2 || !target.startsWith('$') || d.block === null) {
    c.unsupported(d, 'in stream (sessionlb reads only maps of $ssl_preread_server_name and $ssl_preread_alpn_protocols, as a stream\'s "route")');
    return;
  }
  const name = target.slice(1);
  const what = `map ${source} ${target}`;
  const map: Record<string, string> = {};
  let dflt: string | undefined;
  let hostnames = false;
  let ok = true;
  const fail = (line: number, message: string): void => {
    c.error(line, `${what}: ${message}`);
    ok = false;
  };
  for (const e of d.block) {
    if (e.name === 'hostnames' && e.args.length === 0) {
      hostnames = true;
      continue;
    }
    if (e.args.length !== 1 || e.block !== null) {
      fail(e.line, `"${[e.name, ...e.args].join(' ')}": ${e.name === 'include' || e.name === 'volatile' ? `"${e.name}" is not supported` : 'expected "KEY VALUE;"'}`);
      continue;
    }
    const value = e.args[0]!;
    if (value.includes('$') || value === '') {
      fail(e.line, `"${e.name}": the value "${value}" must be an upstream name or host:port (no variables)`);
      continue;
    }
    if (e.name === 'default') {
      dflt = value;
      continue;
    }
    const key = e.name.startsWith('\\') ? e.name.slice(1) : e.name;
    if (by === 'sni') {
      const problem = sniKeyProblem(key);
      if (problem !== null) {
        fail(e.line, `"${key}": ${problem}`);
        continue;
      }
      if (!hostnames && /^\*\.|^\.|\.\*$/.test(key)) {
        fail(e.line, `"${key}": a wildcard without "hostnames;" is a plain string to nginx; add "hostnames;" or write the name`);
        continue;
      }
    } else if (key.startsWith('~') || key.includes(',')) {
      fail(e.line, `"${key}": only single protocol names are converted (sessionlb matches each offered protocol, not the list)`);
      continue;
    }
    map[key] = value;
  }
  if (by === 'alpn' && ok) {
    c.warn(d.line, `${what}: a key is compared with each protocol the client offers (the first offered that is a key wins), nginx compares the whole comma-separated list`);
  }
  maps.set(name, ok ? { by, route: { by, map, ...(dflt === undefined ? {} : { default: dflt }) } } : null);
}
