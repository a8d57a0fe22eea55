/**
 * Turns a validated raw file into the runtime configuration: defaults applied
 * (nginx's), durations in milliseconds, sizes in bytes, addresses parsed and
 * hostnames resolved, cross-references (proxyPass -> upstream) checked.
 */
import { readFile } from 'node:fs/promises';
import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { dirname, resolve as resolvePath } from 'node:path';
import { randomBytes } from 'node:crypto';
import { availableParallelism, tmpdir } from 'node:os';
import { parseHostPort, formatHostPort } from '../nginx-language/address.js';
import { parseDuration, parseSize } from '../nginx-language/units.js';
import {
  addCidrTo, crossFieldProblems, ListenOverlap, mergeProblems, parseProxyPass, setHeaderProblem, UPSTREAM_NAME, UPSTREAM_NAME_MESSAGE,
} from './cross-check.js';
import { balanceProblems, normaliseBalance } from './balance.js';
import { compileLocationMatch, locationKey, locationMatch, normaliseReturn, resolveNextUpstream, resolveTimeouts } from './locations.js';
import { normaliseStreams, streamProblems } from './streams.js';
import { proxyProtocolProblems } from './proxy-protocol.js';
import { readUserFiles, resolveAccess, resolveAuthBasic } from './access.js';
import { resolveAddHeaders, resolveHideHeaders, resolveIgnoreInvalidHeaders } from './response-headers.js';
import { readErrorPageFiles, resolveErrorPages } from './error-pages.js';
import { resolveCompression } from './compression.js';
import { resolveLimitZones, resolveLocationLimits } from './limits.js';
import { HttpListens, locationTlsProblems, normaliseSsl, resolveUpstreamTls, type TlsLevels } from './tls.js';
import {
  ConfigError, DEFAULTS, SESSION_DEFAULTS,
  type AdminConfig, type BufferingConfig, type Config, type HeaderLimits, type HealthCheckConfig,
  type LocationConfig, type NextUpstreamCondition, type SessionStoreConfig, type StickyConfig, type UpstreamConfig,
  type UpstreamServerConfig, type VirtualServerConfig,
} from './model.js';
import {
  validateShape, formatPath,
  type ConfigProblem, type RawBuffering, type RawConfig, type RawUpstream, type RawLocation, type RawVirtualServer,
} from './schema.js';


/** Reads, parses, validates and normalises a config file. Throws ConfigError listing every problem. */
export async function loadConfigFile(file: string): Promise<Config> {
  return loadConfigText(await readConfigText(file), file);
}

/** A config file's text; ConfigError when it cannot be read. */
export async function readConfigText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, [{ path: '$', message: `cannot read file: ${(err as Error).message}` }]);
  }
}

/**
 * Parses, validates and normalises the text of config file `file` (relative paths in it are
 * relative to `file`'s directory). Cluster workers load the text the primary validated, not
 * whatever the file holds by the time they start.
 */
export async function loadConfigText(text: string, file: string): Promise<Config> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(file, [{ path: '$', message: `invalid JSON: ${(err as Error).message}` }]);
  }
  return loadConfig(raw, file);
}

/** Validates and normalises an already-parsed config object (`file` is used in messages). */
export async function loadConfig(raw: unknown, file = '<config>'): Promise<Config> {
  const shape = validateShape(raw);
  // Report cross-field problems (unknown proxyPass upstream, bad addresses) along with the shape ones.
  if (!shape.config) throw new ConfigError(file, mergeProblems(shape.problems, crossFieldProblems(raw)));
  const problems: ConfigProblem[] = [];
  const config = normalise(shape.config, file, problems);
  // htpasswd files, read at every load (a reload with an unreadable one fails, naming it).
  await readUserFiles(config, (at, message) => problem(problems, at, message));
  await readErrorPageFiles(config, (at, message) => problem(problems, at, message));
  if (problems.length === 0) await resolveHostnames(config, problems);
  if (problems.length > 0) throw new ConfigError(file, problems);
  return config;
}

