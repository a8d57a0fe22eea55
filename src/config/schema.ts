/**
 * The configuration file's shape: one zod schema that gives the TypeScript types of
 * the raw file, validates it (unknown keys are errors, to catch typos) and generates
 * the JSON Schema for editors (`npm run schema`). Names are nginx's, in camelCase;
 * durations and sizes stay nginx strings here and are converted by `load.ts`.
 */
import { z } from 'zod';
import { DURATION_PATTERN, SIZE_PATTERN } from '../nginx-language/units.js';
import { accessKeys } from './access-schema.js';
import { errorPageKeys } from './error-pages.js';
import { compressionKeys } from './compression-schema.js';
import { limitKeys, limitZoneKeys } from './limits-schema.js';

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
  slowStart: duration().optional()
    .describe('nginx Plus slow_start: after the server comes back, its weight rises linearly from near 0 to `weight` over this time (default "0s" = off)'),
  drain: bool.optional()
    .describe('Sessions bound to this server keep going to it, but it gets no new ones (HAProxy drain; also settable through the admin API)'),
  sendProxy: z.enum(['v1', 'v2'], { error: 'must be "v1" or "v2"' }).optional()
    .describe('HAProxy send-proxy / send-proxy-v2: each connection to this server (HTTP, or a stream\'s) starts with a PROXY protocol header carrying the client\'s address; HTTP connections are kept alive only for the client connection that opened them'),
});

export const STICKY_MODES = ['learn', 'cookie', 'hash', 'source'] as const;

const intBetween = (min: number, max: number) =>
  z.number({ error: `must be an integer from ${min} to ${max}` }).int({ error: `must be an integer from ${min} to ${max}` })
    .min(min, { error: `must be an integer from ${min} to ${max}` }).max(max, { error: `must be an integer from ${min} to ${max}` });

export const stickySchema = z.strictObject({
  mode: z.enum(STICKY_MODES, { error: 'must be "learn", "cookie", "hash" or "source"' })
    .describe('"learn": bind the session cookie the backend sets to the server that set it (in the session store); "cookie": sessionlb sets its own signed cookie naming the server; "hash": consistent hash of the session cookie over the live servers; "source": bind the client address (masked by "mask") to the server that took its first connection or request (in the session store; streams and HTTP)'),
  cookie: z.string({ error: 'must be a cookie name' }).regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$/, { error: 'must be a cookie name (letters, digits and !#$%&\'*+-.^_`|~, at most 128)' }).optional()
    .describe('learn/hash: the session cookie (default "PHPSESSID"); cookie: the cookie sessionlb sets (default "SESSIONLB")'),
  ttl: duration().optional().describe('How long a binding lives without requests (default "24m", PHP\'s session.gc_maxlifetime); refreshed while the session is used'),
  minIdLength: intAtLeast(1).optional().describe('Shortest accepted session id (default 22)'),
  maxIdLength: intAtLeast(1).optional().describe('Longest accepted session id (default 256)'),
  cookieKey: z.string({ error: 'must be a string of at least 16 characters' }).min(16, { error: 'must be a string of at least 16 characters' }).optional()
    .describe('cookie mode: secret that signs the cookie (default: env SESSIONLB_COOKIE_KEY; else a random key per process, so cookies do not survive restarts nor work across instances)'),
  mask: z.strictObject({
    ipv4: intBetween(1, 32).optional().describe('Prefix length an IPv4 client address is cut to (default 32: the whole address; 24: a /24 shares one binding)'),
    ipv6: intBetween(1, 128).optional().describe('Prefix length an IPv6 client address is cut to (default 128: the whole address; 64: a /64 shares one binding)'),
  }, { error: 'must be an object such as {"ipv4": 24, "ipv6": 64}' }).optional()
    .describe('source mode: clients whose addresses share this prefix share one binding (default {"ipv4": 32, "ipv6": 128})'),
});

