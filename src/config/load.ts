/**
 * Turns a validated raw file into the runtime configuration: defaults applied
 * (nginx's), durations in milliseconds, sizes in bytes, addresses parsed and
 * hostnames resolved, cross-references (proxyPass -> upstream) checked.
 */
import { readFile } from 'node:fs/promises';
import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { parseHostPort, formatHostPort } from './address.js';
import { parseDuration, parseSize } from './units.js';
import {
  validateShape, formatPath,
  type ConfigProblem, type RawConfig, type RawUpstream, type RawLocation,
} from './schema.js';

export type NextUpstreamCondition =
  | 'error' | 'timeout' | 'invalid_header'
  | 'http_500' | 'http_502' | 'http_503' | 'http_504' | 'http_403' | 'http_404' | 'http_429'
  | 'non_idempotent';

export interface UpstreamServerConfig {
  /** The address as written in the file (`host:port`); the server's name in logs, metrics and the admin API. */
  address: string;
  /** Where to connect: the literal IP, or one address the hostname resolved to. */
  host: string;
  port: number;
  weight: number;
  maxFails: number;
  failTimeoutMs: number;
  backup: boolean;
  down: boolean;
  maxConns: number;
}

export type BalanceConfig = { kind: 'round_robin' };

export interface UpstreamConfig {
  name: string;
  balance: BalanceConfig;
  servers: UpstreamServerConfig[];
  keepalive: number;
  keepaliveTimeoutMs: number;
  nextUpstream: {
    on: ReadonlySet<NextUpstreamCondition>;
    /** 0 = as many as there are servers. */
    tries: number;
    /** 0 = unlimited. */
    timeoutMs: number;
  };
  timeouts: { connectMs: number; sendMs: number; readMs: number };
  /** True for the implicit upstream made from `proxyPass: "http://host:port"`. */
  implicit: boolean;
}

export interface LocationConfig {
  path: string;
  exact: boolean;
  upstream: string;
  /** nginx proxy_pass with a URI: the matched prefix is replaced by this; null = pass the URI unchanged. */
  rewritePrefix: string | null;
  /** Lower-case header name -> value; "" removes the header. */
  setHeaders: ReadonlyMap<string, string>;
  clientMaxBodySize: number;
}

export interface ListenAddress {
  host: string;
  port: number;
  /** `host:port` as nginx prints it; listeners are keyed by this. */
  key: string;
}

export interface VirtualServerConfig {
  index: number;
  listen: ListenAddress[];
  serverNames: string[];
  isDefault: boolean;
  locations: LocationConfig[];
}

export interface AdminConfig {
  listen: ListenAddress;
  allow: BlockList;
  allowText: string[];
}

export interface Config {
  file: string;
  servers: VirtualServerConfig[];
  upstreams: Map<string, UpstreamConfig>;
  admin: AdminConfig | null;
  keepaliveTimeoutMs: number;
  shutdownTimeoutMs: number;
}

export class ConfigError extends Error {
  constructor(readonly file: string, readonly problems: ConfigProblem[]) {
    super(problems.map((p) => `${file}: ${p.path}: ${p.message}`).join('\n'));
    this.name = 'ConfigError';
  }
}

export const DEFAULTS = {
  weight: 1,
  maxFails: 1,
  failTimeout: '10s',
  maxConns: 0,
  keepalive: 32,
  keepaliveTimeout: '60s',
  nextUpstreamOn: ['error', 'timeout'] as NextUpstreamCondition[],
  connectTimeout: '60s',
  sendTimeout: '60s',
  readTimeout: '60s',
  clientMaxBodySize: '1m',
  clientKeepaliveTimeout: '75s',
  shutdownTimeout: '30s',
  adminAllow: ['127.0.0.1/32', '::1/128'],
} as const;

