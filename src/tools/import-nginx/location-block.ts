/**
 * nginx `location [=|^~|~|~*] PATH { proxy_pass ...; ... }` (or with `return` / a redirecting
 * `rewrite`) -> a sessionlb location, and the use of an
 * upstream it makes (its per-upstream settings are applied later, per-upstream-settings.ts).
 */
import type { RawReturn, RawUpstreamTls } from '../../config/schema.js';
import { convertReturn, convertRewrite } from './return-rewrite.js';
import { backtrackingRisk } from '../../config/locations.js';
import { UPSTREAM_TLS_KEYS } from '../../config/tls.js';
import type { NginxDirective } from './tokenizer.js';
import type { Conversion, HealthCheck, Location, Mutable, ProxyScope, Sourced } from './conversion.js';
import { childScope, isProxyDirective, proxySetHeaders } from './proxy-settings.js';
import { isProxySslDirective, proxySslDirective } from './ssl-settings.js';
import { addressKey, isInt, nginxDuration } from './values.js';
import { writeHeaders } from './header-settings.js';
import { LevelSettings } from './level-settings.js';
import type { ErrorPageSite } from './error-page-settings.js';

/**
 * `serverTls`: the proxySsl* keys of the server (the top level's are on c.top); `serverSettings`:
 * the server's LevelSettings; `site`: where the server's error_page URIs are served from.
 */