function problem(problems: ConfigProblem[], path: PropertyKey[], message: string): void {
  problems.push({ path: formatPath(path), message });
}

function ms(text: string | undefined, fallback: string): number {
  return parseDuration(text ?? fallback);
}

function normalise(raw: RawConfig, file: string, problems: ConfigProblem[]): Config {
  const upstreams = new Map<string, UpstreamConfig>();
  for (const [name, up] of Object.entries(raw.upstreams ?? {})) {
    if (!UPSTREAM_NAME.test(name)) {
      problem(problems, ['upstreams', name], UPSTREAM_NAME_MESSAGE);
      continue;
    }
    upstreams.set(name, normaliseUpstream(name, up, ['upstreams', name], problems));
  }

  const globalMaxBody = parseSize(raw.clientMaxBodySize ?? DEFAULTS.clientMaxBodySize);
  const globalBuffering = resolveBuffering(raw, null, dirname(file));
  const servers: VirtualServerConfig[] = [];
  const overlap = new ListenOverlap();
  // Listen entries and their parameters, the `ssl` block and `http2` (rules shared with cross-check.ts).
  const httpListens = new HttpListens((at, message) => problem(problems, at, message));
  const tlsReported = new Set<string>();
  const dir = dirname(file);
  const limitZones = resolveLimitZones(raw, (at, message) => problem(problems, at, message));
  (raw.servers ?? []).forEach((vs, i) => {
    const { listen, at, http2 } = httpListens.server(vs, i);
    listen.forEach((l, k) => overlap.add(l.host, l.port, at[k]!));
    const serverMaxBody = vs.clientMaxBodySize !== undefined ? parseSize(vs.clientMaxBodySize) : globalMaxBody;
    const serverBuffering = resolveBuffering(vs, globalBuffering, dirname(file));
    const locations: LocationConfig[] = [];
    const seen = new Set<string>();
    const add = (at: PropertyKey[], message: string): void => problem(problems, at, message);
    const serverNames = (vs.serverName ?? []).map((n) => n.toLowerCase());
    const context = { serverName: serverNames[0] ?? '' };
    if (vs.locations === undefined && vs.return === undefined) problem(problems, ['servers', i, 'locations'], 'is required (or "return")');
    (vs.locations ?? []).forEach((loc, j) => {
      const key = locationKey(loc);
      if (seen.has(key)) problem(problems, ['servers', i, 'locations', j, 'path'], `duplicate location "${key}"`);
      seen.add(key);
      const levels = [{ raw, at: [] }, { raw: vs, at: ['servers', i] }, { raw: loc, at: ['servers', i, 'locations', j] }];
      const normalised = normaliseLocation(loc, levels, serverMaxBody, serverBuffering, upstreams, problems, dir, tlsReported, vs, context);
      if (!normalised) return;
      normalised.errorPages = resolveErrorPages(levels, dir, add, tlsReported);
      // nginx's `return` (rewrite phase) answers before limit_req and limit_conn (preaccess).
      if (normalised.return === null) normalised.limits = resolveLocationLimits(levels, limitZones, context.serverName, add, tlsReported);
      locations.push(normalised);
    });
    const rawRealIp = vs.realIp ?? raw.realIp;
    const realIp = rawRealIp === undefined ? null
      : { from: rawRealIp.from, header: rawRealIp.header ?? 'X-Real-IP', recursive: rawRealIp.recursive ?? false };
    servers.push({
      index: i,
      listen,
      serverNames,
      isDefault: vs.default ?? false,
      ssl: normaliseSsl(vs.ssl, dir),
      http2,
      proxyProtocolFrom: vs.proxyProtocolFrom ?? (raw.proxyProtocolFrom?.length ? raw.proxyProtocolFrom : realIpProxyFrom(realIp)),
      realIp,
      return: vs.return === undefined ? null : normaliseReturn(vs.return, context, ['servers', i, 'return'], add),
      addHeaders: resolveAddHeaders([{ raw, at: [] }, { raw: vs, at: ['servers', i] }], context, add, tlsReported),
      locations,
      errorPages: resolveErrorPages([{ raw, at: [] }, { raw: vs, at: ['servers', i] }], dir, add, tlsReported),
    });
  });

  problems.push(...overlap.problems());
  // sendProxy writes its header on the TCP connection; the TLS pools do not (yet).
  servers.forEach((vs) => vs.locations.forEach((loc, j) => {
    if (loc.upstreamTls === null || loc.return !== null || !(upstreams.get(loc.upstream)?.servers.some((s) => s.sendProxy !== null) ?? false)) return;
    problem(problems, ['servers', vs.index, 'locations', j, 'proxyPass'],
      `upstream "${loc.upstream}" has servers with "sendProxy", which sessionlb sends only over plain http:// (not with https:// yet)`);
  }));

  let admin: AdminConfig | null = null;
  if (raw.admin) {
    const hp = parseHostPort(raw.admin.listen, undefined, '127.0.0.1');
    const allowText = raw.admin.allow ?? [...DEFAULTS.adminAllow];
    const allow = new BlockList();
    allowText.forEach((cidr, j) => {
      const err = addCidrTo(allow, cidr);
      if (err) problem(problems, ['admin', 'allow', j], err);
    });
    if (typeof hp === 'string') {
      problem(problems, ['admin', 'listen'], hp);
    } else {
      const key = formatHostPort(hp.host, hp.port);
      if (servers.some((s) => s.listen.some((l) => l.key === key))) {
        problem(problems, ['admin', 'listen'], `${key} is also a server listen address`);
      }
      const envToken = process.env.SESSIONLB_ADMIN_TOKEN;
      const token = raw.admin.token ?? (envToken !== undefined && envToken !== '' ? envToken : null);
      admin = { listen: { host: hp.host, port: hp.port, key }, allow, allowText, token };
    }
  }

  streamProblems(raw, (at, message) => problem(problems, at, message));
  proxyProtocolProblems(raw, (at, message) => problem(problems, at, message));
  const streams = normaliseStreams(raw, (name) => upstreams.has(name) && !upstreams.get(name)!.implicit, (key, at) => {
    if (!upstreams.has(key)) {
      upstreams.set(key, { ...normaliseUpstream(key, { servers: [{ address: key }] }, at, problems), implicit: true });
    }
    return key;
  });

  return {
    file,
    servers,
    streams,
    upstreams,
    limitReqZones: limitZones.req,
    limitConnZones: limitZones.conn,
    admin,
    keepaliveTimeoutMs: ms(raw.keepaliveTimeout, DEFAULTS.clientKeepaliveTimeout),
    shutdownTimeoutMs: ms(raw.shutdownTimeout, DEFAULTS.shutdownTimeout),
    sendTimeoutMs: ms(raw.sendTimeout, DEFAULTS.clientSendTimeout),
    // Relative paths are relative to the config file, so `run` and `reload` agree wherever they start.
    stateFile: raw.stateFile === undefined ? null : resolvePath(dirname(file), raw.stateFile),
    pidFile: raw.pidFile === undefined ? null : resolvePath(dirname(file), raw.pidFile),
    sessionStore: normaliseSessionStore(raw.sessionStore, problems),
    accessLog: raw.accessLog === false ? false : { path: raw.accessLog?.path ?? null },
    workers: raw.workers === undefined || raw.workers === 'auto' ? Math.max(1, availableParallelism()) : raw.workers,
    headerLimits: headerLimits(raw.largeClientHeaderBuffers ?? DEFAULTS.largeClientHeaderBuffers),
    clientHeaderTimeoutMs: ms(raw.clientHeaderTimeout, DEFAULTS.clientHeaderTimeout),
    underscoresInHeaders: raw.underscoresInHeaders ?? false,
    maxConnections: raw.maxConnections ?? 0,
    proxyProtocolFrom: raw.proxyProtocolFrom ?? [],
  };
}