export const sessionStoreSchema = z.strictObject({
  type: z.enum(['memcached', 'memory'], { error: 'must be "memcached" or "memory"' })
    .describe('"memory": bindings local to this process; "memcached": shared by every sessionlb instance using the same servers'),
  servers: z.array(z.string({ error: 'must be "host:port"' }), { error: 'must be an array of "host:port"' }).optional()
    .describe('memcached servers ("host:port", port defaults to 11211); several are spread by ketama consistent hashing; a twemproxy/nutcracker front is one address'),
  keyPrefix: z.string({ error: 'must be a string' }).optional().describe('Prepended to every memcached key (default "sessionlb:")'),
  timeout: duration().optional().describe('Longest wait for any memcached call; a request never waits longer (default "50ms")'),
  hashKey: z.string({ error: 'must be a string of at least 16 characters' }).min(16, { error: 'must be a string of at least 16 characters' }).optional()
    .describe('Secret for the keyed hash that turns session ids into memcached keys; every instance sharing the store must use the same (default: env SESSIONLB_HASH_KEY, else derived from keyPrefix)'),
  maxFails: intAtLeast(1).optional().describe('Consecutive failures of one memcached server that open its circuit breaker (default 5)'),
  failTimeout: duration().optional().describe('How long an open circuit breaker keeps calls away before one probe call (default "5s")'),
  localCacheEntries: intAtLeast(1).optional().describe('Bindings kept in this process in front of memcached (default 100000)'),
  localCacheFresh: duration().optional().describe('How long a locally cached binding is used without asking memcached (default "5s"; each binding draws its period between 3/4 of this and all of it)'),
});

export const BALANCE_FORMS = '"round_robin", "least_conn", "ip_hash", "random", {"hash": "<key>", "consistent": true|false} or {"random": "two", "pick": "least_conn"}';

/** A specific message for a `balance` value none of the forms accepts. */
function balanceProblem(input: unknown): string {
  if (typeof input === 'object' && input !== null && !Array.isArray(input)) {
    const o = input as Record<string, unknown>;
    if ('hash' in o) {
      if (typeof o.hash !== 'string' || o.hash === '') return '"hash" must be a key such as "$cookie_PHPSESSID" or "$remote_addr"';
      if ('consistent' in o && typeof o.consistent !== 'boolean') return '"consistent" must be true or false';
    }
    if ('random' in o) {
      if (o.random !== 'two') return '"random" must be "two" (or write "balance": "random")';
      if ('pick' in o && o.pick !== 'least_conn') return '"pick" must be "least_conn"';
    }
  }
  return `must be one of ${BALANCE_FORMS}`;
}

export const balanceSchema = z.union([
  z.enum(['round_robin', 'least_conn', 'ip_hash', 'random']),
  z.strictObject({
    hash: z.string({ error: 'must be a key such as "$cookie_PHPSESSID" or "$remote_addr"' })
      .min(1, { error: 'must be a key such as "$cookie_PHPSESSID" or "$remote_addr"' })
      .describe('nginx `hash KEY`: a template of literal text and $remote_addr, $request_uri, $uri, $args, $host, $arg_NAME, $http_NAME, $cookie_NAME'),
    consistent: bool.optional()
      .describe('nginx `hash KEY consistent`: ketama ring (160 points per unit of weight); adding or removing a server remaps only ~1/n of keys (default false: nginx modulo hash)'),
  }),
  z.strictObject({
    random: z.literal('two', { error: 'must be "two" (or write "balance": "random")' }).describe('nginx `random two`: draw two servers, take the one with fewer active requests'),
    pick: z.literal('least_conn', { error: 'must be "least_conn"' }).optional().describe('how to choose between the two (nginx: least_conn, the default)'),
  }),
], { error: (iss) => balanceProblem(iss.input) })
  .describe('Balancing policy (nginx): "round_robin" (default, smooth weighted round robin), "least_conn", "ip_hash", '
    + '{"hash": "$cookie_PHPSESSID", "consistent": true}, "random", {"random": "two", "pick": "least_conn"}. '
    + 'hash, ip_hash and random do not allow backup servers.');

export const HEALTH_CHECK_STATUS_PATTERN = '^\\s*[1-5]\\d\\d(\\s*-\\s*[1-5]\\d\\d)?(\\s*[, ]\\s*[1-5]\\d\\d(\\s*-\\s*[1-5]\\d\\d)?)*\\s*$';

