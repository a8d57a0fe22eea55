/**
 * The configuration file's shape: one zod schema that gives the TypeScript types of
 * the raw file, validates it (unknown keys are errors, to catch typos) and generates
 * the JSON Schema for editors (`npm run schema`). Names are nginx's, in camelCase;
 * durations and sizes stay nginx strings here and are converted by `load.ts`.
 */
import { z } from 'zod';
import { DURATION_PATTERN, SIZE_PATTERN } from './units.js';

const duration = (what = 'a duration') =>
  z.string({ error: `must be ${what} such as "500ms", "10s" or "1m"` })
    .regex(new RegExp(DURATION_PATTERN), { error: `must be ${what} such as "500ms", "10s" or "1m"` });

const size = z.string({ error: 'must be a size such as "1m", "512k" or "0"' })
  .regex(new RegExp(SIZE_PATTERN), { error: 'must be a size such as "1m", "512k" or "0"' });

const intAtLeast = (min: number) =>
  z.number({ error: `must be an integer >= ${min}` }).int({ error: `must be an integer >= ${min}` })
    .min(min, { error: `must be an integer >= ${min}` });

const bool = z.boolean({ error: 'must be true or false' });

export const NEXT_UPSTREAM_CONDITIONS = [
  'error', 'timeout', 'invalid_header',
  'http_500', 'http_502', 'http_503', 'http_504', 'http_403', 'http_404', 'http_429',
  'non_idempotent', 'off',
] as const;

export const upstreamServerSchema = z.strictObject({
  address: z.string({ error: 'must be "host:port"' }).min(1, { error: 'must be "host:port"' })
    .describe('IPv4 "1.2.3.4:80", IPv6 "[::1]:80" or "hostname:80" (nginx `server`). Port defaults to 80.'),
  weight: intAtLeast(1).optional().describe('nginx weight=N (default 1)'),
  maxFails: intAtLeast(0).optional().describe('nginx max_fails=N (default 1; 0 = never mark failed)'),
  failTimeout: duration().optional().describe('nginx fail_timeout (default "10s")'),
  backup: bool.optional().describe('nginx backup: used only when no primary server is available'),
  down: bool.optional().describe('nginx down: never used'),
  maxConns: intAtLeast(0).optional().describe('nginx max_conns=N (default 0 = unlimited)'),
});

export const balanceSchema = z.union([
  z.literal('round_robin'),
], { error: 'must be "round_robin"' }).describe('Balancing policy (default "round_robin": nginx smooth weighted round robin)');

export const upstreamSchema = z.strictObject({
  balance: balanceSchema.optional(),
  servers: z.array(upstreamServerSchema, { error: 'must be an array of servers' })
    .min(1, { error: 'must list at least one server' }),
  keepalive: intAtLeast(0).optional().describe('nginx keepalive: idle upstream connections kept per server (default 32; 0 = none)'),
  keepaliveTimeout: duration().optional().describe('nginx keepalive_timeout in upstream: idle upstream connection lifetime (default "60s")'),
  nextUpstream: z.strictObject({
    on: z.array(z.enum(NEXT_UPSTREAM_CONDITIONS, { error: `must be one of ${NEXT_UPSTREAM_CONDITIONS.join(', ')}` }))
      .optional().describe('nginx proxy_next_upstream (default ["error", "timeout"])'),
    tries: intAtLeast(0).optional().describe('nginx proxy_next_upstream_tries (default 0 = all servers)'),
    timeout: duration().optional().describe('nginx proxy_next_upstream_timeout (default "0s" = unlimited)'),
  }).optional(),
  timeouts: z.strictObject({
    connect: duration().optional().describe('nginx proxy_connect_timeout (default "60s")'),
    send: duration().optional().describe('nginx proxy_send_timeout (default "60s")'),
    read: duration().optional().describe('nginx proxy_read_timeout (default "60s")'),
  }).optional(),
});