/** nginx "NUMBER SIZE" (the schema checked the shape). */
function numberAndSize(text: string): { number: number; size: number } {
  const [n, sz] = text.trim().split(/\s+/);
  return { number: Number(n), size: parseSize(sz!) };
}

function headerLimits(text: string): HeaderLimits {
  const { number, size } = numberAndSize(text);
  return { bufferSize: size, total: number * size };
}

function numberTimesSize(text: string): number {
  const { number, size } = numberAndSize(text);
  return number * size;
}

/** The buffering keys of one level (top, server, location) over what it inherits (null: nginx's defaults); relative paths are the config file's. */
function resolveBuffering(raw: RawBuffering, inherited: BufferingConfig | null, dir: string): BufferingConfig {
  const base: BufferingConfig = inherited ?? {
    request: true,
    response: true,
    clientBodyBufferSize: parseSize(DEFAULTS.clientBodyBufferSize),
    proxyBuffers: numberTimesSize(DEFAULTS.proxyBuffers),
    proxyBufferSize: parseSize(DEFAULTS.proxyBufferSize),
    maxTempFileSize: parseSize(DEFAULTS.proxyMaxTempFileSize),
    clientBodyTempPath: tmpdir(),
    proxyTempPath: tmpdir(),
  };
  return {
    request: raw.proxyRequestBuffering ?? base.request,
    response: raw.proxyBuffering ?? base.response,
    clientBodyBufferSize: raw.clientBodyBufferSize !== undefined ? parseSize(raw.clientBodyBufferSize) : base.clientBodyBufferSize,
    proxyBuffers: raw.proxyBuffers !== undefined ? numberTimesSize(raw.proxyBuffers) : base.proxyBuffers,
    proxyBufferSize: raw.proxyBufferSize !== undefined ? parseSize(raw.proxyBufferSize) : base.proxyBufferSize,
    maxTempFileSize: raw.proxyMaxTempFileSize !== undefined ? parseSize(raw.proxyMaxTempFileSize) : base.maxTempFileSize,
    clientBodyTempPath: raw.clientBodyTempPath !== undefined ? resolvePath(dir, raw.clientBodyTempPath) : base.clientBodyTempPath,
    proxyTempPath: raw.proxyTempPath !== undefined ? resolvePath(dir, raw.proxyTempPath) : base.proxyTempPath,
  };
}

