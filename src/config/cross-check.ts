/**
 * Checks that need more than one field's shape (a proxyPass naming an upstream, an
 * address that must parse), run on the raw parsed JSON even when the shape is wrong
 * elsewhere, so `sessionlb check` prints every problem in one go (like `nginx -t`
 * would after fixing each in turn). `load.ts` runs the same rules on a valid file.
 */
import { BlockList, isIP } from 'node:net';
import { addCidrTo } from '../net/client-address.js';

export { addCidrTo };
import { parseHostPort, formatHostPort, wildcardClashes } from '../nginx-language/address.js';
import { formatPath, type ConfigProblem } from './schema.js';
import { balanceProblems } from './balance.js';
import { streamProblems } from './streams.js';
import { proxyProtocolProblems } from './proxy-protocol.js';
import { locationKey } from './locations.js';
import { HttpListens, locationTlsProblems } from './tls.js';

export const UPSTREAM_NAME = /^[A-Za-z0-9_.-]+$/;
export const UPSTREAM_NAME_MESSAGE = 'upstream names may contain only letters, digits, "_", "-" and "."';

export type ProxyPassTarget =
  | { kind: 'upstream'; name: string; uri: string; tls: boolean }
  | { kind: 'address'; host: string; port: number; key: string; uri: string; tls: boolean }
  | { kind: 'error'; message: string };

/**
 * Parses nginx `proxy_pass`: "http://<upstream name>" or "http://host:port", optionally followed
 * by a URI; "https://" the same, with TLS to the upstream (`tls`; a missing port is then 443).
 * `isUpstream` tells whether a name is a defined (named) upstream.
 */
