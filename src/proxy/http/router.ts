/**
 * Request routing as nginx does it: the listener's virtual server by Host
 * (nginx-language/server-names.ts: exact name, longest `*.suffix` / `.suffix`, longest
 * `prefix.*`, then the default server), then the location (`exact` first, then the longest prefix).
 * Built once per config; lookups allocate nothing for plain paths.
 */
import type { LocationConfig, VirtualServerConfig } from '../../config/model.js';
import { ServerNames } from '../../nginx-language/server-names.js';
import { RealIp } from '../../net/real-ip.js';

export { normaliseHost } from '../../nginx-language/server-names.js';

export interface VirtualServerRoutes<R> {
  /** The first server name ("_" when none): the `server` label of metrics. */
  readonly name: string;
  /** The server's `realIp`, built once per config; null: the connection's address is the client's. */
  readonly realIp: RealIp | null;
  readonly exact: Map<string, R>;
  /** Prefix locations, longest first. */
  readonly prefixes: { path: string; route: R }[];
}

/** The virtual servers of one listen address, chosen by `Host` with nginx's server name rules. */
export class ListenerRouter<R> {
  private readonly names = new ServerNames<VirtualServerRoutes<R>>();

  /** Adds a server; `isDefault`: `default_server` on this address (its listen entry, or the server's `default` key). */
  add(vsConfig: VirtualServerConfig, vs: VirtualServerRoutes<R>, isDefault = vsConfig.isDefault): void {
    this.names.add(vsConfig.serverNames, vs, isDefault);
  }

  /** The virtual server for a Host header value. */
  serverFor(hostHeader: string | undefined): VirtualServerRoutes<R> {
    return this.names.lookup(hostHeader)!;
  }
}

export function buildVirtualServer<R>(vs: VirtualServerConfig, makeRoute: (loc: LocationConfig) => R): VirtualServerRoutes<R> {
  const exact = new Map<string, R>();
  const prefixes: { path: string; route: R }[] = [];
  for (const loc of vs.locations) {
    const route = makeRoute(loc);
    if (loc.exact) exact.set(loc.path, route);
    else prefixes.push({ path: loc.path, route });
  }
  prefixes.sort((a, b) => b.path.length - a.path.length);
  return { name: vs.serverNames[0] ?? '_', realIp: vs.realIp == null ? null : new RealIp(vs.realIp), exact, prefixes };
}

/** The location for a normalised path, or null (404). */
export function matchLocation<R>(vs: VirtualServerRoutes<R>, path: string): R | null {
  if (vs.exact.size !== 0) {
    const e = vs.exact.get(path);
    if (e !== undefined) return e;
  }
  const prefixes = vs.prefixes;
  for (let i = 0; i < prefixes.length; i++) {
    if (path.startsWith(prefixes[i]!.path)) return prefixes[i]!.route;
  }
  return null;
}

/**
 * The request target's path for location matching, normalised as nginx does
 * (percent-decoding, `.`/`..` segments, merged slashes). Returns null for a target
 * nginx would answer with 400 (not origin-form, bad escapes, climbing above the root).
 */
export function pathForMatching(url: string): string | null {
  let end = url.indexOf('?');
  if (end < 0) end = url.length;
  const hash = url.indexOf('#');
  if (hash >= 0 && hash < end) end = hash;
  let path = url.slice(0, end);
  if (path.charCodeAt(0) !== 47 /* / */) {
    // absolute-form (a request to a proxy): http://host/path
    const m = /^https?:\/\/[^/]*(\/.*)?$/i.exec(path);
    if (!m) return null;
    path = m[1] ?? '/';
  }
  if (path.indexOf('%') < 0 && path.indexOf('/.') < 0 && path.indexOf('//') < 0) return path;
  let decoded: string;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    return null;
  }
  if (decoded.indexOf('\0') >= 0) return null;
  const out: string[] = [];
  for (const seg of decoded.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') {
      if (out.length === 0) return null;
      out.pop();
      continue;
    }
    out.push(seg);
  }
  const trailing = decoded.endsWith('/') || decoded.endsWith('/.') || decoded.endsWith('/..');
  return '/' + out.join('/') + (trailing && out.length > 0 ? '/' : '');
}