/** Parses "200-399" / "200, 204, 301-302" / 200 into inclusive ranges (the schema checked the shape). */
export function parseStatusRanges(spec: string | number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const part of String(spec).replace(/\s*-\s*/g, '-').split(/[\s,]+/)) {
    if (part === '') continue;
    const [lo, hi] = part.split('-').map(Number) as [number, number | undefined];
    out.push([lo, hi ?? lo]);
  }
  return out;
}

function normaliseHealthCheck(raw: RawUpstream['healthCheck'], path: PropertyKey[], problems: ConfigProblem[]): HealthCheckConfig | null {
  if (raw === undefined) return null;
  const d = DEFAULTS.healthCheck;
  const type = raw.type ?? d.type;
  const statusSpec = raw.status ?? d.status;
  const status = parseStatusRanges(statusSpec);
  status.forEach(([lo, hi]) => {
    if (hi < lo) problem(problems, [...path, 'status'], `range ${lo}-${hi} is empty (write low-high)`);
  });
  let body: RegExp | null = null;
  if (raw.body !== undefined) {
    try {
      body = new RegExp(raw.body);
    } catch (err) {
      problem(problems, [...path, 'body'], `is not a valid regular expression: ${(err as Error).message}`);
    }
  }
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(raw.headers ?? {})) {
    if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) problem(problems, [...path, 'headers', name], 'is not a valid header name');
    else if (/[\r\n\0]/.test(value)) problem(problems, [...path, 'headers', name], 'header values may not contain CR, LF or NUL');
    else headers[name] = value;
  }
  if (type === 'tcp') {
    for (const key of ['path', 'status', 'body', 'headers'] as const) {
      if (raw[key] !== undefined) problem(problems, [...path, key], 'applies only to "type": "http"');
    }
  }
  const port = raw.port ?? d.port;
  if (port > 65535) problem(problems, [...path, 'port'], 'must be a port 1-65535, or 0 for the server\'s own port');
  const intervalMs = ms(raw.interval, d.interval);
  const timeoutMs = ms(raw.timeout, d.timeout);
  if (intervalMs < 10) problem(problems, [...path, 'interval'], 'must be at least "10ms"');
  if (timeoutMs < 1) problem(problems, [...path, 'timeout'], 'must be at least "1ms"');
  return {
    type,
    path: raw.path ?? d.path,
    intervalMs,
    timeoutMs,
    fails: raw.fails ?? d.fails,
    passes: raw.passes ?? d.passes,
    status,
    statusText: String(statusSpec),
    body,
    headers,
    port,
    mandatory: raw.mandatory ?? false,
  };
}

