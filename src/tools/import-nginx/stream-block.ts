/** nginx's stream module (TCP proxies): `stream { }` blocks -> sessionlb's `streams`, and their upstreams. */
import type { RawStream } from '../../config/schema.js';
import { formatHostPort, parseHostPort } from '../../nginx-language/address.js';
import type { NginxDirective } from './tokenizer.js';
import type { Conversion, Mutable } from './conversion.js';
import { convertUpstream } from './upstream-block.js';
import { isInt, nginxDuration } from './values.js';

/** The proxy_* directives of nginx's stream module that `streams` has. */
const STREAM_PROXY_DIRECTIVES = new Set([
  'proxy_connect_timeout', 'proxy_timeout', 'proxy_next_upstream', 'proxy_next_upstream_tries', 'proxy_next_upstream_timeout', 'proxy_half_close',
]);

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
  c.notes.push({ line: d.line, message: 'sessionlb streams always pass a half-close on (nginx "proxy_half_close on"; nginx\'s default is off): the session ends when both sides have closed' });
  for (const item of block) {
    if (item.name === 'upstream' || STREAM_PROXY_DIRECTIVES.has(item.name)) continue;
    if (item.name === 'server' && item.block !== null) streamServer(c, item, defaults);
    else c.unsupported(item, 'in stream');
  }
}

function streamServer(c: Conversion, d: NginxDirective, defaults: Partial<Mutable<RawStream>>): void {
  const listen: string[] = [];
  let proxyPass: string | null = null;
  const own: Partial<Mutable<RawStream>> = {};
  for (const item of d.block!) {
    if (streamProxyDirective(c, item, own)) continue;
    switch (item.name) {
      case 'listen': {
        const a = c.oneArg(item);
        if (a === null) break;
        const params = item.args.slice(1);
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
        else listen.push(/^\d+$/.test(a) ? a : formatHostPort(hp.host, hp.port));
        break;
      }
      case 'proxy_pass': {
        const a = c.oneArg(item);
        if (a === null) break;
        if (a.includes('$')) c.error(item.line, `"proxy_pass ${a}": variables are not supported by sessionlb; name an upstream or write host:port`);
        else if (a.startsWith('unix:')) c.error(item.line, `"proxy_pass ${a}": unix sockets are not supported by sessionlb (use host:port)`);
        else proxyPass = a;
        break;
      }
      default:
        c.unsupported(item, 'in a stream server');
    }
  }
  if (listen.length === 0 || proxyPass === null) {
    c.error(d.line, `stream server without ${listen.length === 0 ? '"listen"' : '"proxy_pass"'}: not converted`);
    return;
  }
  const out: Mutable<RawStream> = { listen, proxyPass };
  for (const key of ['proxyConnectTimeout', 'proxyTimeout', 'nextUpstream', 'nextUpstreamTries', 'nextUpstreamTimeout'] as const) {
    const v = own[key] ?? defaults[key];
    // Each key keeps its own type; the loop only copies.
    if (v !== undefined) (out as Record<string, unknown>)[key] = v;
  }
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
    case 'proxy_half_close':
      if (a !== 'on') c.warn(d.line, `"proxy_half_close ${a}": sessionlb always passes half-closes on (as "proxy_half_close on")`);
      break;
  }
  return true;
}
