/**
 * Listen parameters (`"0.0.0.0:443 ssl"`), TLS termination (a server's `ssl` block, `http2`) and
 * TLS to upstreams (`proxyPass: "https://..."`, the proxySsl* keys). The rules work on raw JSON,
 * like cross-check.ts, so that `check` reports them even when the shape of another part of the
 * file is wrong; load.ts runs the same rules and builds the model from them.
 *
 * nginx treats `ssl` and `default_server` per address (every server on one address is reached
 * through the same socket); a server's certificate is then chosen by SNI among the servers of
 * the address, with the `serverName` rules.
 */
import { resolve as resolvePath } from 'node:path';
import { formatHostPort } from '../nginx-language/address.js';
import { parseListen } from '../nginx-language/listen.js';
import { DURATION_PATTERN, parseDuration } from '../nginx-language/units.js';
import { TLS_DEFAULTS, type ServerListen, type SslConfig, type TlsProtocol, type UpstreamTlsConfig } from './model.js';
import { formatPath, type RawSsl, type RawUpstreamTls } from './schema.js';

type Add = (path: PropertyKey[], message: string) => void;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export const H2C_MESSAGE = 'sessionlb offers HTTP/2 only over TLS (h2c is not offered)';

/** One server's listen entries that parse, with where each is in the file. */
export interface ServerListens {
  listen: ServerListen[];
  /** `at[k]` is the JSON path of `listen[k]`. */
  at: PropertyKey[][];
  /** The server's `http2` key, or the `http2` listen parameter on one of its entries. */
  http2: boolean;
}

/**
 * The listen entries of every virtual server, in file order: parses each (address and parameters)
 * and checks it against the servers before it (ssl per address, one default server per address),
 * and the server's own `ssl` and `http2` keys against its entries. Problems go to `add`.
 */
export class HttpListens {
  /** Address key -> its first entry (ssl agrees with it). */
  private readonly first = new Map<string, { ssl: boolean; at: PropertyKey[] }>();
  /** Address key -> the index of its default server. */
  private readonly defaults = new Map<string, number>();

  constructor(private readonly add: Add) {}

  /** Server `i` (raw JSON; parts with a wrong shape are skipped, the shape check reports them). */
  server(vs: Record<string, unknown>, i: number): ServerListens {
    const add = this.add;
    const out: ServerListens = { listen: [], at: [], http2: vs.http2 === true };
    const defaultAll = vs.default === true;
    if (Array.isArray(vs.listen)) {
      vs.listen.forEach((text: unknown, j: number) => {
        if (typeof text !== 'string') return;
        const at = ['servers', i, 'listen', j];
        const e = parseListen(text);
        if (typeof e === 'string') return add(at, e);
        const key = formatHostPort(e.host, e.port);
        if (e.http2) {
          if (e.ssl) out.http2 = true;
          else add(at, `"http2" without "ssl": ${H2C_MESSAGE}`);
        }
        const first = this.first.get(key);
        if (first === undefined) {
          this.first.set(key, { ssl: e.ssl, at });
        } else if (first.ssl !== e.ssl) {
          add(at, `${key} is listed ${e.ssl ? 'with' : 'without'} "ssl" here but ${first.ssl ? 'with' : 'without'} it in ${formatPath(first.at)}; `
            + 'ssl applies to an address: list it the same way in every server');
        }
        const defaultServer = e.defaultServer || defaultAll;
        if (defaultServer) {
          const other = this.defaults.get(key);
          if (other === undefined) this.defaults.set(key, i);
          else if (other !== i) add(defaultAll ? ['servers', i, 'default'] : at, `a default server for ${key} is already $.servers[${other}]`);
        }
        out.listen.push({ host: e.host, port: e.port, key, ssl: e.ssl, defaultServer, proxyProtocol: e.proxyProtocol });
        out.at.push(at);
      });
    }
    const sslAt = out.listen.findIndex((l) => l.ssl);
    if (vs.ssl === undefined) {
      if (sslAt >= 0) {
        add(['servers', i, 'ssl'], `is required: ${formatPath(out.at[sslAt]!)} listens with "ssl"; give this server a "certificate" and a "certificateKey"`);
      }
    } else if (isObject(vs.ssl)) {
      if (sslAt < 0) add(['servers', i, 'ssl'], 'is set but this server has no listen entry with "ssl" (such as "443 ssl")');
      sslBlockProblems(vs.ssl, ['servers', i, 'ssl'], add);
    }
    if (vs.http2 === true && sslAt < 0) add(['servers', i, 'http2'], `${H2C_MESSAGE}: this server has no listen entry with "ssl"`);
    return out;
  }
}

/** Files as written: one path or a list; null when the shape is wrong. */
function files(v: unknown): string[] | null {
  if (typeof v === 'string') return [v];
  if (Array.isArray(v) && v.every((f) => typeof f === 'string')) return v as string[];
  return null;
}

const DURATION = new RegExp(DURATION_PATTERN);