function normaliseUpstream(name: string, up: RawUpstream, path: PropertyKey[], problems: ConfigProblem[]): UpstreamConfig {
  balanceProblems(up, path, (at, message) => problem(problems, at, message));
  const servers: UpstreamServerConfig[] = [];
  const seen = new Set<string>();
  up.servers.forEach((s, i) => {
    const hp = parseHostPort(s.address, 80);
    if (typeof hp === 'string') return problem(problems, [...path, 'servers', i, 'address'], hp);
    const address = formatHostPort(hp.host, hp.port);
    if (seen.has(address)) problem(problems, [...path, 'servers', i, 'address'], `duplicate server ${address}`);
    seen.add(address);
    servers.push({
      address,
      host: hp.host,
      port: hp.port,
      weight: s.weight ?? DEFAULTS.weight,
      maxFails: s.maxFails ?? DEFAULTS.maxFails,
      failTimeoutMs: ms(s.failTimeout, DEFAULTS.failTimeout),
      backup: s.backup ?? false,
      down: s.down ?? false,
      maxConns: s.maxConns ?? DEFAULTS.maxConns,
      slowStartMs: ms(s.slowStart, DEFAULTS.slowStart),
      drain: s.drain ?? false,
      sendProxy: s.sendProxy ?? null,
    });
  });
  const onList = up.nextUpstream?.on ?? DEFAULTS.nextUpstreamOn;
  if (onList.includes('off') && onList.length > 1) {
    problem(problems, [...path, 'nextUpstream', 'on'], '"off" cannot be combined with other conditions');
  }
  return {
    name,
    balance: normaliseBalance(up.balance),
    servers,
    keepalive: up.keepalive ?? DEFAULTS.keepalive,
    keepaliveTimeoutMs: ms(up.keepaliveTimeout, DEFAULTS.keepaliveTimeout),
    nextUpstream: {
      on: new Set(onList.filter((c): c is NextUpstreamCondition => c !== 'off')),
      tries: up.nextUpstream?.tries ?? 0,
      timeoutMs: ms(up.nextUpstream?.timeout, '0s'),
    },
    timeouts: {
      connectMs: ms(up.timeouts?.connect, DEFAULTS.connectTimeout),
      sendMs: ms(up.timeouts?.send, DEFAULTS.sendTimeout),
      readMs: ms(up.timeouts?.read, DEFAULTS.readTimeout),
    },
    healthCheck: normaliseHealthCheck(up.healthCheck, [...path, 'healthCheck'], problems),
    sticky: normaliseSticky(up.sticky, [...path, 'sticky'], problems),
    implicit: false,
  };
}