/** Reads, parses, validates and normalises a config file. Throws ConfigError listing every problem. */
export async function loadConfigFile(file: string): Promise<Config> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, [{ path: '$', message: `cannot read file: ${(err as Error).message}` }]);
  }
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
  if (!shape.config) throw new ConfigError(file, shape.problems);
  const problems: ConfigProblem[] = [];
  const config = normalise(shape.config, file, problems);
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
    if (!/^[A-Za-z0-9_.-]+$/.test(name)) {
      problem(problems, ['upstreams', name], 'upstream names may contain only letters, digits, "_", "-" and "."');
      continue;
    }
    upstreams.set(name, normaliseUpstream(name, up, ['upstreams', name], problems));
  }

  const globalMaxBody = parseSize(raw.clientMaxBodySize ?? DEFAULTS.clientMaxBodySize);
  const servers: VirtualServerConfig[] = [];
  const defaultsByListen = new Map<string, number>();
  raw.servers.forEach((vs, i) => {
    const listen: ListenAddress[] = [];
    vs.listen.forEach((text, j) => {
      const hp = parseHostPort(text, undefined);
      if (typeof hp === 'string') return problem(problems, ['servers', i, 'listen', j], hp);
      listen.push({ host: hp.host, port: hp.port, key: formatHostPort(hp.host, hp.port) });
    });
    if (vs.default) {
      for (const l of listen) {
        const other = defaultsByListen.get(l.key);
        if (other !== undefined) {
          problem(problems, ['servers', i, 'default'], `a default server for ${l.key} is already $.servers[${other}]`);
        } else {
          defaultsByListen.set(l.key, i);
        }
      }
    }
    const serverMaxBody = vs.clientMaxBodySize !== undefined ? parseSize(vs.clientMaxBodySize) : globalMaxBody;
    const locations: LocationConfig[] = [];
    const seen = new Set<string>();
    vs.locations.forEach((loc, j) => {
      const key = `${loc.exact ? '=' : ''}${loc.path}`;
      if (seen.has(key)) problem(problems, ['servers', i, 'locations', j, 'path'], `duplicate location "${key}"`);
      seen.add(key);
      const normalised = normaliseLocation(loc, ['servers', i, 'locations', j], serverMaxBody, upstreams, problems);
      if (normalised) locations.push(normalised);
    });
    servers.push({
      index: i,
      listen,
      serverNames: (vs.serverName ?? []).map((n) => n.toLowerCase()),
      isDefault: vs.default ?? false,
      locations,
    });
  });

  let admin: AdminConfig | null = null;
  if (raw.admin) {
    const hp = parseHostPort(raw.admin.listen, undefined, '127.0.0.1');
    const allowText = raw.admin.allow ?? [...DEFAULTS.adminAllow];
    const allow = new BlockList();
    allowText.forEach((cidr, j) => {
      const err = addCidr(allow, cidr);
      if (err) problem(problems, ['admin', 'allow', j], err);
    });
    if (typeof hp === 'string') {
      problem(problems, ['admin', 'listen'], hp);
    } else {
      const key = formatHostPort(hp.host, hp.port);
      if (servers.some((s) => s.listen.some((l) => l.key === key))) {
        problem(problems, ['admin', 'listen'], `${key} is also a server listen address`);
      }
      admin = { listen: { host: hp.host, port: hp.port, key }, allow, allowText };
    }
  }

  return {
    file,
    servers,
    upstreams,
    admin,
    keepaliveTimeoutMs: ms(raw.keepaliveTimeout, DEFAULTS.clientKeepaliveTimeout),
    shutdownTimeoutMs: ms(raw.shutdownTimeout, DEFAULTS.shutdownTimeout),
  };
}

function normaliseUpstream(name: string, up: RawUpstream, path: PropertyKey[], problems: ConfigProblem[]): UpstreamConfig {
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
    });
  });
  const onList = up.nextUpstream?.on ?? DEFAULTS.nextUpstreamOn;
  if (onList.includes('off') && onList.length > 1) {
    problem(problems, [...path, 'nextUpstream', 'on'], '"off" cannot be combined with other conditions');
  }
  return {
    name,
    balance: { kind: up.balance ?? 'round_robin' },
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
    implicit: false,
  };
}

function normaliseLocation(
  loc: RawLocation, path: PropertyKey[], inheritedMaxBody: number,
  upstreams: Map<string, UpstreamConfig>, problems: ConfigProblem[],
): LocationConfig | null {
  const m = /^http:\/\/([^/?#]+)([^?#]*)$/.exec(loc.proxyPass);
  if (!m) {
    problem(problems, [...path, 'proxyPass'], 'must be "http://upstream_name" or "http://host:port" (optionally followed by a URI path)');
    return null;
  }
  const target = m[1]!;
  const uri = m[2]!;
  let upstream: string;
  if (upstreams.has(target) && !upstreams.get(target)!.implicit) {
    upstream = target;
  } else if (/:\d+$/.test(target) || isIP(target.replace(/^\[|\]$/g, '')) !== 0) {
    const hp = parseHostPort(target, 80);
    if (typeof hp === 'string') {
      problem(problems, [...path, 'proxyPass'], hp);
      return null;
    }
    upstream = formatHostPort(hp.host, hp.port);
    if (!upstreams.has(upstream)) {
      upstreams.set(upstream, {
        ...normaliseUpstream(upstream, { servers: [{ address: upstream }] }, [...path, 'proxyPass'], problems),
        implicit: true,
      });
    }
  } else {
    problem(problems, [...path, 'proxyPass'], `no upstream named "${target}" (define it under $.upstreams, or use "http://host:port")`);
    return null;
  }
  const setHeaders = new Map<string, string>();
  for (const [name, value] of Object.entries(loc.proxySetHeader ?? {})) {
    if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) {
      problem(problems, [...path, 'proxySetHeader', name], 'is not a valid header name');
    } else if (/[\r\n\0]/.test(value)) {
      problem(problems, [...path, 'proxySetHeader', name], 'header values may not contain CR, LF or NUL');
    } else {
      setHeaders.set(name.toLowerCase(), value);
    }
  }
  return {
    path: loc.path,
    exact: loc.exact ?? false,
    upstream,
    rewritePrefix: uri === '' ? null : uri,
    setHeaders,
    clientMaxBodySize: loc.clientMaxBodySize !== undefined ? parseSize(loc.clientMaxBodySize) : inheritedMaxBody,
  };
}

/** Adds "addr/prefix" (or a bare address) to a BlockList; returns an error message or null. */
export function addCidr(list: BlockList, cidr: string): string | null {
  const [addr, prefixText, extra] = cidr.split('/');
  const family = isIP(addr ?? '');
  if (!addr || family === 0 || extra !== undefined) return `"${cidr}" is not an address or CIDR such as "10.0.0.0/8"`;
  const max = family === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (!/^\d+$/.test(prefixText ?? String(max)) || prefix > max) return `"${cidr}" has an invalid prefix length (0-${max})`;
  list.addSubnet(addr, prefix, family === 4 ? 'ipv4' : 'ipv6');
  return null;
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