export const healthCheckSchema = z.strictObject({
  type: z.enum(['http', 'tcp'], { error: 'must be "http" or "tcp"' }).optional()
    .describe('"http": GET `path` and check `status` (and `body`); "tcp": the connection succeeds (default "http")'),
  path: z.string({ error: 'must be a path starting with "/"' }).startsWith('/', { error: 'must be a path starting with "/"' }).optional()
    .describe('http: the request path (default "/")'),
  interval: duration().optional().describe('time between probes of one server (default "5s"); probes are spread with jitter'),
  timeout: duration().optional().describe('a probe that takes longer fails (default "2s")'),
  fails: intAtLeast(1).optional().describe('consecutive failed probes that mark a server unhealthy (default 1)'),
  passes: intAtLeast(1).optional().describe('consecutive passing probes that bring it back (default 1)'),
  status: z.union([
    z.string({ error: 'must be status codes or ranges such as "200-399" or "200, 204, 301-302"' })
      .regex(new RegExp(HEALTH_CHECK_STATUS_PATTERN), { error: 'must be status codes or ranges such as "200-399" or "200, 204, 301-302"' }),
    z.number({ error: 'must be status codes or ranges such as "200-399" or "200, 204, 301-302"' }).int().min(100).max(599),
  ], { error: 'must be status codes or ranges such as "200-399" or "200, 204, 301-302"' }).optional()
    .describe('http: accepted status codes, a list of codes and ranges (default "200-399")'),
  body: z.string({ error: 'must be a regular expression' }).optional()
    .describe('http: a regular expression the first 64 KiB of the body must match'),
  headers: z.record(z.string(), z.string({ error: 'must be a string' })).optional()
    .describe('http: request headers (default Host: the server address)'),
  port: intAtLeast(0).optional().describe('port to probe (default 0 = the server\'s own port)'),
  mandatory: bool.optional().describe('a server is unhealthy until its first passing probe (at start and when added by reload)'),
});

/** nginx proxy_next_upstream* and proxy_*_timeout: per upstream, server or location, the nearest wins. */
const proxyTimingKeys = {
  nextUpstream: z.strictObject({
    on: z.array(z.enum(NEXT_UPSTREAM_CONDITIONS, { error: `must be one of ${NEXT_UPSTREAM_CONDITIONS.join(', ')}` }))
      .optional().describe('nginx proxy_next_upstream (default ["error", "timeout"])'),
    tries: intAtLeast(0).optional().describe('nginx proxy_next_upstream_tries (default 0 = all servers)'),
    timeout: duration().optional().describe('nginx proxy_next_upstream_timeout (default "0s" = unlimited)'),
  }).optional().describe('When and how often a request moves on to the next server (nginx proxy_next_upstream*); in a location or server it replaces the upstream\'s, key by key'),
  timeouts: z.strictObject({
    connect: duration().optional().describe('nginx proxy_connect_timeout (default "60s")'),
    send: duration().optional().describe('nginx proxy_send_timeout (default "60s")'),
    read: duration().optional().describe('nginx proxy_read_timeout (default "60s")'),
  }).optional().describe('Upstream timeouts (nginx proxy_connect/send/read_timeout); in a location or server they override the upstream\'s, key by key'),
};

export const LOCATION_MATCHES = ['=', '^~', '~', '~*'] as const;

/** nginx `return code [url|text]`. */
export const returnSchema = z.strictObject({
  code: z.number({ error: 'must be a status code 200-599 or 444' }).int({ error: 'must be a status code 200-599 or 444' })
    .min(200, { error: 'must be a status code 200-599 or 444' }).max(599, { error: 'must be a status code 200-599 or 444' })
    .describe('the status: 301, 302, 303, 307, 308 with `url`; others with an optional `text`; 444 closes the connection without a response (nginx)'),
  url: z.string({ error: 'must be a URL such as "https://$host$request_uri"' }).min(1).optional()
    .describe('redirect target (Location header), with variables $scheme, $host, $server_name, $request_uri, $uri, $args, $remote_addr, $server_port; a relative one is made absolute as nginx does'),
  text: z.string({ error: 'must be a string' }).optional()
    .describe('response body (Content-Type text/plain), with the same variables'),
}, { error: 'must be an object such as {"code": 301, "url": "https://$host$request_uri"} or {"code": 503, "text": "..."}' });

export const upstreamSchema = z.strictObject({
  balance: balanceSchema.optional(),
  healthCheck: healthCheckSchema.optional().describe('active health checks of every server of this upstream'),
  sticky: stickySchema.optional().describe('Session affinity: send every request of a session to the same server'),
  servers: z.array(upstreamServerSchema, { error: 'must be an array of servers' })
    .min(1, { error: 'must list at least one server' }).describe('nginx `server` lines of the upstream'),
  keepalive: intAtLeast(0).optional().describe('nginx keepalive: idle upstream connections kept per server (default 32; 0 = none)'),
  keepaliveTimeout: duration().optional().describe('nginx keepalive_timeout in upstream: idle upstream connection lifetime (default "60s")'),
  ...proxyTimingKeys,
});