/** `levels`: the top level, the server and this location (raw, with their paths), for the keys the nearest level sets. */
function normaliseLocation(
  loc: RawLocation, levels: TlsLevels, inheritedMaxBody: number, inheritedBuffering: BufferingConfig,
  upstreams: Map<string, UpstreamConfig>, problems: ConfigProblem[], dir: string, tlsReported: Set<string>,
  server: RawVirtualServer, context: { serverName: string },
): LocationConfig | null {
  const path = levels[levels.length - 1]!.at;
  const add = (at: PropertyKey[], message: string): void => problem(problems, at, message);
  const match = locationMatch(loc);
  const regex = compileLocationMatch(loc, path, add);
  if (loc.locations !== undefined) add([...path, 'locations'], 'nested locations are not supported: write each as a location of the server');
  const clientMaxBodySize = loc.clientMaxBodySize !== undefined ? parseSize(loc.clientMaxBodySize) : inheritedMaxBody;
  const buffering = resolveBuffering(loc, inheritedBuffering, dir);
  // nginx add_header / proxy_hide_header (nearest level that sets any) and ignore_invalid_headers.
  const responseHeaders = {
    addHeaders: resolveAddHeaders(levels, context, add, tlsReported),
    hideHeaders: resolveHideHeaders(levels),
    ignoreInvalidHeaders: resolveIgnoreInvalidHeaders(levels),
  };
  if (loc.return !== undefined) {
    const ret = normaliseReturn(loc.return, context, [...path, 'return'], add);
    if (loc.proxyPass !== undefined) add([...path, 'proxyPass'], 'does not go with "return" (nginx answers with the return)');
    if (ret === null) return null;
    const none = { connectMs: 0, sendMs: 0, readMs: 0 };
    return {
      path: loc.path, exact: match === '=', match, regex, return: ret, timeouts: none,
      nextUpstream: { on: new Set(), tries: 0, timeoutMs: 0 }, upstream: '', rewritePrefix: null, setHeaders: new Map(),
      clientMaxBodySize, buffering, upstreamTls: null,
      // nginx's `return` runs in the rewrite phase, before allow/deny and auth_basic (access phase).
      access: null, authBasic: null, compression: null, limits: null,
      ...responseHeaders,
    };
  }
  if (loc.proxyPass === undefined) {
    add([...path, 'proxyPass'], 'is required (or "return")');
    return null;
  }
  const target = parseProxyPass(loc.proxyPass, (name) => upstreams.has(name) && !upstreams.get(name)!.implicit);
  if (target.kind === 'error') {
    problem(problems, [...path, 'proxyPass'], target.message);
    return null;
  }
  locationTlsProblems(levels, target.tls, (at, message) => problem(problems, at, message), tlsReported);
  const uri = target.uri;
  if (regex !== null && uri !== '') {
    // nginx: "proxy_pass" cannot have URI part in location given by regular expression.
    add([...path, 'proxyPass'], 'cannot have a URI part in a regular expression location (nginx refuses it too): write "http://name" alone');
  }
  let upstream: string;
  if (target.kind === 'upstream') {
    upstream = target.name;
  } else {
    upstream = target.key;
    if (!upstreams.has(upstream)) {
      upstreams.set(upstream, {
        ...normaliseUpstream(upstream, { servers: [{ address: upstream }] }, [...path, 'proxyPass'], problems),
        implicit: true,
      });
    }
  }
  // nginx proxy_set_header: the location's, else the server's (a level that sets any replaces its parent's).
  const headerLevel = loc.proxySetHeader !== undefined ? { raw: loc.proxySetHeader, at: path } : { raw: server.proxySetHeader ?? {}, at: levels[1]!.at };
  const setHeaders = new Map<string, string>();
  for (const [name, value] of Object.entries(headerLevel.raw)) {
    const bad = setHeaderProblem(name, value);
    if (bad !== null) problem(problems, [...headerLevel.at, 'proxySetHeader', name], bad);
    else setHeaders.set(name.toLowerCase(), value);
  }
  const up = upstreams.get(upstream)!;
  return {
    path: loc.path,
    exact: match === '=',
    match,
    regex,
    return: null,
    timeouts: resolveTimeouts(loc, server, up.timeouts),
    nextUpstream: resolveNextUpstream(loc, server, up.nextUpstream, path, add),
    upstream,
    rewritePrefix: uri === '' ? null : uri,
    setHeaders,
    clientMaxBodySize,
    buffering,
    upstreamTls: resolveUpstreamTls(levels, target.tls, target.kind === 'upstream' ? target.name : target.host, dir),
    // allow/deny and auth_basic: nearest level; a problem of an upper level is reported once (tlsReported dedupes by path).
    access: resolveAccess(levels, (at, message) => problem(problems, at, message), tlsReported),
    authBasic: resolveAuthBasic(levels, dir, (at, message) => problem(problems, at, message), tlsReported),
    ...responseHeaders,
    compression: resolveCompression(levels),
    limits: null,
  };
}

