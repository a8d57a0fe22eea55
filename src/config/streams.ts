/**
 * `streams`: TCP (L4) proxies, nginx's `stream { server { listen ...; proxy_pass ...; } }`.
 * The rules work on raw JSON (like cross-check.ts) so that `check` reports them even when
 * the shape of another part of the file is wrong; `normaliseStreams` builds the runtime
 * form of a file that passed them.
 *
 * nginx's stream module shares the upstream concepts of the http one (weights, backup, down,
 * max_fails/fail_timeout, max_conns, hash, least_conn, random) but has no `ip_hash` and no
 * HTTP variables, and sessionlb's `sticky` modes other than `source` read HTTP cookies: an
 * upstream a stream uses may have none of these.
 */
import { formatHostPort, parseHostPort, wildcardClashes } from '../nginx-language/address.js';
import { parseListen } from '../nginx-language/listen.js';
import { formatPath, type RawConfig } from './schema.js';
import { DURATION_PATTERN, SIZE_PATTERN, parseDuration, parseSize } from '../nginx-language/units.js';
import { compileTemplate } from '../nginx-language/variables.js';
import type { StreamConfig, StreamListen, StreamRouteConfig } from './model.js';

export const STREAM_DEFAULTS = {
  proxyConnectTimeout: '60s',
  proxyTimeout: '10m',
  nextUpstream: true,
  nextUpstreamTries: 0,
  nextUpstreamTimeout: '0s',
} as const;

/** Variables a stream's hash key may use (nginx stream has no request, hence no HTTP variables). */
const STREAM_VARIABLES = new Set(['remote_addr']);

export type StreamTarget =
  | { kind: 'upstream'; name: string }
  | { kind: 'address'; host: string; port: number; key: string }
  | { kind: 'error'; message: string };

/** nginx stream `proxy_pass`: an upstream name or `host:port` (the port is required). */
export function parseStreamProxyPass(text: string, isUpstream: (name: string) => boolean): StreamTarget {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
    return { kind: 'error', message: 'a stream passes bytes, not HTTP: write the upstream name ("pg") or "host:port", without a scheme' };
  }
  if (isUpstream(text)) return { kind: 'upstream', name: text };
  if (/:\d+$/.test(text)) {
    const hp = parseHostPort(text, undefined);
    if (typeof hp === 'string') return { kind: 'error', message: hp };
    return { kind: 'address', host: hp.host, port: hp.port, key: formatHostPort(hp.host, hp.port) };
  }
  return { kind: 'error', message: `no upstream named "${text}" (define it under $.upstreams, or use "host:port")` };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const DURATION = new RegExp(DURATION_PATTERN);
const SIZE = new RegExp(SIZE_PATTERN);
function durationMs(v: unknown): number | null {
  return typeof v === 'string' && DURATION.test(v) ? parseDuration(v) : null;
}

export const STREAM_ROUTE_DEFAULTS = {
  onNonTls: 'default',
  prereadTimeout: '30s',
  prereadBufferSize: '16k',
} as const;

const NAME_LABELS = /^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/;

/**
 * A `route.map` key of `"by": "sni"` as nginx's map with `hostnames` takes it (lower-cased):
 * an exact name, `*.example.com` or `.example.com` (the latter also matches `example.com`),
 * `www.example.*`. Returns the problem, or null.
 */
export function sniKeyProblem(key: string): string | null {
  if (key.startsWith('~')) return 'regular expressions are not supported: write the names, or wildcards ("*.example.com", ".example.com", "www.example.*")';
  const k = key.toLowerCase();
  const body = k.startsWith('*.') ? k.slice(2) : k.startsWith('.') ? k.slice(1) : k.endsWith('.*') ? k.slice(0, -2) : k;
  if (body.length === 0 || body.length > 253 || !NAME_LABELS.test(body)) {
    return 'must be a server name: "shop.example.com", "*.example.com", ".example.com" or "www.example.*" (letters, digits, "-", "_"; a "*" only as a whole first or last label)';
  }
  return null;
}

/** A `route` of a stream: its keys and where they point (targets collects the values for the caller's checks). */
function routeProblems(route: Record<string, unknown>, at: PropertyKey[], add: (path: PropertyKey[], message: string) => void, targets: [PropertyKey[], unknown][]): void {
  const timeout = durationMs(route.prereadTimeout);
  if (timeout !== null && timeout < 1) add([...at, 'prereadTimeout'], 'must be at least "1ms"');
  if (typeof route.prereadBufferSize === 'string' && SIZE.test(route.prereadBufferSize)) {
    const n = parseSize(route.prereadBufferSize);
    if (n < 512 || n > 1024 * 1024) add([...at, 'prereadBufferSize'], 'must be between "512" and "1m" (a ClientHello is rarely over 2k; nginx\'s default is "16k")');
  }
  if (route.default !== undefined) targets.push([[...at, 'default'], route.default]);
  if (!isObject(route.map)) return;
  const keys = Object.keys(route.map);
  if (keys.length === 0 && route.default === undefined) add([...at, 'map'], 'is empty and there is no "default": no connection could go anywhere');
  const seen = new Map<string, string>();
  for (const key of keys) {
    const path = [...at, 'map', key];
    targets.push([path, route.map[key]]);
    if (route.by === 'sni') {
      const problem = sniKeyProblem(key);
      if (problem !== null) {
        add(path, problem);
        continue;
      }
    } else if (route.by === 'alpn') {
      if (key.length === 0 || key.length > 255 || !/^[\x21-\x7e]+$/.test(key)) {
        add(path, 'must be an ALPN protocol name such as "h2" or "http/1.1" (1 to 255 visible ASCII characters)');
        continue;
      }
    }
    const norm = route.by === 'sni' ? key.toLowerCase() : key;
    const other = seen.get(norm);
    if (other !== undefined) add(path, `is the key "${other}" again (server names are case-insensitive)`);
    else seen.set(norm, key);
  }
}