/** nginx "number size" (large_client_header_buffers, proxy_buffers): e.g. "4 8k". */
const buffers = z.string({ error: 'must be "NUMBER SIZE", e.g. "4 8k"' })
  .regex(/^\s*[1-9]\d{0,3}\s+\d+[kKmM]?\s*$/, { error: 'must be "NUMBER SIZE", e.g. "4 8k"' });

/** Request and response buffering (nginx proxy_request_buffering, proxy_buffering and their sizes): top level, server or location, the nearest wins. */
const bufferingKeys = {
  proxyRequestBuffering: bool.optional()
    .describe('nginx proxy_request_buffering: read the whole request body (memory, then a temp file) before choosing a server (default true)'),
  proxyBuffering: bool.optional()
    .describe('nginx proxy_buffering: read the response as fast as the server sends it (memory, then a temp file), whatever the client\'s pace (default true)'),
  clientBodyBufferSize: size.optional().describe('nginx client_body_buffer_size: request body kept in memory, more goes to a temp file (default "16k")'),
  proxyBuffers: buffers.optional().describe('nginx proxy_buffers: response data kept in memory per request before a temp file is used (default "8 4k")'),
  proxyBufferSize: size.optional().describe('nginx proxy_buffer_size: counted with proxyBuffers as the response\'s memory budget (default "4k")'),
  proxyMaxTempFileSize: size.optional()
    .describe('nginx proxy_max_temp_file_size: most response data spilled to a temp file per request; past it the server is read as the client reads ("0" = no temp file; default "1024m")'),
  clientBodyTempPath: z.string({ error: 'must be a directory path' }).min(1, { error: 'must be a directory path' }).optional()
    .describe('nginx client_body_temp_path: directory for request body temp files (default: the OS temp directory)'),
  proxyTempPath: z.string({ error: 'must be a directory path' }).min(1, { error: 'must be a directory path' }).optional()
    .describe('nginx proxy_temp_path: directory for response temp files (default: the OS temp directory)'),
};

export const TLS_PROTOCOLS = ['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'] as const;
const TLS_PROTOCOLS_MESSAGE = 'must be a list of "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"';

const tlsProtocols = z.array(z.enum(TLS_PROTOCOLS, { error: TLS_PROTOCOLS_MESSAGE }), { error: TLS_PROTOCOLS_MESSAGE })
  .min(1, { error: 'must list at least one protocol' });

const filePath = z.string({ error: 'must be a file path' }).min(1, { error: 'must be a file path' });

/** One file or a list of files (at least one). */
const fileList = z.union([filePath, z.array(filePath).min(1, { error: 'must list at least one file' })],
  {
    error: (iss) => (iss.input === undefined ? 'is required'
      : Array.isArray(iss.input) && iss.input.length === 0 ? 'must list at least one file' : 'must be a file path or a list of file paths'),
  });

/** A virtual server's TLS settings (nginx ssl_*), for its `listen ... ssl` addresses. */
export const sslSchema = z.strictObject({
  certificate: fileList
    .describe('nginx ssl_certificate: PEM file of the certificate (followed by its chain), or a list of them (e.g. ECDSA and RSA), paired by position with certificateKey; relative paths: to the config file'),
  certificateKey: fileList
    .describe('nginx ssl_certificate_key: PEM file of the private key of each certificate, in the same order'),
  protocols: tlsProtocols.optional().describe('nginx ssl_protocols: "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3" (default ["TLSv1.2", "TLSv1.3"])'),
  ciphers: z.string({ error: 'must be an OpenSSL cipher list' }).min(1, { error: 'must be an OpenSSL cipher list' }).optional()
    .describe('nginx ssl_ciphers: OpenSSL cipher list for TLS 1.2 and below (default "HIGH:!aNULL:!MD5")'),
  sessionTickets: bool.optional().describe('nginx ssl_session_tickets: resume TLS sessions with tickets (default true)'),
  sessionTimeout: duration().optional().describe('nginx ssl_session_timeout: how long a TLS session can be resumed (default "5m")'),
});

/** TLS to "https://" upstreams (nginx proxy_ssl_*): top level, server or location, the nearest wins. */
const upstreamTlsKeys = {
  proxySslVerify: bool.optional()
    .describe('nginx proxy_ssl_verify: verify an "https://" upstream\'s certificate against proxySslTrustedCertificate (default false, as nginx)'),
  proxySslTrustedCertificate: filePath.optional()
    .describe('nginx proxy_ssl_trusted_certificate: PEM file of the CA certificates proxySslVerify trusts (relative paths: to the config file)'),
  proxySslName: z.string({ error: 'must be a host name' }).regex(/^[^\s/]+$/, { error: 'must be a host name' }).optional()
    .describe('nginx proxy_ssl_name: the name an "https://" upstream\'s certificate is verified against and, with proxySslServerName, sent as SNI (default: the host of proxyPass without the port)'),
  proxySslServerName: bool.optional()
    .describe('nginx proxy_ssl_server_name: send proxySslName as SNI to "https://" upstreams (default false, as nginx)'),
  proxySslProtocols: tlsProtocols.optional()
    .describe('nginx proxy_ssl_protocols: TLS versions offered to "https://" upstreams (default ["TLSv1.2", "TLSv1.3"])'),
};