/** Resolves upstream hostnames (nginx resolves at load and on reload); every address becomes a server. */
async function resolveHostnames(config: Config, problems: ConfigProblem[]): Promise<void> {
  for (const up of config.upstreams.values()) {
    const expanded: UpstreamServerConfig[] = [];
    for (const [i, s] of up.servers.entries()) {
      if (isIP(s.host) !== 0) {
        expanded.push(s);
        continue;
      }
      try {
        const addrs = await lookup(s.host, { all: true });
        if (addrs.length === 1) {
          expanded.push({ ...s, host: addrs[0]!.address });
        } else {
          for (const a of addrs) {
            expanded.push({ ...s, host: a.address, address: `${s.address}#${formatHostPort(a.address, s.port)}` });
          }
        }
      } catch (err) {
        problem(problems, up.implicit ? ['upstreams', up.name] : ['upstreams', up.name, 'servers', i, 'address'],
          `host "${s.host}" not found: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    }
    up.servers = expanded;
  }
}


/** memcached treats an exptime above 30 days as a Unix timestamp. */
const MAX_TTL_MS = 30 * 24 * 3600 * 1000;

/**
 * A secret key from the config (`value`), else from environment variable `envName` (at least 16
 * characters, a problem at `at` otherwise), else null (the caller's fallback applies).
 */
function givenKey(value: string | undefined, envName: string, at: PropertyKey[], problems: ConfigProblem[]): { key: string; source: 'config' | 'env' } | null {
  if (value !== undefined) return { key: value, source: 'config' };
  const env = process.env[envName];
  if (env === undefined || env === '') return null;
  if (env.length < 16) problem(problems, at, `the ${envName} environment variable must be at least 16 characters`);
  return { key: env, source: 'env' };
}

/** One random cookie-signing key per process (used when none is configured), stable across reloads. */
let processCookieKey: string | null = null;

function normaliseSticky(raw: RawUpstream['sticky'], path: PropertyKey[], problems: ConfigProblem[]): StickyConfig | null {
  if (raw === undefined) return null;
  const ttlMs = ms(raw.ttl, SESSION_DEFAULTS.ttl);
  if (ttlMs < 1000) problem(problems, [...path, 'ttl'], 'must be at least "1s"');
  if (ttlMs > MAX_TTL_MS) problem(problems, [...path, 'ttl'], 'must be at most "30d" (memcached\'s longest relative expiry)');
  const minLength = raw.minIdLength ?? SESSION_DEFAULTS.minIdLength;
  const maxLength = raw.maxIdLength ?? SESSION_DEFAULTS.maxIdLength;
  if (maxLength > 4096) problem(problems, [...path, 'maxIdLength'], 'must be at most 4096');
  if (minLength > maxLength) problem(problems, [...path, 'minIdLength'], `must not be greater than maxIdLength (${maxLength})`);
  if (raw.cookieKey !== undefined && raw.mode !== 'cookie') {
    problem(problems, [...path, 'cookieKey'], 'applies only to "mode": "cookie"');
  }
  if (raw.mask !== undefined && raw.mode !== 'source') {
    problem(problems, [...path, 'mask'], 'applies only to "mode": "source"');
  }
  if (raw.mode === 'source') {
    // The client address is the key: no cookie is read, so the cookie keys would be silently ignored.
    for (const key of ['cookie', 'minIdLength', 'maxIdLength'] as const) {
      if (raw[key] !== undefined) problem(problems, [...path, key], '"mode": "source" reads no cookie: the client address is the key');
    }
  }
  let cookieKey = '';
  let cookieKeySource: StickyConfig['cookieKeySource'] = 'random';
  if (raw.mode === 'cookie') {
    const given = givenKey(raw.cookieKey, 'SESSIONLB_COOKIE_KEY', [...path, 'cookieKey'], problems);
    cookieKey = given?.key ?? (processCookieKey ??= randomBytes(32).toString('base64url'));
    cookieKeySource = given?.source ?? 'random';
  }
  return {
    mode: raw.mode,
    cookie: raw.cookie ?? (raw.mode === 'cookie' ? SESSION_DEFAULTS.ownCookie : SESSION_DEFAULTS.cookie),
    ttlMs,
    idRules: { minLength, maxLength },
    cookieKey,
    cookieKeySource,
    mask: { ipv4: raw.mask?.ipv4 ?? 32, ipv6: raw.mask?.ipv6 ?? 128 },
  };
}

function normaliseSessionStore(raw: RawConfig['sessionStore'], problems: ConfigProblem[]): SessionStoreConfig {
  const path = ['sessionStore'];
  const type = raw?.type ?? 'memory';
  const keyPrefix = raw?.keyPrefix ?? SESSION_DEFAULTS.keyPrefix;
  if (!/^[\x21-\x7e]{0,150}$/.test(keyPrefix)) {
    problem(problems, [...path, 'keyPrefix'], 'must be printable ASCII without spaces, at most 150 characters (memcached keys are at most 250 bytes)');
  }
  const servers: string[] = [];
  if (type === 'memcached') {
    if (raw?.servers === undefined || raw.servers.length === 0) {
      problem(problems, [...path, 'servers'], 'must list at least one memcached "host:port" when "type" is "memcached"');
    } else {
      raw.servers.forEach((text, i) => {
        const hp = parseHostPort(text, SESSION_DEFAULTS.memcachedPort);
        if (typeof hp === 'string') return problem(problems, [...path, 'servers', i], hp);
        if (isIP(hp.host) === 6) {
          return problem(problems, [...path, 'servers', i], 'IPv6 addresses are not supported for memcached; use an IPv4 address or a hostname');
        }
        const address = `${hp.host}:${hp.port}`;
        if (servers.includes(address)) problem(problems, [...path, 'servers', i], `duplicate server ${address}`);
        servers.push(address);
      });
    }
  } else if (raw?.servers !== undefined) {
    problem(problems, [...path, 'servers'], 'applies only to "type": "memcached"');
  }
  const timeoutMs = ms(raw?.timeout, SESSION_DEFAULTS.timeout);
  if (timeoutMs < 1) problem(problems, [...path, 'timeout'], 'must be at least "1ms"');
  const given = givenKey(raw?.hashKey, 'SESSIONLB_HASH_KEY', [...path, 'hashKey'], problems);
  // Without one: deterministic, so that every instance with the same keyPrefix computes the same keys.
  const hashKey = given?.key ?? `sessionlb derived hash key for prefix ${keyPrefix}`;
  const hashKeySource: SessionStoreConfig['hashKeySource'] = given?.source ?? 'derived';
  return {
    type,
    explicit: raw !== undefined,
    servers,
    keyPrefix,
    timeoutMs,
    hashKey,
    hashKeySource,
    maxFails: raw?.maxFails ?? SESSION_DEFAULTS.maxFails,
    failTimeoutMs: ms(raw?.failTimeout, SESSION_DEFAULTS.failTimeout),
    localCacheEntries: raw?.localCacheEntries ?? SESSION_DEFAULTS.localCacheEntries,
    localCacheFreshMs: ms(raw?.localCacheFresh, SESSION_DEFAULTS.localCacheFresh),
  };
}

/** `realIp` with "proxy_protocol" names who may send a PROXY header when no proxyProtocolFrom does (nginx set_real_ip_from). */
function realIpProxyFrom(realIp: { from: string[]; header: string } | null): string[] {
  return realIp !== null && realIp.header === 'proxy_protocol' ? realIp.from : [];
}