/**
 * Every problem of `streams` and of what it refers to, on the raw JSON (shape not assumed):
 * listen addresses (parse, duplicates, clashes with HTTP and admin listeners), proxyPass,
 * and the upstream features a stream cannot use (ip_hash, HTTP variables, sticky other than `source`).
 * Also the rule that a file needs `servers` or `streams`.
 */
export function streamProblems(raw: unknown, add: (path: PropertyKey[], message: string) => void): void {
  if (!isObject(raw)) return;
  const streams = raw.streams;
  const hasStreams = Array.isArray(streams) && streams.length > 0;
  if (raw.servers === undefined && !hasStreams) add(['servers'], 'is required');
  if (!Array.isArray(streams)) return;

  // Every listen address of the file, to find clashes with a stream's.
  const taken = new Map<string, string>();
  const all: { host: string; port: number; where: string; stream: boolean; path: PropertyKey[] }[] = [];
  if (Array.isArray(raw.servers)) {
    raw.servers.forEach((vs: unknown, i: number) => {
      if (!isObject(vs) || !Array.isArray(vs.listen)) return;
      vs.listen.forEach((text: unknown, j: number) => {
        if (typeof text !== 'string') return;
        const hp = parseListen(text);
        if (typeof hp === 'string') return;
        const key = formatHostPort(hp.host, hp.port);
        if (!taken.has(key)) taken.set(key, `$.servers[${i}]`);
        all.push({ host: hp.host, port: hp.port, where: formatPath(['servers', i, 'listen', j]), stream: false, path: ['servers', i, 'listen', j] });
      });
    });
  }
  if (isObject(raw.admin) && typeof raw.admin.listen === 'string') {
    const hp = parseHostPort(raw.admin.listen, undefined, '127.0.0.1');
    if (typeof hp !== 'string') taken.set(formatHostPort(hp.host, hp.port), '$.admin.listen');
  }

  const upstreams = isObject(raw.upstreams) ? raw.upstreams : null;
  const namesKnown = raw.upstreams === undefined || upstreams !== null;
  const reported = new Set<string>();
  streams.forEach((st: unknown, i: number) => {
    if (!isObject(st)) return;
    if (Array.isArray(st.listen)) {
      st.listen.forEach((text: unknown, j: number) => {
        if (typeof text !== 'string') return;
        const hp = parseListen(text);
        if (typeof hp === 'string') return add(['streams', i, 'listen', j], hp);
        if (hp.ssl || hp.defaultServer || hp.http2) {
          add(['streams', i, 'listen', j], `"${hp.ssl ? 'ssl' : hp.http2 ? 'http2' : 'default_server'}" is an HTTP listen parameter; a stream takes only "proxy_protocol"`);
        }
        const key = formatHostPort(hp.host, hp.port);
        const other = taken.get(key);
        if (other !== undefined) {
          add(['streams', i, 'listen', j], `${key} is already a listen address of ${other}`);
        } else {
          taken.set(key, `$.streams[${i}]`);
        }
        all.push({ host: hp.host, port: hp.port, where: formatPath(['streams', i, 'listen', j]), stream: true, path: ['streams', i, 'listen', j] });
      });
    }
    const connect = durationMs(st.proxyConnectTimeout);
    if (connect !== null && connect < 1) add(['streams', i, 'proxyConnectTimeout'], 'must be at least "1ms"');
    // Where the stream's connections may go: proxyPass, or the route's map values and default.
    const targets: [PropertyKey[], unknown][] = [];
    if (st.route !== undefined && st.proxyPass !== undefined) {
      add(['streams', i, 'route'], 'a stream has "proxyPass" or "route", not both (the route\'s "default" takes the place of proxyPass)');
    } else if (st.route === undefined && st.proxyPass === undefined) {
      add(['streams', i, 'proxyPass'], 'is required (or "route")');
    }
    if (st.proxyPass !== undefined) targets.push([['streams', i, 'proxyPass'], st.proxyPass]);
    if (isObject(st.route)) routeProblems(st.route, ['streams', i, 'route'], add, targets);
    for (const [path, text] of targets) {
      if (typeof text !== 'string' || text === '') continue;
      const target = parseStreamProxyPass(text, (n) => !namesKnown || (upstreams !== null && Object.hasOwn(upstreams, n)));
      if (target.kind === 'error') add(path, target.message);
      else if (target.kind === 'upstream') usedBy(target.name, i);
    }
  });

  /** The upstream features a stream cannot use, once per upstream. */
  function usedBy(name: string, i: number): void {
    if (upstreams === null || reported.has(name)) return;
    const up = upstreams[name];
    if (!isObject(up)) return;
    reported.add(name);
    const user = `$.streams[${i}]`;
    if (up.balance === 'ip_hash') {
      add(['upstreams', name, 'balance'],
        `"ip_hash" cannot be used by a stream (${user} uses this upstream; nginx's stream module has no ip_hash): use {"hash": "$remote_addr"}`);
    }
    if (isObject(up.balance) && typeof up.balance.hash === 'string') {
      const key = compileTemplate(up.balance.hash);
      if (typeof key !== 'string') {
        const http = key.variables.filter((v) => !STREAM_VARIABLES.has(v));
        if (http.length > 0) {
          add(['upstreams', name, 'balance', 'hash'],
            `${http.map((v) => `$${v}`).join(', ')} ${http.length === 1 ? 'is an HTTP variable' : 'are HTTP variables'}, but ${user} uses this upstream: a stream's hash key may use only $remote_addr`);
        }
      }
    }
    if (isObject(up.sticky) && typeof up.sticky.mode === 'string' && up.sticky.mode !== 'source') {
      add(['upstreams', name, 'sticky', 'mode'],
        `"${up.sticky.mode}" reads HTTP cookies, but ${user} uses this upstream: use "source" (the client address bound to a server in the session store), or give the stream an upstream of its own (same servers)`);
    }
  }

  // A wildcard and a specific address on one port cannot both be bound; pairs of two HTTP listen
  // addresses are ListenOverlap's to report (cross-check.ts).
  wildcardClashes(all, (s, w) => {
    if (s.stream || w.stream) add(s.path, `${formatHostPort(s.host, s.port)} cannot be bound together with ${formatHostPort(w.host, w.port)} (${w.where}); use the same address`);
  });
}