/** Response headers (nginx add_header, proxy_hide_header): top level, server or location; a level that sets any replaces its parent's. */
const responseHeaderKeys = {
  addHeader: z.record(
    z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, { error: 'must be a header name' }),
    z.union([
      z.string({ error: 'must be a string' }),
      z.strictObject({
        value: z.string({ error: 'must be a string' }).describe('the header value; may use $host, $scheme, $request_uri, ... as nginx'),
        always: bool.optional().describe('nginx `always`: add it to every response, error pages included (default false)'),
      }),
    ], { error: 'must be a string or {"value": "...", "always": true}' }),
    { error: 'must be an object of header name -> value' },
  ).optional()
    .describe('nginx add_header: response headers added to 200, 201, 204, 206, 301, 302, 303, 304, 307 and 308 responses ({"value": ..., "always": true}: to every response); a level that sets any replaces its parent\'s'),
  proxyHideHeader: z.array(z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, { error: 'must be a header name' }), { error: 'must be an array of header names' }).optional()
    .describe('nginx proxy_hide_header: upstream response headers not passed to the client, e.g. ["X-Powered-By"]; a level that sets any replaces its parent\'s'),
};

export const locationSchema = z.strictObject({
  path: z.string({ error: 'must be a path starting with "/"' }).min(1, { error: 'must be a path starting with "/"' })
    .describe('nginx `location /path`: a prefix (the longest wins) starting with "/", or with "match": "~" / "~*" a regular expression matched against the normalised path'),
  match: z.enum(LOCATION_MATCHES, { error: 'must be "=", "^~", "~" or "~*"' }).optional()
    .describe('nginx location modifier: "=" exact, "^~" prefix that stops the regex search, "~" regular expression, "~*" case-insensitive regular expression (default: plain prefix)'),
  exact: bool.optional().describe('nginx `location = /path` (the same as "match": "=")'),
  proxyPass: z.string({ error: 'must be "http://upstream_name" or "http://host:port" (or "https://...")' }).optional()
    .describe('nginx proxy_pass (required unless `return`): "http://<upstream name>" or "http://host:port", optionally with a URI that replaces the matched prefix; "https://..." speaks TLS to the upstream (proxySsl* keys)'),
  proxySetHeader: z.record(z.string(), z.string({ error: 'must be a string ("" removes the header)' })).optional()
    .describe('nginx proxy_set_header: overrides request headers sent upstream ("" removes one)'),
  clientMaxBodySize: size.optional().describe('nginx client_max_body_size for this location (default: the server\'s)'),
  return: returnSchema.optional().describe('nginx `return`: answer here, no upstream involved'),
  ...proxyTimingKeys,
  locations: z.unknown().optional().describe('nested locations: not supported (`check` reports them)'),
  ...bufferingKeys,
  ...upstreamTlsKeys,
  ...accessKeys,
  ...responseHeaderKeys,
  ...errorPageKeys,
  ...compressionKeys,
  ...limitKeys,
}).superRefine((loc, ctx) => {
  // A prefix ("", "=", "^~") is a path; a regular expression ("~", "~*") may start with anything.
  if (loc.match !== '~' && loc.match !== '~*' && !loc.path.startsWith('/')) {
    ctx.addIssue({ code: 'custom', path: ['path'], message: 'must be a path starting with "/"', input: loc.path });
  }
});

/** CIDRs allowed to send a PROXY protocol header (checked with addCidrTo by the cross-checks). */
const PROXY_PROTOCOL_FROM = z.array(z.string({ error: 'must be a CIDR such as "10.0.0.0/8"' }), { error: 'must be an array of CIDRs such as ["10.0.0.0/8"]' });

