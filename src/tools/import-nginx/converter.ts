/**
 * The conversion: nginx directives (includes already expanded) -> sessionlb's JSON configuration.
 * The top level and http { } are here; each kind of block has a file of its own.
 */
import { writeHeaders, type HeaderScope } from './header-settings.js';
import { writeAccess } from './access-settings.js';
import { writeCompression } from './compression-settings.js';
import { LevelSettings } from './level-settings.js';
import type { RawConfig, RawUpstream } from '../../config/schema.js';
import type { NginxDirective } from './tokenizer.js';
import type { Conversion, Mutable, ProxyScope } from './conversion.js';
import { isProxyDirective, proxyDirective } from './proxy-settings.js';
import { convertUpstream } from './upstream-block.js';
import { convertServer } from './server-block.js';
import { convertStream } from './stream-block.js';
import { applyUsages } from './per-upstream-settings.js';
import { isProxySslDirective, isSslDirective, proxySslDirective, sslDirective, type SslScope } from './ssl-settings.js';
import { UPSTREAM_TLS_KEYS } from '../../config/tls.js';
import { nginxDuration } from './values.js';
import { httpRealIp, isRealIpDirective, serverRealIp, realIpDirective, type RealIpScope } from './real-ip.js';
import { isLimitZoneDirective, limitZoneDirective, writeLimits, writeLimitZones } from './limit-settings.js';
import { writeHttpErrorPages, type ErrorPageSite } from './error-page-settings.js';

/** Directives that belong to nginx's main/events contexts: nothing for a proxy to take over. */
const MAIN_CONTEXT = new Set([
  'user', 'worker_rlimit_nofile', 'worker_cpu_affinity', 'pid', 'error_log',
  'load_module', 'daemon', 'master_process', 'env', 'pcre_jit', 'thread_pool', 'timer_resolution',
  'working_directory', 'lock_file', 'worker_priority', 'worker_shutdown_timeout', 'ssl_engine',
]);