function sslBlockProblems(ssl: Record<string, unknown>, at: PropertyKey[], add: Add): void {
  const certs = files(ssl.certificate);
  const keys = files(ssl.certificateKey);
  if (certs !== null && keys !== null && certs.length > 0 && keys.length > 0 && certs.length !== keys.length) {
    add([...at, 'certificateKey'], `lists ${keys.length} file${keys.length === 1 ? '' : 's'} but certificate lists ${certs.length}: `
      + 'each certificate needs its key, in the same order');
  }
  if (typeof ssl.sessionTimeout === 'string' && DURATION.test(ssl.sessionTimeout) && parseDuration(ssl.sessionTimeout) < 1000) {
    add([...at, 'sessionTimeout'], 'must be at least "1s"');
  }
}

/** A server's `ssl` block as the model has it (the block passed the rules above); `dir`: the config file's directory. */
export function normaliseSsl(raw: RawSsl | undefined, dir: string): SslConfig | null {
  if (raw === undefined) return null;
  const certs = files(raw.certificate) ?? [];
  const keys = files(raw.certificateKey) ?? [];
  return {
    certificates: certs.map((c, k) => ({ certificate: resolvePath(dir, c), key: resolvePath(dir, keys[k] ?? '') })),
    protocols: uniqueProtocols(raw.protocols ?? TLS_DEFAULTS.protocols),
    ciphers: raw.ciphers ?? TLS_DEFAULTS.ciphers,
    sessionTickets: raw.sessionTickets ?? TLS_DEFAULTS.sessionTickets,
    sessionTimeoutMs: parseDuration(raw.sessionTimeout ?? TLS_DEFAULTS.sessionTimeout),
  };
}

const PROTOCOL_ORDER: readonly TlsProtocol[] = ['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'];

/** Each protocol once, oldest first. */
function uniqueProtocols(list: readonly TlsProtocol[]): TlsProtocol[] {
  return PROTOCOL_ORDER.filter((p) => list.includes(p));
}

export const UPSTREAM_TLS_KEYS = ['proxySslVerify', 'proxySslTrustedCertificate', 'proxySslName', 'proxySslServerName', 'proxySslProtocols'] as const;

/** The top level, a server and a location, with their JSON paths: proxySsl* keys are taken from the nearest that has them. */
export type TlsLevels = Array<{ raw: Record<string, unknown>; at: PropertyKey[] }>;

function nearest(levels: TlsLevels, key: (typeof UPSTREAM_TLS_KEYS)[number]): { value: unknown; at: PropertyKey[] } | null {
  for (let k = levels.length - 1; k >= 0; k--) {
    const level = levels[k]!;
    if (level.raw[key] !== undefined) return { value: level.raw[key], at: [...level.at, key] };
  }
  return null;
}

/**
 * The proxySsl* problems of one location (the last of `levels`), whose proxyPass parsed as
 * https (`tls`) or http: the keys on a location that speaks plain HTTP to its upstream, and
 * proxySslVerify without a proxySslTrustedCertificate (as nginx: "no proxy_ssl_trusted_certificate
 * for proxy_ssl_verify"). `reported` keeps one report per path of the top level and servers.
 */
export function locationTlsProblems(levels: TlsLevels, tls: boolean, add: Add, reported: Set<string>): void {
  const loc = levels[levels.length - 1]!;
  if (!tls) {
    for (const key of UPSTREAM_TLS_KEYS) {
      if (loc.raw[key] !== undefined) add([...loc.at, key], 'applies only to a "https://" proxyPass');
    }
    return;
  }
  const verify = nearest(levels, 'proxySslVerify');
  if (verify?.value !== true || nearest(levels, 'proxySslTrustedCertificate') !== null) return;
  const path = formatPath(verify.at);
  if (reported.has(path)) return;
  reported.add(path);
  add(verify.at, `needs proxySslTrustedCertificate (the CA certificates to verify against), which ${formatPath(loc.at)} does not have`);
}

/** A location's TLS to its upstream: null for "http://"; `host`: the proxyPass host (upstream name or address, no port). */
export function resolveUpstreamTls(levels: TlsLevels, tls: boolean, host: string, dir: string): UpstreamTlsConfig | null {
  if (!tls) return null;
  const value = <K extends keyof RawUpstreamTls>(key: K): RawUpstreamTls[K] | undefined => nearest(levels, key)?.value as RawUpstreamTls[K] | undefined;
  const trusted = value('proxySslTrustedCertificate');
  return {
    verify: value('proxySslVerify') ?? TLS_DEFAULTS.proxySslVerify,
    trustedCertificate: trusted === undefined ? null : resolvePath(dir, trusted),
    serverName: value('proxySslServerName') ?? TLS_DEFAULTS.proxySslServerName,
    name: value('proxySslName') ?? host,
    protocols: uniqueProtocols(value('proxySslProtocols') ?? TLS_DEFAULTS.proxySslProtocols),
  };
}