/** nginx set_real_ip_from / real_ip_header / real_ip_recursive (CIDRs checked by the cross-checks). */
export const realIpSchema = z.strictObject({
  from: PROXY_PROTOCOL_FROM.min(1, { error: 'must list at least one trusted address' })
    .describe('nginx set_real_ip_from: the addresses trusted to say who the client is (CIDRs such as "10.0.0.0/8")'),
  header: z.string({ error: 'must be "X-Forwarded-For", "X-Real-IP", "proxy_protocol" or a header name' })
    .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, { error: 'must be "X-Forwarded-For", "X-Real-IP", "proxy_protocol" or a header name' }).optional()
    .describe('nginx real_ip_header: "X-Real-IP" (default), "X-Forwarded-For", "proxy_protocol" (the PROXY header\'s source) or another header holding one address'),
  recursive: bool.optional()
    .describe('nginx real_ip_recursive: skip trusted addresses from the right of the header and take the first untrusted one (default false: the last address)'),
});

export const virtualServerSchema = z.strictObject({
  listen: z.array(z.string({ error: 'must be "host:port"' }), { error: 'must be an array of "host:port"' })
    .min(1, { error: 'must list at least one address' })
    .describe('nginx listen: "host:port", "[::1]:port" or a bare port (all IPv4 addresses), then nginx\'s parameters "ssl", "default_server", "http2", "proxy_protocol": "0.0.0.0:443 ssl", "80 default_server", "443 ssl proxy_protocol"'),
  serverName: z.array(z.string({ error: 'must be a string' })).optional()
    .describe('nginx server_name: exact names, "*.example.com", "www.example.*", ".example.com"'),
  default: bool.optional().describe('nginx `listen ... default_server` on every listen entry of this server'),
  ssl: sslSchema.optional().describe('TLS for this server\'s "ssl" listen entries (nginx ssl_* directives); chosen by SNI among the servers of one address'),
  http2: bool.optional().describe('nginx `http2 on`: offer HTTP/2 (ALPN "h2") on this server\'s "ssl" addresses; not over plain TCP (default false)'),
  proxyProtocolFrom: PROXY_PROTOCOL_FROM.optional()
    .describe('Addresses allowed to send a PROXY protocol header on this server\'s "proxy_protocol" listen entries (default: the top-level list)'),
  realIp: realIpSchema.optional().describe('nginx realip for this server (default: the top-level one): the client address taken from a header sent by a trusted proxy'),
  locations: z.array(locationSchema, { error: 'must be an array of locations' }).optional().describe('nginx `location` blocks (required unless the server has `return`)'),
  clientMaxBodySize: size.optional().describe('nginx client_max_body_size for this server (default: the top-level one)'),
  return: returnSchema.optional().describe('nginx `return` at server level: answers every request of this server, before any location'),
  proxySetHeader: z.record(z.string(), z.string({ error: 'must be a string ("" removes the header)' })).optional()
    .describe('nginx proxy_set_header for every location of this server that sets none itself (nginx: a level that sets any replaces its parent\'s)'),
  ...proxyTimingKeys,
  ...bufferingKeys,
  ...upstreamTlsKeys,
  ...accessKeys,
  ...responseHeaderKeys,
  ignoreInvalidHeaders: bool.optional().describe('nginx ignore_invalid_headers for this server (default: the top-level one)'),
  ...errorPageKeys,
  ...compressionKeys,
  ...limitKeys,
});

/** A stream's routing by the TLS ClientHello, read without terminating TLS (nginx ssl_preread + map). */
export const streamRouteSchema = z.strictObject({
  by: z.enum(['sni', 'alpn'], { error: 'must be "sni" or "alpn"' })
    .describe('what routes: "sni" the server name of the ClientHello (nginx $ssl_preread_server_name), "alpn" its ALPN protocols (the first one the client offers that the map has)'),
  map: z.record(z.string(), z.string({ error: 'must be an upstream name or "host:port"' }), { error: 'must be an object of name -> upstream' })
    .describe('"sni": server name (exact, "*.example.com", ".example.com", "www.example.*"; case-insensitive) -> upstream name or "host:port"; "alpn": protocol ("h2", "http/1.1") -> upstream'),
  default: z.string({ error: 'must be an upstream name or "host:port"' }).min(1, { error: 'must be an upstream name or "host:port"' }).optional()
    .describe('nginx map `default`: the upstream of a connection the map does not name (no SNI, no ALPN, no match); without it such connections are closed'),
  onNonTls: z.enum(['default', 'close'], { error: 'must be "default" or "close"' }).optional()
    .describe('a connection that does not start with a TLS ClientHello, or a malformed one: "default" goes to `default` (nginx), "close" closes it (default "default")'),
  prereadTimeout: duration().optional().describe('nginx preread_timeout: longest wait for the whole ClientHello; then the connection is closed (default "30s")'),
  prereadBufferSize: size.optional().describe('nginx preread_buffer_size: most bytes read for the ClientHello; a longer one closes the connection (default "16k")'),
});