export function convertLocation(
  c: Conversion, d: NginxDirective, serverScope: ProxyScope, out: Location[], serverLabel: string, serverTls: RawUpstreamTls,
  serverSettings: LevelSettings, site: ErrorPageSite,
): void {
  let match: '' | '=' | '^~' | '~' | '~*' = '';
  let path: string | undefined;
  const [a0, a1] = d.args;
  if (d.block === null || a0 === undefined) {
    c.error(d.line, `"location" needs a path and a block`);
    return;
  }
  if (a0 === '=' || a0 === '^~' || a0 === '~' || a0 === '~*') { match = a0; path = a1; }
  else if (a0.startsWith('@')) {
    c.warn(d.line, `location ${a0}: named locations are not supported by sessionlb; this location is not converted`);
    return;
  } else if (a0.startsWith('=')) { match = '='; path = a0.slice(1); }
  else if (a0.startsWith('^~')) { match = '^~'; path = a0.slice(2); }
  else if (a0.startsWith('~*')) { match = '~*'; path = a0.slice(2); }
  else if (a0.startsWith('~')) { match = '~'; path = a0.slice(1); }
  else path = a0;
  const exact = match === '=';
  const expected = a0 === '=' || a0 === '^~' || a0 === '~' || a0 === '~*' ? 2 : 1;
  if (path === undefined || path === '' || d.args.length !== expected) {
    c.error(d.line, `invalid number of arguments in "location ${d.args.join(' ')}"`);
    return;
  }
  if (match === '~' || match === '~*') {
    try {
      new RegExp(path);
    } catch (err) {
      c.warn(d.line, `location ${d.args.join(' ')}: not a regular expression sessionlb (JavaScript) understands (${(err as Error).message}); this location is not converted`);
      return;
    }
    const risk = backtrackingRisk(path);
    if (risk !== null) {
      c.warn(d.line, `location ${d.args.join(' ')}: the regular expression ${risk}; this location is not converted`);
      return;
    }
  }
  /** The location's modifier keys as written out ("exact": true for "=", as before). */
  const head = (): Location => (exact ? { path, exact: true } : match === '' ? { path } : { path, match });
  const scope = childScope(c, serverScope, d.block);
  const where = `${serverLabel}, location ${match === '' ? '' : `${match} `}${path} (${c.at(d.line)})`;
  let ret: RawReturn | null = null;
  let retLine = 0;
  let proxyPass: NginxDirective | null = null;
  let healthCheck: Sourced<HealthCheck> | null = null;
  let clientMaxBodySize: string | undefined;
  const tls: Mutable<RawUpstreamTls> = {};
  const tlsLines: number[] = [];
  const settings = new LevelSettings('location', serverSettings);
  for (const item of d.block) {
    if (isProxyDirective(item) || settings.take(c, item)) continue;
    if (isProxySslDirective(item)) {
      proxySslDirective(c, item, tls);
      tlsLines.push(item.line);
      continue;
    }
    switch (item.name) {
      case 'proxy_pass':
        proxyPass = item;
        break;
      case 'client_max_body_size':
        c.size(item, (v) => { clientMaxBodySize = v; });
        break;
      case 'return':
      case 'rewrite': {
        // nginx's rewrite phase runs before proxying: the first return (or redirecting rewrite of every path) answers.
        if (ret !== null) {
          c.warn(item.line, `"${item.name}" after the ${c.at(retLine)} one in location ${path} is never reached (nginx stops there too); ignored`);
          break;
        }
        ret = item.name === 'return' ? convertReturn(c, item) : convertRewrite(c, item);
        retLine = item.line;
        break;
      }
      case 'health_check':
        healthCheck = { value: healthCheckSettings(c, item), line: item.line };
        break;
      case 'set_real_ip_from':
      case 'real_ip_header':
      case 'real_ip_recursive':
        c.warn(item.line, `"${item.name}" in a location is not supported by sessionlb (realIp is per server or top level): write it in the server; ignored`);
        break;
      case 'location':
        c.warn(item.line, `nested location ${item.args.join(' ')} is not supported by sessionlb; not converted (write it as a location of its own)`);
        break;
      default:
        c.unsupported(item, item.block !== null ? 'block in location' : 'in location');
    }
  }
  if (ret !== null) {
    if (proxyPass !== null) c.notes.push({ line: proxyPass.line, message: `location ${path} answers with its return, so its proxy_pass is never used (as in nginx); not converted` });
    const answered: Location = { ...head(), return: ret };
    writeHeaders(settings.headers, answered as Record<string, unknown>); // nginx adds them to a return's response too
    const page = d.block.find((i) => i.name === 'error_page');
    if (page !== undefined) {
      c.warn(page.line, `"error_page" in location ${path}, which answers with its return: sessionlb sends a return's status with its own page, not errorPage; not converted`);
    }
    out.push(answered);
    return;
  }
  if (proxyPass === null) {
    c.warn(d.line, `location ${match === '' ? '' : `${match} `}${path} has no proxy_pass or return; sessionlb locations proxy or return, so it is not converted (requests for it go to the next matching location)`);
    return;
  }
  const url = proxyPass.args[0] ?? '';
  const m = /^(https?):\/\/([^/?#]+)(.*)$/.exec(url);
  if (proxyPass.args.length !== 1 || m === null || url.includes('$')) {
    c.warn(proxyPass.line, `proxy_pass ${proxyPass.args.join(' ')}: sessionlb supports "http://UPSTREAM[/uri]" and "http://host:port[/uri]", or the same with "https://" (no unix sockets or variables); location ${path} is not converted`);
    return;
  }
  const scheme = m[1] as 'http' | 'https';
  let target = m[2]!;
  const uri = m[3]!;
  const isAddress = !c.upstreams.has(target);
  let host = target;
  if (isAddress) {
    const key = addressKey(target, scheme === 'https' ? 443 : 80);
    if (key === null) {
      c.error(proxyPass.line, `proxy_pass ${url}: "${target}" is neither an upstream defined in this file nor a host:port`);
      return;
    }
    host = key.slice(0, key.lastIndexOf(':')).replace(/^\[|\]$/g, '');
    target = key;
  }
  if ((match === '~' || match === '~*') && uri !== '') {
    c.error(proxyPass.line, `"proxy_pass" cannot have URI part in location given by regular expression (nginx refuses it too)`);
    return;
  }
  const loc: Location = { ...head(), proxyPass: `${scheme}://${target}${uri}` };
  const headers = proxySetHeaders(c, scope, target, where, d.line);
  if (headers !== null) loc.proxySetHeader = headers;
  if (clientMaxBodySize !== undefined) loc.clientMaxBodySize = clientMaxBodySize;
  if (scheme === 'https') {
    for (const k of UPSTREAM_TLS_KEYS) if (tls[k] !== undefined) (loc as Record<string, unknown>)[k] = tls[k];
  } else {
    // nginx ignores them with proxy_pass http://; sessionlb's check refuses them on such a location.
    for (const line of tlsLines) c.warn(line, `proxy_ssl_* in location ${path}: its proxy_pass is "http://", so nginx does not use it either; ignored`);
  }
  settings.writeTo(loc);
  settings.writePages(c, loc, site, true);
  const named = tls.proxySslName ?? serverTls.proxySslName ?? c.top.proxySslName;
  const tlsHost = scheme === 'https' && isAddress && named === undefined ? host : null;
  out.push(loc);
  c.usages.push({ target, location: loc, uri, where, line: d.line, scope, healthCheck, isAddress, scheme, tlsHost });
}

/** nginx Plus `health_check [interval=T] [fails=N] [passes=N] [uri=U] [port=N] [mandatory]`. */
function healthCheckSettings(c: Conversion, d: NginxDirective): HealthCheck {
  const hc: Mutable<HealthCheck> = {};
  for (const p of d.args) {
    const eq = p.indexOf('=');
    const key = eq === -1 ? p : p.slice(0, eq);
    const value = eq === -1 ? '' : p.slice(eq + 1);
    const int = (set: (n: number) => void): void => {
      if (isInt(value)) set(Number(value));
      else c.error(d.line, `"health_check": "${p}" is not a number`);
    };
    switch (key) {
      case 'interval': {
        const t = nginxDuration(value);
        if (t === null) c.error(d.line, `"health_check": "${p}" is not a time`);
        else hc.interval = t;
        break;
      }
      case 'fails': int((n) => { hc.fails = n; }); break;
      case 'passes': int((n) => { hc.passes = n; }); break;
      case 'port': int((n) => { hc.port = n; }); break;
      case 'uri': hc.path = value; break;
      case 'mandatory': hc.mandatory = true; break;
      default:
        c.warn(d.line, `"health_check": parameter "${p}" is not supported by sessionlb; ignored`);
    }
  }
  return hc;
}