export function parseProxyPass(text: string, isUpstream: (name: string) => boolean): ProxyPassTarget {
  const m = /^(https?):\/\/([^/?#]+)([^?#]*)$/.exec(text);
  if (!m) return { kind: 'error', message: 'must be "http://upstream_name" or "http://host:port", or the same with "https://" (optionally followed by a URI path)' };
  const scheme = m[1]!;
  const tls = scheme === 'https';
  const target = m[2]!;
  const uri = m[3]!;
  if (isUpstream(target)) return { kind: 'upstream', name: target, uri, tls };
  if (/:\d+$/.test(target) || isIP(target.replace(/^\[|\]$/g, '')) !== 0) {
    const hp = parseHostPort(target, tls ? 443 : 80);
    if (typeof hp === 'string') return { kind: 'error', message: hp };
    return { kind: 'address', host: hp.host, port: hp.port, key: formatHostPort(hp.host, hp.port), uri, tls };
  }
  return { kind: 'error', message: `no upstream named "${target}" (define it under $.upstreams, or use "${scheme}://host:port")` };
}

/** Headers sessionlb itself manages per connection and per body: setting them would break framing (request smuggling). */
const MANAGED_HEADERS = new Set([
  'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'te', 'trailer', 'upgrade', 'proxy-connection',
]);

/** What is wrong with one `proxySetHeader` entry, or null. */
export function setHeaderProblem(name: string, value: string): string | null {
  if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) return 'is not a valid header name';
  if (/[\r\n\0]/.test(value)) return 'header values may not contain CR, LF or NUL';
  if (value !== '' && MANAGED_HEADERS.has(name.toLowerCase())) {
    return `cannot be set: sessionlb manages "${name}" itself (connection handling and body framing); only "" is accepted`;
  }
  return null;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function each(v: unknown, fn: (item: unknown, i: number) => void): void {
  if (Array.isArray(v)) v.forEach(fn);
}

/**
 * The cross-field and address problems of a raw config whose shape may be invalid.
 * Parts whose shape is wrong are skipped (the shape check reports them).
 */
export function crossFieldProblems(raw: unknown): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const add = (path: PropertyKey[], message: string): void => { problems.push({ path: formatPath(path), message }); };
  if (!isObject(raw)) return problems;

  const upstreamNames = new Set<string>();
  if (isObject(raw.upstreams)) {
    for (const [name, up] of Object.entries(raw.upstreams)) {
      if (!UPSTREAM_NAME.test(name)) {
        add(['upstreams', name], UPSTREAM_NAME_MESSAGE);
        continue;
      }
      upstreamNames.add(name);
      if (!isObject(up)) continue;
      balanceProblems(up, ['upstreams', name], add);
      const seen = new Set<string>();
      each(up.servers, (s, i) => {
        if (!isObject(s) || typeof s.address !== 'string' || s.address === '') return;
        const hp = parseHostPort(s.address, 80);
        if (typeof hp === 'string') return add(['upstreams', name, 'servers', i, 'address'], hp);
        const key = formatHostPort(hp.host, hp.port);
        if (seen.has(key)) add(['upstreams', name, 'servers', i, 'address'], `duplicate server ${key}`);
        seen.add(key);
      });
    }
  }

  const listens = new ListenOverlap();
  const httpListens = new HttpListens(add);
  const tlsReported = new Set<string>();
  each(raw.servers, (vs, i) => {
    if (!isObject(vs)) return;
    const parsed = httpListens.server(vs, i);
    parsed.listen.forEach((l, k) => listens.add(l.host, l.port, parsed.at[k]!));
    const seen = new Set<string>();
    each(vs.locations, (loc, j) => {
      if (!isObject(loc)) return;
      if (typeof loc.path === 'string') {
        const key = locationKey(loc);
        if (seen.has(key)) add(['servers', i, 'locations', j, 'path'], `duplicate location "${key}"`);
        seen.add(key);
      }
      if (isObject(loc.proxySetHeader)) {
        for (const [name, value] of Object.entries(loc.proxySetHeader)) {
          const bad = typeof value === 'string' ? setHeaderProblem(name, value) : null;
          if (bad !== null) add(['servers', i, 'locations', j, 'proxySetHeader', name], bad);
        }
      }
      if (typeof loc.proxyPass !== 'string') return;
      // When $.upstreams itself is malformed its names are unknown: do not guess.
      const namesKnown = raw.upstreams === undefined || isObject(raw.upstreams);
      const target = parseProxyPass(loc.proxyPass, (n) => !namesKnown || upstreamNames.has(n));
      if (target.kind === 'error') return add(['servers', i, 'locations', j, 'proxyPass'], target.message);
      const levels = [{ raw, at: [] }, { raw: vs, at: ['servers', i] }, { raw: loc, at: ['servers', i, 'locations', j] }];
      locationTlsProblems(levels, target.tls, add, tlsReported);
    });
  });

  problems.push(...listens.problems());

  if (isObject(raw.admin)) {
    if (typeof raw.admin.listen === 'string') {
      const hp = parseHostPort(raw.admin.listen, undefined, '127.0.0.1');
      if (typeof hp === 'string') add(['admin', 'listen'], hp);
    }
    const scratch = new BlockList();
    each(raw.admin.allow, (cidr, j) => {
      if (typeof cidr !== 'string') return;
      const err = addCidrTo(scratch, cidr);
      if (err) add(['admin', 'allow', j], err);
    });
  }
  streamProblems(raw, add);
  proxyProtocolProblems(raw, add);
  return problems;
}

/**
 * A port bound on the wildcard address (`0.0.0.0:80`, `[::]:80`) cannot also be bound on a
 * specific address of the same family (`127.0.0.1:80`): the second bind fails. nginx hides this
 * by binding only the wildcard; sessionlb asks for one consistent address instead.
 */
export class ListenOverlap {
  private readonly seen: { host: string; port: number; path: PropertyKey[] }[] = [];

  add(host: string, port: number, path: PropertyKey[]): void {
    this.seen.push({ host, port, path });
  }

  problems(): ConfigProblem[] {
    const out: ConfigProblem[] = [];
    wildcardClashes(this.seen, (s, w) => out.push({
      path: formatPath(s.path),
      message: `${formatHostPort(s.host, s.port)} cannot be bound together with ${formatHostPort(w.host, w.port)} (${formatPath(w.path)}); listen on the same address in both servers`,
    }));
    return out;
  }
}

/** Shape problems first, then cross-field ones not already reported for the same path. */
export function mergeProblems(shape: ConfigProblem[], cross: ConfigProblem[]): ConfigProblem[] {
  const paths = new Set(shape.map((p) => p.path));
  return [...shape, ...cross.filter((p) => !paths.has(p.path))];
}
