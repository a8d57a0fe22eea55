/** nginx `server { listen ...; server_name ...; location ... }` in http -> a sessionlb virtual server. */
import { isIP } from 'node:net';
import type { RawVirtualServer } from '../../config/schema.js';
import { parseHostPort } from '../../nginx-language/address.js';
import type { NginxDirective } from './tokenizer.js';
import type { Conversion, Location, Mutable, ProxyScope } from './conversion.js';
import { childScope, isProxyDirective } from './proxy-settings.js';
import { convertLocation } from './location-block.js';

export function convertServer(c: Conversion, d: NginxDirective, httpScope: ProxyScope): void {
  if (d.block === null) {
    c.error(d.line, `"server" in http needs a block: server { listen ...; location / { proxy_pass ...; } }`);
    return;
  }
  const scope = childScope(c, httpScope, d.block);
  const vs: Mutable<RawVirtualServer> & { listen: string[]; locations: Location[] } = { listen: [], locations: [] };
  const names: string[] = [];
  let sawListen = false;
  const locationDirectives: NginxDirective[] = [];
  for (const item of d.block) {
    if (isProxyDirective(item)) continue;
    switch (item.name) {
      case 'listen':
        sawListen = true;
        listen(c, item, vs);
        break;
      case 'server_name':
        for (const n of item.args) {
          if (n.startsWith('~')) c.warn(item.line, `server_name "${n}": regular expressions are not supported by sessionlb; ignored`);
          else if (!names.includes(n)) names.push(n);
        }
        break;
      case 'client_max_body_size':
        c.size(item, (v) => { vs.clientMaxBodySize = v; });
        break;
      case 'location':
        locationDirectives.push(item);
        break;
      case 'keepalive_timeout':
        c.warn(item.line, `"keepalive_timeout" in a server is not supported (sessionlb has one, at the top level: put it in http); ignored`);
        break;
      default:
        c.unsupported(item, item.block !== null ? 'block in server' : 'in server');
    }
  }
  // nginx's default when there is no listen: *:80.
  if (!sawListen) vs.listen.push('80');
  const label = `server ${names[0] ?? `(${c.at(d.line)})`}`;
  for (const loc of locationDirectives) convertLocation(c, loc, scope, vs.locations, label);
  // Keys in the order the README documents them.
  const ordered: Mutable<RawVirtualServer> = {
    listen: vs.listen,
    ...(names.length > 0 ? { serverName: names } : {}),
    ...(vs.default ? { default: true } : {}),
    locations: vs.locations,
  };
  if (vs.clientMaxBodySize !== undefined) ordered.clientMaxBodySize = vs.clientMaxBodySize;
  c.top.servers.push(ordered as RawVirtualServer);
}

function listen(c: Conversion, d: NginxDirective, vs: Mutable<RawVirtualServer> & { listen: string[] }): void {
  const addr = c.oneArg(d);
  if (addr === null) return;
  if (addr.startsWith('unix:')) {
    c.warn(d.line, `listen "${addr}": unix sockets are not supported by sessionlb; ignored`);
    return;
  }
  let text = addr.startsWith('*:') ? `0.0.0.0:${addr.slice(2)}` : addr;
  if (!/^\d+$/.test(text) && !/:\d+$/.test(text)) text = `${text.startsWith('[') || isIP(text) !== 6 ? text : `[${text}]`}:80`;
  const hp = parseHostPort(text, undefined);
  if (typeof hp === 'string') {
    c.error(d.line, `listen "${addr}": ${hp}`);
    return;
  }
  let keep = true;
  for (const p of d.args.slice(1)) {
    if (p === 'default_server' || p === 'default') vs.default = true;
    else if (p === 'ssl' || p === 'quic' || p === 'http2') {
      c.warn(d.line, `listen ${addr} ${p}: sessionlb has no TLS/HTTP2/QUIC (terminate TLS in front of it); this listen address is not converted`);
      keep = false;
    } else {
      c.warn(d.line, `listen ${addr}: parameter "${p}" is not supported by sessionlb; ignored`);
    }
  }
  if (keep && !vs.listen.includes(text)) vs.listen.push(text);
}
