/** nginx `server { listen ...; server_name ...; location ... }` in http -> a sessionlb virtual server. */
import { isIP } from 'node:net';
import type { RawReturn, RawUpstreamTls, RawVirtualServer } from '../../config/schema.js';
import { convertReturn, convertRewrite } from './return-rewrite.js';
import { parseHostPort } from '../../nginx-language/address.js';
import type { NginxDirective } from './tokenizer.js';
import type { Conversion, Location, Mutable, ProxyScope } from './conversion.js';
import { childScope, isProxyDirective } from './proxy-settings.js';
import { convertLocation } from './location-block.js';
import {
  childSslScope, isProxySslDirective, isSslDirective, proxySslDirective, sslBlock, sslDirective, type SslScope,
} from './ssl-settings.js';
import { UPSTREAM_TLS_KEYS } from '../../config/tls.js';
import { isRealIpDirective, realIpDirective, serverRealIp, serverRealIpKey, type RealIpScope } from './real-ip.js';
import { notCarriedOver, restricts } from './access-settings.js';
import { LevelSettings } from './level-settings.js';
import { ErrorPageSite, pageUris } from './error-page-settings.js';

/** One listen entry as it will be written: the address and the parameters sessionlb takes. */
interface ListenEntry {
  text: string;
  ssl: boolean;
  http2: boolean;
  defaultServer: boolean;
  proxyProtocol: boolean;
  /** The line of the first listen directive naming this address. */
  line: number;
}

/**
 * `httpSettings`, `httpRoot`: http's (error pages and the root they may be served from). Returns
 * the server's ErrorPageSite (null: no server), for http's error pages.
 */