/** sessionlb's configuration for `tree` (includes expanded); what is not converted is said in `c`. */
export function convert(c: Conversion, tree: NginxDirective[]): RawConfig {
  // nginx.conf has `http { ... }`; a conf.d file has its upstream/server blocks at the top.
  const http: NginxDirective[] = [];
  const streamBlocks: NginxDirective[] = [];
  let workers: number | 'auto' | undefined;
  let mainContext = false;
  for (const d of tree) {
    if ((d.name === 'http' || d.name === 'events') && d.block !== null) mainContext = true;
    if (d.name === 'worker_processes') {
      workers = workerProcesses(c, d) ?? workers;
    } else if (d.name === 'http' && d.block !== null) http.push(...d.block);
    else if (d.name === 'stream' && d.block !== null) streamBlocks.push(d);
    else if (d.name === 'stream') {
      c.warn(d.line, '"stream" without a block ignored: nothing to convert (nginx wants stream { server { listen ...; proxy_pass ...; } })');
    } else if (d.name === 'events' || d.name === 'mail') {
      c.warn(d.line, `"${d.name}" block ignored (sessionlb has no ${d.name === 'events' ? 'worker settings' : 'mail proxy'})`);
    } else if (MAIN_CONTEXT.has(d.name)) {
      c.warn(d.line, `"${d.name}" (nginx process setting) is not used by sessionlb; ignored`);
    } else {
      http.push(d);
    }
  }
  // Upstreams first: a location may name one defined further down.
  for (const d of http) if (d.name === 'upstream') convertUpstream(c, d);
  const scope: ProxyScope = {};
  for (const d of http) proxyDirective(c, d, scope);
  // nginx inherits ssl_* and http2 from http to each server; proxy_ssl_* become top-level keys.
  const ssl: SslScope = {};
  for (const d of http) {
    if (isSslDirective(d)) sslDirective(c, d, ssl);
    else if (isProxySslDirective(d)) proxySslDirective(c, d, c.top);
  }
  // set_real_ip_from and real_ip_header are inherited by every server too.
  const realIp: RealIpScope = {};
  for (const d of http) if (isRealIpDirective(d)) realIpDirective(c, d, realIp);
  httpRealIp(c, realIp);
  // limit_req_zone / limit_conn_zone: known before any limit_req names them (nginx wants them in http).
  for (const d of http) if (isLimitZoneDirective(d)) limitZoneDirective(c, d);
  const settings = new LevelSettings('http');
  const roots: NginxDirective[] = [];
  // http's own directives first (its error_page rules and root are inherited by every server), then the servers.
  for (const d of http) {
    if (d.name === 'upstream' || d.name === 'server' || isProxyDirective(d) || isSslDirective(d) || isProxySslDirective(d)
      || isRealIpDirective(d) || isLimitZoneDirective(d)) continue;
    if (settings.take(c, d)) continue;
    switch (d.name) {
      case 'root':
        // Used for error_page files only (error-page-settings.ts); said below when not.
        roots.push(d);
        break;
      case 'client_max_body_size':
        c.size(d, (v) => { c.top.clientMaxBodySize = v; });
        break;
      case 'keepalive_timeout': {
        const a = c.oneArg(d);
        if (a === null) break;
        const v = nginxDuration(a);
        if (v === null) c.error(d.line, `"keepalive_timeout": "${a}" is not a time such as "75s"`);
        else c.top.keepaliveTimeout = v;
        if (d.args.length > 1) c.warn(d.line, `"keepalive_timeout": the second parameter (Keep-Alive response header) is not supported by sessionlb; ignored`);
        break;
      }
      case 'access_log':
        accessLog(c, d);
        break;
      default:
        c.unsupported(d, d.block !== null ? 'block in http' : 'in http');
    }
  }
  const sites: ErrorPageSite[] = [];
  for (const d of http) {
    if (d.name !== 'server') continue;
    const site = convertServer(c, d, scope, ssl, realIp, settings, roots.at(-1));
    if (site !== null) sites.push(site);
  }
  const servers = http.filter((d) => d.name === 'server').length;
  for (const root of roots) if (!sites.some((s) => s.usedRoots.has(root))) c.unsupported(root, 'in http');
  // With no server to inherit them, http's realip settings still get their warnings.
  if (servers === 0) serverRealIp(c, realIp, {}, []);
  settings.writeTo(c.top);
  applyUsages(c);
  // After http: an http upstream keeps its name, a stream upstream with the same name is refused.
  for (const d of streamBlocks) convertStream(c, d);
  const out: Mutable<RawConfig> = c.top.servers.length === 0 && c.streams.length > 0 ? {} : { servers: c.top.servers };
  // nginx runs one worker unless worker_processes says otherwise; sessionlb's default is one per
  // CPU, which would also change the weighted order each worker walks. A conf.d snippet (no
  // http/events block) does not say: sessionlb's default stays (docs/migrating-from-nginx.md says so).
  if (workers !== undefined) out.workers = workers;
  else if (mainContext) out.workers = 1;
  if (c.streams.length > 0) out.streams = c.streams;
  if (c.upstreams.size > 0) {
    // Keys in the order the README documents them.
    const order = ['balance', 'sticky', 'healthCheck', 'servers', 'keepalive', 'keepaliveTimeout', 'nextUpstream', 'timeouts'] as const;
    out.upstreams = Object.fromEntries([...c.upstreams].map(([name, up]) => [
      name,
      Object.fromEntries(order.filter((k) => up[k] !== undefined).map((k) => [k, up[k]])) as RawUpstream,
    ]));
  }
  if (c.top.clientMaxBodySize !== undefined) out.clientMaxBodySize = c.top.clientMaxBodySize;
  for (const k of UPSTREAM_TLS_KEYS) if (c.top[k] !== undefined) (out as Record<string, unknown>)[k] = c.top[k];
  if (c.top.keepaliveTimeout !== undefined) out.keepaliveTimeout = c.top.keepaliveTimeout;
  if (c.top.accessLog !== undefined) out.accessLog = c.top.accessLog;
  if (c.top.proxyProtocolFrom !== undefined) out.proxyProtocolFrom = c.top.proxyProtocolFrom;
  if (c.top.realIp !== undefined) out.realIp = c.top.realIp;
  writeAccess(c.top, out as Record<string, unknown>);
  writeHeaders(c.top as HeaderScope, out as Record<string, unknown>);
  writeCompression(c.top, out as Record<string, unknown>);
  writeLimitZones(c, out as Record<string, unknown>);
  writeLimits(settings.limits, out as Record<string, unknown>);
  writeHttpErrorPages(c, settings.errorPages, out as Record<string, unknown>, sites, roots.at(-1));
  return out;
}

/** nginx `worker_processes N | auto` -> `workers`; null when the value is not one of those. */
function workerProcesses(c: Conversion, d: NginxDirective): number | 'auto' | null {
  const a = c.oneArg(d);
  if (a === null) return null;
  if (a === 'auto') return 'auto';
  if (/^[1-9]\d{0,2}$/.test(a) && Number(a) <= 256) return Number(a);
  c.error(d.line, `"worker_processes": "${a}" is not "auto" or a number of workers (1-256)`);
  return null;
}

function accessLog(c: Conversion, d: NginxDirective): void {
  const a = c.oneArg(d);
  if (a === null) return;
  if (c.top.accessLog !== undefined) {
    c.warn(d.line, '"access_log": sessionlb writes one access log; this one replaces the previous "access_log"');
  }
  if (a === 'off') {
    c.top.accessLog = false;
    return;
  }
  c.top.accessLog = { path: a };
  c.warn(d.line, `"access_log": sessionlb writes one JSON object per request to ${a}${d.args.length > 1 ? `; the format/parameters "${d.args.slice(1).join(' ')}" are ignored` : ', not nginx\'s "combined" format'}`);
}