export const streamSchema = z.strictObject({
  listen: z.array(z.string({ error: 'must be "host:port"' }), { error: 'must be an array of "host:port"' })
    .min(1, { error: 'must list at least one address' })
    .describe('nginx stream `listen`: "host:port", "[::1]:port" or a bare port (all IPv4 addresses), then "proxy_protocol" if connections start with a PROXY protocol header: "3306 proxy_protocol"'),
  proxyPass: z.string({ error: 'must be an upstream name or "host:port"' }).min(1, { error: 'must be an upstream name or "host:port"' }).optional()
    .describe('nginx stream proxy_pass: the name of an upstream in $.upstreams ("pg") or one "host:port" (no "http://": the bytes pass unchanged); required unless `route`'),
  route: streamRouteSchema.optional()
    .describe('TLS passthrough routed by the ClientHello (nginx ssl_preread on + map $ssl_preread_server_name): instead of proxyPass'),
  proxyConnectTimeout: duration().optional().describe('nginx proxy_connect_timeout: longest wait for a connection to a server (default "60s")'),
  proxyTimeout: duration().optional()
    .describe('nginx proxy_timeout: the session is closed when nothing was read or written on either connection for this long (default "10m"; "0s" = never)'),
  nextUpstream: bool.optional().describe('nginx proxy_next_upstream on|off: a failed connection attempt moves on to the next server (default true)'),
  nextUpstreamTries: intAtLeast(0).optional().describe('nginx proxy_next_upstream_tries (default 0 = every server once)'),
  nextUpstreamTimeout: duration().optional().describe('nginx proxy_next_upstream_timeout (default "0s" = unlimited)'),
  proxyProtocol: bool.optional()
    .describe('nginx stream `proxy_protocol on`: each connection to a server starts with a PROXY protocol v1 header carrying the client\'s address (default false)'),
  proxyProtocolFrom: PROXY_PROTOCOL_FROM.optional()
    .describe('Addresses allowed to send a PROXY protocol header on this stream\'s "proxy_protocol" listen entries (default: the top-level list)'),
});

export const adminSchema = z.strictObject({
  listen: z.string({ error: 'must be "host:port"' }).describe('Admin listener address ("host:port"; a bare port means 127.0.0.1)'),
  allow: z.array(z.string({ error: 'must be a CIDR such as "127.0.0.1/32"' })).optional()
    .describe('Clients allowed on the admin listener (default loopback only)'),
  token: z.string({ error: 'must be a string of at least 8 characters without spaces' })
    .regex(/^\S{8,}$/, { error: 'must be a string of at least 8 characters without spaces' }).optional()
    .describe('Bearer token required on the admin API (Authorization: Bearer TOKEN); default: env SESSIONLB_ADMIN_TOKEN, else none'),
});