export const locationSchema = z.strictObject({
  path: z.string({ error: 'must be a path starting with "/"' }).startsWith('/', { error: 'must be a path starting with "/"' }),
  exact: bool.optional().describe('nginx `location = /path`'),
  proxyPass: z.string({ error: 'must be "http://upstream_name" or "http://host:port"' })
    .describe('nginx proxy_pass: "http://<upstream name>" or "http://host:port", optionally with a URI that replaces the matched prefix'),
  proxySetHeader: z.record(z.string(), z.string({ error: 'must be a string ("" removes the header)' })).optional()
    .describe('nginx proxy_set_header: overrides request headers sent upstream ("" removes one)'),
  clientMaxBodySize: size.optional(),
});

export const virtualServerSchema = z.strictObject({
  listen: z.array(z.string({ error: 'must be "host:port"' }), { error: 'must be an array of "host:port"' })
    .min(1, { error: 'must list at least one address' }),
  serverName: z.array(z.string({ error: 'must be a string' })).optional()
    .describe('nginx server_name: exact names, "*.example.com", "www.example.*", ".example.com"'),
  default: bool.optional().describe('nginx `listen ... default_server`'),
  locations: z.array(locationSchema, { error: 'must be an array of locations' }),
  clientMaxBodySize: size.optional(),
});

export const adminSchema = z.strictObject({
  listen: z.string({ error: 'must be "host:port"' }),
  allow: z.array(z.string({ error: 'must be a CIDR such as "127.0.0.1/32"' })).optional()
    .describe('Clients allowed on the admin listener (default loopback only)'),
});

export const configSchema = z.strictObject({
  $schema: z.string().optional(),
  servers: z.array(virtualServerSchema, { error: 'must be an array of servers' })
    .min(1, { error: 'must list at least one server' }),
  upstreams: z.record(z.string(), upstreamSchema, { error: 'must be an object of named upstreams' }).optional(),
  admin: adminSchema.optional(),
  clientMaxBodySize: size.optional().describe('nginx client_max_body_size (default "1m"; "0" = unlimited)'),
  keepaliveTimeout: duration().optional().describe('nginx keepalive_timeout for clients (default "75s")'),
  shutdownTimeout: duration().optional().describe('How long in-flight requests may run after SIGTERM (default "30s")'),
});

export type RawConfig = z.input<typeof configSchema>;
export type RawUpstream = z.input<typeof upstreamSchema>;
export type RawUpstreamServer = z.input<typeof upstreamServerSchema>;
export type RawVirtualServer = z.input<typeof virtualServerSchema>;
export type RawLocation = z.input<typeof locationSchema>;

/** One validation problem: a JSONPath-like location (`$.upstreams.backend.servers[1].weight`) and what is wrong. */
export interface ConfigProblem {
  path: string;
  message: string;
}

export function formatPath(path: readonly PropertyKey[]): string {
  let out = '$';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else if (typeof key === 'string' && /^[A-Za-z_$][\w$]*$/.test(key)) out += `.${key}`;
    else out += `[${JSON.stringify(String(key))}]`;
  }
  return out;
}

/** Validates the shape of a parsed JSON file; cross-field rules live in `load.ts`. */
export function validateShape(raw: unknown): { config: RawConfig; problems: [] } | { config: null; problems: ConfigProblem[] } {
  const result = configSchema.safeParse(raw, { reportInput: true });
  if (result.success) return { config: result.data as RawConfig, problems: [] };
  const problems: ConfigProblem[] = [];
  for (const issue of result.error.issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) problems.push({ path: formatPath([...issue.path, key]), message: 'unknown key' });
    } else if (issue.code === 'invalid_type' && issue.input === undefined) {
      problems.push({ path: formatPath(issue.path), message: 'is required' });
    } else {
      problems.push({ path: formatPath(issue.path), message: issue.message });
    }
  }
  return { config: null, problems };
}
