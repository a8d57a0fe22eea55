/**
 * Request routing as nginx does it: the listener's virtual server by Host
 * (nginx-language/server-names.ts: exact name, longest `*.suffix` / `.suffix`, longest
 * `prefix.*`, then the default server), a server-level `return` before anything else, then the
 * location in nginx's order: "=" first; then the longest prefix, which wins at once when it is
 * "^~"; else the regular expressions ("~", "~*") in config order, the first that matches; else
 * that longest prefix. A request for a proxied location's path ending in "/" without the slash
 * ("/images" for "/images/") gets nginx's 301 to it. Built once per config (regexes compiled at
 * load); lookups allocate nothing for plain paths.
 */
import type { ErrorPages } from '../../config/error-pages.js';
import type { AddHeaderConfig, LocationConfig, ReturnConfig, VirtualServerConfig } from '../../config/model.js';
import { ServerNames } from '../../nginx-language/server-names.js';
import { RealIp } from '../../net/real-ip.js';
import { compileTemplate, type CompiledTemplate } from '../../nginx-language/variables.js';

export { normaliseHost } from '../../nginx-language/server-names.js';

/** A `return` (of the server or a location): answered by the listener (return.ts), nothing is proxied. */
export class ReturnRoute {
  constructor(readonly ret: ReturnConfig, readonly location: LocationConfig | null) {}
}

export interface VirtualServerRoutes<R> {
  /** The first server name ("_" when none): the `server` label of metrics. */
  readonly name: string;
  /** The server's `realIp`, built once per config; null: the connection's address is the client's. */
  readonly realIp: RealIp | null;
  /** nginx error_page of the server; null = none. */
  readonly errorPages: ErrorPages | null;
  /** A server-level `return`: every request gets it; null = none. */
  readonly serverReturn: ReturnRoute | null;
  /** nginx add_header of the server level: its `return` and a path no location takes. */
  readonly addHeaders: readonly AddHeaderConfig[];
  /** Some error page of the server or its locations is a `uri` (served through a location of this server). */
  readonly uriPages: boolean;
  readonly exact: Map<string, R | ReturnRoute>;
  /** Prefix locations, longest first; `stop`: "^~" (no regex search after it). */
  readonly prefixes: { path: string; stop: boolean; route: R | ReturnRoute }[];
  /** Regular expression locations, in config order. */
  readonly regexes: { regex: RegExp; route: R | ReturnRoute }[];
  /**
   * The union of `regexes` (one alternation per flag set, at most two): one test tells whether any
   * matches, so a path no regex location takes costs one scan instead of one per regex (20 regexes:
   * ~60 ns instead of ~500 ns). null when a pattern cannot be joined (backreferences, named groups).
   */
  readonly anyRegex: readonly RegExp[] | null;
  /**
   * nginx's auto_redirect: the path of a proxied location ending in "/" without that slash (when no
   * location is named so) -> a 301 to the location's path, before any regex is tried.
   */
  readonly slashRedirects: Map<string, ReturnRoute>;
}

const ARGS = compileTemplate('$args') as CompiledTemplate;

/** nginx's redirect of "/dir" to a location "/dir/": Location is the location's escaped name, then "?args" if any. */
function slashRedirect(path: string): ReturnRoute {
  const escaped = encodeURI(path);
  const url: CompiledTemplate = {
    source: escaped,
    variables: ['args'],
    evaluate: (src) => {
      const args = ARGS.evaluate(src);
      return args === '' ? escaped : `${escaped}?${args}`;
    },
  };
  return new ReturnRoute({ code: 301, url, text: null }, null);
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
  const exact = new Map<string, R | ReturnRoute>();
  const prefixes: { path: string; stop: boolean; route: R | ReturnRoute }[] = [];
  const regexes: { regex: RegExp; route: R | ReturnRoute }[] = [];
  for (const loc of vs.locations) {
    const route = loc.return !== null ? new ReturnRoute(loc.return, loc) : makeRoute(loc);
    if (loc.regex !== null) regexes.push({ regex: loc.regex, route });
    else if (loc.exact) exact.set(loc.path, route);
    else prefixes.push({ path: loc.path, stop: loc.match === '^~', route });
  }
  prefixes.sort((a, b) => b.path.length - a.path.length);
  const slashRedirects = new Map<string, ReturnRoute>();
  for (const loc of vs.locations) {
    if (loc.return !== null || loc.regex !== null || loc.path.length < 2 || !loc.path.endsWith('/')) continue;
    const bare = loc.path.slice(0, -1);
    if (!vs.locations.some((l) => l.regex === null && l.path === bare)) slashRedirects.set(bare, slashRedirect(loc.path));
  }
  const serverReturn = vs.return === null ? null : new ReturnRoute(vs.return, null);
  const uriPages = [vs.errorPages, ...vs.locations.map((l) => l.errorPages)].some((pages) => [...(pages?.values() ?? [])].some((p) => p.kind === 'uri'));
  return { name: vs.serverNames[0] ?? '_', addHeaders: vs.addHeaders, uriPages, errorPages: vs.errorPages ?? null, realIp: vs.realIp == null ? null : new RealIp(vs.realIp), serverReturn, exact, prefixes, regexes, anyRegex: unionOf(regexes.map((r) => r.regex)), slashRedirects };
}

/** The alternation of `list` per flag set (see VirtualServerRoutes.anyRegex); null when one cannot be joined or there are fewer than 3. */
function unionOf(list: RegExp[]): RegExp[] | null {
  if (list.length < 3 || list.some((r) => /\\[1-9]|\\k<|\(\?<[^=!]/.test(r.source))) return null;
  const byFlags = new Map<string, string[]>();
  for (const r of list) {
    const sources = byFlags.get(r.flags);
    if (sources === undefined) byFlags.set(r.flags, [`(?:${r.source})`]);
    else sources.push(`(?:${r.source})`);
  }
  return [...byFlags].map(([flags, sources]) => new RegExp(sources.join('|'), flags));
}

/** The location for a normalised path (or the server's `return`), or null (404). */
export function matchLocation<R>(vs: VirtualServerRoutes<R>, path: string): R | ReturnRoute | null {
  if (vs.serverReturn !== null) return vs.serverReturn;
  if (vs.exact.size !== 0) {
    const e = vs.exact.get(path);
    if (e !== undefined) return e;
  }
  if (vs.slashRedirects.size !== 0) {
    const r = vs.slashRedirects.get(path);
    if (r !== undefined) return r;
  }
  const prefixes = vs.prefixes;
  let prefix: { stop: boolean; route: R | ReturnRoute } | null = null;
  for (let i = 0; i < prefixes.length; i++) {
    if (path.startsWith(prefixes[i]!.path)) {
      prefix = prefixes[i]!;
      if (prefix.stop) return prefix.route;
      break;
    }
  }
  const regexes = vs.regexes;
  const any = vs.anyRegex;
  if (any !== null) {
    let hit = false;
    for (let i = 0; i < any.length && !hit; i++) hit = any[i]!.test(path);
    if (!hit) return prefix === null ? null : prefix.route;
  }
  for (let i = 0; i < regexes.length; i++) {
    if (regexes[i]!.regex.test(path)) return regexes[i]!.route;
  }
  return prefix === null ? null : prefix.route;
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