export const configSchema = z.strictObject({
  $schema: z.string().optional().describe('Path or URL of this JSON Schema (for editors)'),
  servers: z.array(virtualServerSchema, { error: 'must be an array of servers' })
    .min(1, { error: 'must list at least one server' }).optional()
    .describe('Virtual servers (nginx `server` blocks); required unless the file has `streams`'),
  streams: z.array(streamSchema, { error: 'must be an array of streams' }).optional()
    .describe('TCP (L4) proxies (nginx `stream { server { ... } }`): each listen address passes connections to an upstream'),
  upstreams: z.record(z.string(), upstreamSchema, { error: 'must be an object of named upstreams' }).optional()
    .describe('Named groups of upstream servers (nginx `upstream NAME`), used by proxyPass "http://NAME"'),
  admin: adminSchema.optional().describe('The admin listener (/healthz and the admin API); none when absent'),
  sessionStore: sessionStoreSchema.optional()
    .describe('Where sticky "learn" bindings live (default {"type": "memory"}: local to this process)'),
  clientMaxBodySize: size.optional().describe('nginx client_max_body_size (default "1m"; "0" = unlimited)'),
  ...bufferingKeys,
  ...upstreamTlsKeys,
  ...accessKeys,
  ...responseHeaderKeys,
  ignoreInvalidHeaders: bool.optional()
    .describe('nginx ignore_invalid_headers: drop request headers whose name has a character other than letters, digits, "-" (and "_" with underscoresInHeaders) instead of passing them upstream (default true)'),
  ...errorPageKeys,
  ...compressionKeys,
  ...limitKeys,
  ...limitZoneKeys,
  largeClientHeaderBuffers: buffers.optional()
    .describe('nginx large_client_header_buffers: the request line must fit one buffer (else 414), each header line one buffer (else 400), the whole header NUMBER x SIZE (else 431) (default "4 8k")'),
  clientHeaderTimeout: duration().optional()
    .describe('nginx client_header_timeout: a client that has not sent the whole request header by then gets 408 and is closed (default "60s")'),
  underscoresInHeaders: bool.optional()
    .describe('nginx underscores_in_headers: pass request headers whose name has "_" (default false: they are dropped, as CGI-style backends map "_" and "-" alike)'),
  proxyProtocolFrom: PROXY_PROTOCOL_FROM.optional()
    .describe('Addresses allowed to send a PROXY protocol header on "proxy_protocol" listen entries (nginx set_real_ip_from for proxy_protocol); a connection from elsewhere is closed. Required by such entries unless their server or stream has its own list'),
  realIp: realIpSchema.optional()
    .describe('nginx realip (set_real_ip_from, real_ip_header, real_ip_recursive): when a request comes from a trusted address, the client address the header names becomes $remote_addr (X-Forwarded-For, X-Real-IP, ip_hash, hash, sticky source, logs); a server\'s own realIp replaces it'),
  maxConnections: intAtLeast(0).optional()
    .describe('Most open client connections per HTTP listener; past it new connections are closed at once (default 0 = unlimited)'),
  keepaliveTimeout: duration().optional().describe('nginx keepalive_timeout for clients (default "75s")'),
  shutdownTimeout: duration().optional().describe('How long in-flight requests may run after SIGTERM (default "30s")'),
  sendTimeout: duration().optional()
    .describe('nginx send_timeout: a client that accepts no response data for this long is disconnected (default "60s")'),
  accessLog: z.union([
    z.literal(false),
    z.strictObject({
      path: z.string({ error: 'must be a file path' }).min(1, { error: 'must be a file path' }).optional()
        .describe('File to append JSON lines to (default: stdout)'),
    }),
  ], { error: 'must be false or an object such as {"path": "/var/log/sessionlb/access.log"}' }).optional()
    .describe('nginx-style JSON access log, one object per request: stdout by default, {"path": FILE} for a file, false for none'),
  stateFile: z.string({ error: 'must be a file path' }).min(1, { error: 'must be a file path' }).optional()
    .describe('Where runtime server state set through the admin API (drain/maint/weight) is kept across restarts (relative paths: to the config file)'),
  pidFile: z.string({ error: 'must be a file path' }).min(1, { error: 'must be a file path' }).optional()
    .describe('Written with the process id at start, removed at stop; `sessionlb reload` signals this pid (like nginx `pid`; relative paths: to the config file)'),
  workers: z.union([
    z.literal('auto'),
    z.number({ error: 'must be "auto" or an integer >= 1' }).int({ error: 'must be "auto" or an integer >= 1' })
      .min(1, { error: 'must be "auto" or an integer >= 1' }).max(256, { error: 'must be an integer <= 256' }),
  ], { error: 'must be "auto" or an integer >= 1' }).optional()
    .describe('Worker processes sharing the listeners (nginx worker_processes): "auto" (default) = one per CPU, 1 = a single process without node:cluster'),
});

export type RawConfig = z.input<typeof configSchema>;
export type RawUpstream = z.input<typeof upstreamSchema>;
export type RawUpstreamServer = z.input<typeof upstreamServerSchema>;
export type RawVirtualServer = z.input<typeof virtualServerSchema>;
export type RawLocation = z.input<typeof locationSchema>;
export type RawReturn = z.input<typeof returnSchema>;
export type RawStream = z.input<typeof streamSchema>;
export type RawStreamRoute = z.input<typeof streamRouteSchema>;
/** The buffering keys, as written at any of the three levels. */
export type RawBuffering = z.input<ReturnType<typeof z.strictObject<typeof bufferingKeys>>>;
/** The proxy_ssl_* keys, as written at any of the three levels. */
export type RawUpstreamTls = z.input<ReturnType<typeof z.strictObject<typeof upstreamTlsKeys>>>;
export type RawSsl = z.input<typeof sslSchema>;
/** The access keys, as written at any of the three levels. */
export type RawAccess = z.input<ReturnType<typeof z.strictObject<typeof accessKeys>>>;
export type RawCompression = z.input<ReturnType<typeof z.strictObject<typeof compressionKeys>>>;

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