/**
 * The runtime form of `streams` (its problems were reported by streamProblems). `implicit`
 * makes the one-server upstream for a `host:port` proxyPass and returns its name.
 */
export function normaliseStreams(raw: RawConfig, isUpstream: (name: string) => boolean, implicit: (key: string, path: PropertyKey[]) => string): StreamConfig[] {
  const out: StreamConfig[] = [];
  (raw.streams ?? []).forEach((st, i) => {
    const listen: StreamListen[] = [];
    for (const text of st.listen) {
      const hp = parseListen(text);
      if (typeof hp !== 'string') listen.push({ host: hp.host, port: hp.port, key: formatHostPort(hp.host, hp.port), proxyProtocol: hp.proxyProtocol });
    }
    const resolve = (text: string, path: PropertyKey[]): string | null => {
      const target = parseStreamProxyPass(text, isUpstream);
      if (target.kind === 'error') return null;
      return target.kind === 'upstream' ? target.name : implicit(target.key, path);
    };
    let upstream: string | null = null;
    let route: StreamRouteConfig | null = null;
    if (st.route !== undefined) {
      const r = st.route;
      const map = new Map<string, string>();
      for (const [key, text] of Object.entries(r.map)) {
        const name = resolve(text, ['streams', i, 'route', 'map', key]);
        if (name === null) return;
        map.set(r.by === 'sni' ? key.toLowerCase() : key, name);
      }
      const dflt = r.default === undefined ? null : resolve(r.default, ['streams', i, 'route', 'default']);
      if (r.default !== undefined && dflt === null) return;
      route = {
        by: r.by,
        map,
        default: dflt,
        onNonTls: r.onNonTls ?? STREAM_ROUTE_DEFAULTS.onNonTls,
        prereadTimeoutMs: parseDuration(r.prereadTimeout ?? STREAM_ROUTE_DEFAULTS.prereadTimeout),
        prereadBufferSize: parseSize(r.prereadBufferSize ?? STREAM_ROUTE_DEFAULTS.prereadBufferSize),
      };
    } else {
      if (st.proxyPass === undefined) return;
      upstream = resolve(st.proxyPass, ['streams', i, 'proxyPass']);
      if (upstream === null) return;
    }
    out.push({
      index: i,
      listen,
      upstream,
      route,
      connectTimeoutMs: parseDuration(st.proxyConnectTimeout ?? STREAM_DEFAULTS.proxyConnectTimeout),
      timeoutMs: parseDuration(st.proxyTimeout ?? STREAM_DEFAULTS.proxyTimeout),
      nextUpstream: st.nextUpstream ?? STREAM_DEFAULTS.nextUpstream,
      nextUpstreamTries: st.nextUpstreamTries ?? STREAM_DEFAULTS.nextUpstreamTries,
      nextUpstreamTimeoutMs: parseDuration(st.nextUpstreamTimeout ?? STREAM_DEFAULTS.nextUpstreamTimeout),
      proxyProtocol: st.proxyProtocol ?? false,
      proxyProtocolFrom: st.proxyProtocolFrom ?? raw.proxyProtocolFrom ?? [],
    });
  });
  return out;
}