export function convertServer(
  c: Conversion, d: NginxDirective, httpScope: ProxyScope, httpSsl: SslScope, httpRealIp: RealIpScope,
  httpSettings: LevelSettings, httpRoot: NginxDirective | undefined,
): ErrorPageSite | null {
  if (d.block === null) {
    c.error(d.line, `"server" in http needs a block: server { listen ...; location / { proxy_pass ...; } }`);
    return null;
  }
  const scope = childScope(c, httpScope, d.block);
  const vs: Mutable<RawVirtualServer> & { locations: Location[] } = { listen: [], locations: [] };
  const entries: ListenEntry[] = [];
  const ownSsl: SslScope = {};
  const ownSslDirectives: NginxDirective[] = [];
  const ownRealIp: RealIpScope = {};
  const tls: Mutable<RawUpstreamTls> = {};
  const names: string[] = [];
  let sawListen = false;
  let ret: RawReturn | undefined;
  const locationDirectives: NginxDirective[] = [];
  const settings = new LevelSettings('server', httpSettings);
  const roots: NginxDirective[] = [];
  for (const item of d.block) {
    if (isProxyDirective(item) || settings.take(c, item)) continue;
    if (isSslDirective(item)) {
      sslDirective(c, item, ownSsl);
      ownSslDirectives.push(item);
      continue;
    }
    if (isProxySslDirective(item)) {
      proxySslDirective(c, item, tls);
      continue;
    }
    if (isRealIpDirective(item)) {
      realIpDirective(c, item, ownRealIp);
      continue;
    }
    switch (item.name) {
      case 'listen':
        sawListen = true;
        listen(c, item, entries);
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
      case 'root':
        // Used for error_page files only; said below when not.
        roots.push(item);
        break;
      case 'return':
      case 'rewrite':
        // Server-level rewrite phase: the first return (or redirecting rewrite of every path) answers every request.
        if (ret !== undefined) c.warn(item.line, `"${item.name}" after the server's first return is never reached (nginx stops there too); ignored`);
        else ret = (item.name === 'return' ? convertReturn(c, item) : convertRewrite(c, item)) ?? undefined;
        break;
      case 'keepalive_timeout':
        c.warn(item.line, `"keepalive_timeout" in a server is not supported (sessionlb has one, at the top level: put it in http); ignored`);
        break;
      default:
        c.unsupported(item, item.block !== null ? 'block in server' : 'in server');
    }
  }
  // nginx's default when there is no listen: *:80.
  if (!sawListen) entries.push({ text: '80', ssl: false, http2: false, defaultServer: false, proxyProtocol: false, line: d.line });
  const label = `server ${names[0] ?? `(${c.at(d.line)})`}`;
  const ssl = childSslScope(httpSsl, ownSsl);
  const hasSsl = entries.some((e) => e.ssl);
  let sslSettings: RawVirtualServer['ssl'] | null = null;
  let http2 = false;
  if (hasSsl) {
    sslSettings = sslBlock(c, ssl, ownSsl, d.line, label);
    http2 = ssl.http2?.value === true;
  } else {
    // nginx ignores a plain server's ssl_* settings; its http2 would be h2c, which sessionlb does not offer.
    for (const item of ownSslDirectives) {
      if (/^ssl_(?:certificate|certificate_key|protocols|ciphers|session_tickets|session_timeout)$/.test(item.name)) {
        c.warn(item.line, `"${item.name}": ${label} has no "listen ... ssl", so nginx does not use it either; ignored`);
      }
    }
    const h2 = ssl.http2;
    if (h2?.value === true && !c.inheritedWarned.has(h2.line)) {
      c.inheritedWarned.add(h2.line);
      c.warn(h2.line, `"http2 on" for ${h2 === ownSsl.http2 ? label : 'servers without "listen ... ssl"'}: sessionlb offers HTTP/2 only over TLS (h2c is not offered); ignored there`);
    }
  }
  // default_server on every entry: the server's "default"; else on the entries that have it.
  const allDefault = entries.every((e) => e.defaultServer);
  const listenTexts = entries.map((e) => [
    e.text, e.ssl ? 'ssl' : '', e.http2 ? 'http2' : '', e.proxyProtocol ? 'proxy_protocol' : '', e.defaultServer && !allDefault ? 'default_server' : '',
  ].filter((p) => p !== '').join(' '));
  const proxyProtocolFrom = serverRealIp(c, httpRealIp, ownRealIp,
    entries.filter((e) => e.proxyProtocol).map((e) => ({ text: `${e.text}${e.ssl ? ' ssl' : ''} proxy_protocol`, line: e.line })));
  const realIp = serverRealIpKey(c, httpRealIp, ownRealIp);
  // Where nginx would find each error_page URI of this server (http's, its own, its locations').
  const site = new ErrorPageSite(c, label, locationDirectives, roots.at(-1) ?? httpRoot);
  site.ownPages = settings.errorPages.pages !== undefined;
  site.prepare([
    ...pageUris(settings.errorPages.pages !== undefined ? settings.errorPages : httpSettings.errorPages),
    ...locationDirectives.flatMap((loc) => pageUris(undefined, loc.block ?? [])),
  ]);
  for (const root of roots) if (!site.usedRoots.has(root)) c.unsupported(root, 'in server');
  for (const loc of locationDirectives) {
    if (site.onlyServesPages(loc)) {
      // Its page is an errorPage file now; a request for it goes to the next matching location.
      const internal = loc.block!.find((i) => i.name === 'internal');
      if (internal !== undefined) {
        c.notes.push({ line: internal.line, message: `location ${loc.args.join(' ')} only serves error pages, now errorPage files; it is not converted, so "internal" has nothing left to guard (a request for its URI goes to the next matching location)` });
      }
      continue;
    }
    const before = vs.locations.length;
    convertLocation(c, loc, scope, vs.locations, label, tls, settings, site);
    // A location left out with restrictions inside: its requests would go to another, open, location.
    if (vs.locations.length === before && loc.block !== null && restricts(loc.block)) {
      notCarriedOver(c, loc.line, `location ${loc.args.join(' ')} restricts access and is not converted (see above)`);
    }
  }
  // Keys in the order the README documents them.
  const ordered: Mutable<RawVirtualServer> = {
    listen: listenTexts,
    ...(names.length > 0 ? { serverName: names } : {}),
    ...(allDefault ? { default: true } : {}),
    ...(sslSettings !== null ? { ssl: sslSettings } : {}),
    ...(proxyProtocolFrom !== undefined ? { proxyProtocolFrom } : {}),
    ...(http2 ? { http2: true } : {}),
    ...(realIp !== undefined ? { realIp } : {}),
    ...(ret !== undefined ? { return: ret } : {}),
    locations: vs.locations,
  };
  if (vs.clientMaxBodySize !== undefined) ordered.clientMaxBodySize = vs.clientMaxBodySize;
  for (const k of UPSTREAM_TLS_KEYS) if (tls[k] !== undefined) (ordered as Record<string, unknown>)[k] = tls[k];
  settings.writeTo(ordered);
  settings.writePages(c, ordered, site);
  site.out = ordered as Record<string, unknown>;
  c.top.servers.push(ordered as RawVirtualServer);
  return site;
}

function listen(c: Conversion, d: NginxDirective, entries: ListenEntry[]): void {
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
  const entry: ListenEntry = { text, ssl: false, http2: false, defaultServer: false, proxyProtocol: false, line: d.line };
  const params = d.args.slice(1);
  if (params.includes('quic')) {
    c.warn(d.line, `listen ${addr} quic: sessionlb has no HTTP/3 (QUIC); this listen address is not converted`);
    return;
  }
  for (const p of params) {
    if (p === 'default_server' || p === 'default') entry.defaultServer = true;
    else if (p === 'ssl') entry.ssl = true;
    else if (p === 'proxy_protocol') entry.proxyProtocol = true;
    else if (p === 'http2') {
      if (params.includes('ssl')) entry.http2 = true;
      else c.warn(d.line, `listen ${addr} http2 without ssl: sessionlb offers HTTP/2 only over TLS (h2c is not offered); the parameter is ignored`);
    } else {
      c.warn(d.line, `listen ${addr}: parameter "${p}" is not supported by sessionlb; ignored`);
    }
  }
  const same = entries.find((e) => e.text === text);
  if (same === undefined) {
    entries.push(entry);
  } else {
    same.ssl ||= entry.ssl;
    same.http2 ||= entry.http2;
    same.defaultServer ||= entry.defaultServer;
    same.proxyProtocol ||= entry.proxyProtocol;
  }
}
