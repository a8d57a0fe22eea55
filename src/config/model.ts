/**
 * The config model: what a loaded configuration is (durations in milliseconds, sizes in
 * bytes, addresses parsed), and nginx's defaults. Every layer reads these types; only
 * load.ts builds them.
 */
import type { LimitConnZoneConfig, LimitReqZoneConfig, LocationLimits } from './limits.js';
import type { ErrorPages } from './error-pages.js';
import type { BlockList } from 'node:net';
import type { CompiledTemplate } from '../nginx-language/variables.js';
import type { ConfigProblem } from './schema.js';
import type { IpRule } from '../net/ip-rules.js';
import type { HtpasswdFile } from './htpasswd.js';

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
  /** nginx Plus slow_start in ms; 0 = off. */
  slowStartMs: number;
  /** Keeps its bound sessions, gets no new ones (Peer.adminState 'drain' at start). */
  drain: boolean;
  /** HAProxy send-proxy / send-proxy-v2: each HTTP connection to it starts with a PROXY header; null = none. */
  sendProxy: 'v1' | 'v2' | null;
}

/** An upstream's session affinity (`sticky`). */
export interface StickyConfig {
  mode: 'learn' | 'cookie' | 'hash' | 'source';
  /** learn/hash: the backend's session cookie; cookie: the cookie sessionlb sets. */
  cookie: string;
  ttlMs: number;
  idRules: { minLength: number; maxLength: number };
  /** cookie mode: the signing secret, and where it came from. */
  cookieKey: string;
  cookieKeySource: 'config' | 'env' | 'random';
  /** source mode: prefix lengths the client address is cut to (32 / 128: the whole address). */
  mask: { ipv4: number; ipv6: number };
}

/** Where learned bindings live (`sessionStore`). */
export interface SessionStoreConfig {
  type: 'memory' | 'memcached';
  /** False when the file has no `sessionStore` (the embedded default). */
  explicit: boolean;
  /** memcached `host:port` list (as normalised, the ketama ring is built over these names). */
  servers: string[];
  keyPrefix: string;
  timeoutMs: number;
  hashKey: string;
  hashKeySource: 'config' | 'env' | 'derived';
  maxFails: number;
  failTimeoutMs: number;
  localCacheEntries: number;
  localCacheFreshMs: number;
}

/** An upstream's active health check (`healthCheck`). */
export interface HealthCheckConfig {
  type: 'http' | 'tcp';
  path: string;
  intervalMs: number;
  timeoutMs: number;
  fails: number;
  passes: number;
  /** Accepted status ranges, inclusive [low, high] pairs. */
  status: Array<[number, number]>;
  /** The `status` text as written (for /status). */
  statusText: string;
  body: RegExp | null;
  /** Header name as written -> value. */
  headers: Record<string, string>;
  /** 0 = the server's own port. */
  port: number;
  mandatory: boolean;
}

/** The `balance` policy (nginx's load balancing methods). */
export type BalanceConfig =
  | { kind: 'round_robin' }
  | { kind: 'least_conn' }
  | { kind: 'ip_hash' }
  /** `key` is compiled once per config; `consistent` = ketama ring, else nginx's modulo hash. */
  | { kind: 'hash'; key: CompiledTemplate; consistent: boolean }
  /** `two` = nginx `random two least_conn`. */
  | { kind: 'random'; two: boolean };

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
  timeouts: ProxyTimeouts;
  /** Active health checks; null = none (passive only). */
  healthCheck: HealthCheckConfig | null;
  /** Session affinity; null = none. */
  sticky: StickyConfig | null;
  /** True for the implicit upstream made from `proxyPass: "http://host:port"`. */
  implicit: boolean;
}

/** nginx location modifiers: "" a plain prefix, "=" exact, "^~" a prefix that stops the regex search, "~" / "~*" regular expressions. */
export type LocationMatch = '' | '=' | '^~' | '~' | '~*';

/** nginx `return code [url|text]`, its templates compiled once per config. */
export interface ReturnConfig {
  code: number;
  /** 301/302/303/307/308: the Location (made absolute when relative); null otherwise. */
  url: CompiledTemplate | null;
  /** Other codes: the body; null = nginx's own page for the code (or none). */
  text: CompiledTemplate | null;
}

/** Upstream timeouts in ms (nginx proxy_connect/send/read_timeout). */
export interface ProxyTimeouts {
  connectMs: number;
  sendMs: number;
  readMs: number;
}

export interface LocationConfig {
  path: string;
  /** True for "=" (kept for proxy_pass URI replacement). */
  exact: boolean;
  match: LocationMatch;
  /** "~" / "~*": the expression, compiled once at load; null for the other forms. */
  regex: RegExp | null;
  /** nginx `return` in this location: answered here, nothing is proxied (`upstream` is ""). */
  return: ReturnConfig | null;
  /** The nearest of location, server and upstream `timeouts`, key by key. */
  timeouts: ProxyTimeouts;
  /** The nearest of location, server and upstream `nextUpstream`, key by key. */
  nextUpstream: UpstreamConfig['nextUpstream'];
  upstream: string;
  /** nginx proxy_pass with a URI: the matched prefix is replaced by this; null = pass the URI unchanged. */
  rewritePrefix: string | null;
  /** Lower-case header name -> value; "" removes the header. */
  setHeaders: ReadonlyMap<string, string>;
  clientMaxBodySize: number;
  /** Request and response buffering (nearest of location, server, top level). */
  buffering: BufferingConfig;
  /** TLS to the upstream for `proxyPass: "https://..."` (proxySsl* keys, nearest of location, server, top level); null for "http://". */
  upstreamTls: UpstreamTlsConfig | null;
  /** nginx allow/deny (nearest level that sets `access`), compiled; null = no rules. */
  access: readonly IpRule[] | null;
  /** nginx auth_basic (nearest level that sets it; "off" = null) with its user file, read at load. */
  authBasic: AuthBasicConfig | null;
  /** nginx add_header of the nearest level that sets any (a level replaces its parent's); [] = none. */
  addHeaders: readonly AddHeaderConfig[];
  /** nginx proxy_hide_header (nearest level that sets any), lower case; null = none (the fast path). */
  hideHeaders: ReadonlySet<string> | null;
  /** nginx ignore_invalid_headers (server, else top level; default true): request header names outside [A-Za-z0-9-] (and "_" per underscoresInHeaders) are dropped. */
  ignoreInvalidHeaders: boolean;
  /** nginx error_page (nearest level that sets `errorPage`), files read at load; null/absent = none. */
  errorPages?: ErrorPages | null;
  /** nginx gzip / ngx_brotli (each key from the nearest level); null = both off. */
  compression: CompressionConfig | null;
  /** nginx limit_req / limit_conn of this location (none for a `return` one: nginx returns before them); null = none. */
  limits: LocationLimits | null;
}

/** One nginx `add_header NAME VALUE [always]`. */
export interface AddHeaderConfig {
  name: string;
  /** The value, compiled once ($host etc.); `constant` when it has no variable. */
  value: CompiledTemplate;
  /** The value when it has no variable (the common case: no per-response evaluation); else null. */
  constant: string | null;
  /** nginx `always`: every status, sessionlb's own error pages included; else only 200, 201, 204, 206, 301, 302, 303, 304, 307, 308. */
  always: boolean;
}

/** One content coding's settings (gzip or brotli). */
export interface CompressionCoding {
  /** The types list has "*". */
  anyType: boolean;
  /** Lower-case MIME types compressed ("text/html" always). */
  types: ReadonlySet<string>;
  /** Responses with a known Content-Length below this are not compressed. */
  minLength: number;
  level: number;
}

/** A location's response compression. */
export interface CompressionConfig {
  gzip: CompressionCoding | null;
  brotli: CompressionCoding | null;
  /** nginx gzip_proxied flags (config/compression.ts PROXIED). */
  proxied: number;
  /** nginx gzip_vary: add "Vary: Accept-Encoding" to responses that could be compressed. */
  vary: boolean;
}

/** HTTP Basic authentication of a location. */
export interface AuthBasicConfig {
  realm: string;
  /** `Basic realm="..."`: the WWW-Authenticate value of a 401. */
  challenge: string;
  /** The user file, resolved against the config's directory, and its users (filled by loadConfig). */
  userFile: HtpasswdFile;
}

/** nginx proxy_ssl_* for an "https://" proxyPass. */
export interface UpstreamTlsConfig {
  /** proxy_ssl_verify (default false, as nginx): verify the upstream's certificate chain and `name`. */
  verify: boolean;
  /** proxy_ssl_trusted_certificate, resolved against the config's directory; null = none (then `verify` is false). */
  trustedCertificate: string | null;
  /** proxy_ssl_server_name (default false, as nginx): send `name` as SNI (nginx sends none for an IP address). */
  serverName: boolean;
  /** proxy_ssl_name: the name verified and sent as SNI; default the proxyPass host without the port (upstream name or host). */
  name: string;
  /** proxy_ssl_protocols (default TLSv1.2 and TLSv1.3). */
  protocols: TlsProtocol[];
}

/** nginx proxy_request_buffering / proxy_buffering and their sizes, resolved to bytes and paths. */
export interface BufferingConfig {
  request: boolean;
  response: boolean;
  /** client_body_buffer_size: request body bytes kept in memory before a temp file. */
  clientBodyBufferSize: number;
  /** proxy_buffers, number x size in bytes; with proxyBufferSize, the response bytes kept in memory before a temp file. */
  proxyBuffers: number;
  proxyBufferSize: number;
  /** proxy_max_temp_file_size: response bytes a temp file may hold (0 = none). */
  maxTempFileSize: number;
  clientBodyTempPath: string;
  proxyTempPath: string;
}

/** Client request header limits (nginx large_client_header_buffers NUMBER SIZE). */
export interface HeaderLimits {
  /** One buffer: the longest request line, and the longest header line (name, ": ", value). */
  bufferSize: number;
  /** NUMBER x SIZE: the whole head (request line, header lines, CRLFs). */
  total: number;
}

export interface ListenAddress {
  host: string;
  port: number;
  /** `host:port` as nginx prints it; listeners are keyed by this. */
  key: string;
}

/** A virtual server's `listen` entry: the address and nginx's listen parameters after it. */
export interface ServerListen extends ListenAddress {
  /** `ssl`: TLS is terminated on this address (then every server on it listens with `ssl`). */
  ssl: boolean;
  /** `default_server` on this entry (the server's `default` key sets it on all of its entries). */
  defaultServer: boolean;
  /** `proxy_protocol`: connections start with a PROXY protocol header (then on every server of the address). */
  proxyProtocol: boolean;
}

/** A stream's `listen` entry. */
export interface StreamListen extends ListenAddress {
  /** `proxy_protocol`: connections start with a PROXY protocol header. */
  proxyProtocol: boolean;
}

export type TlsProtocol = 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3';

/** A virtual server's `ssl` block (nginx ssl_* directives), files resolved against the config's directory. */
export interface SslConfig {
  /** Certificate and key file pairs, in config order (e.g. ECDSA and RSA side by side): `certificate[i]` with `certificateKey[i]`. */
  certificates: Array<{ certificate: string; key: string }>;
  /** nginx ssl_protocols (default TLSv1.2 and TLSv1.3). */
  protocols: TlsProtocol[];
  /** nginx ssl_ciphers, OpenSSL syntax, for TLS 1.2 and below (default "HIGH:!aNULL:!MD5"). */
  ciphers: string;
  /** nginx ssl_session_tickets (default true). */
  sessionTickets: boolean;
  /** nginx ssl_session_timeout in ms (default 5m). */
  sessionTimeoutMs: number;
}

export interface VirtualServerConfig {
  index: number;
  listen: ServerListen[];
  serverNames: string[];
  /** The `default` key (default_server on every listen entry); per address, read `ServerListen.defaultServer`. */
  isDefault: boolean;
  /** TLS settings; null when the server has no `ssl` block. */
  ssl: SslConfig | null;
  /** nginx `http2 on`: HTTP/2 through ALPN on this server's `ssl` addresses. */
  http2: boolean;
  /** Who may send a PROXY header on its `proxy_protocol` addresses (CIDRs): its own list, else the top-level one. */
  proxyProtocolFrom: string[];
  /** nginx realip (its own `realIp`, else the top-level one); null = none (the connection's address is the client's). */
  realIp?: RealIpConfig | null;
  /** nginx `return` at server level: every request of this server gets it, before location matching. */
  return: ReturnConfig | null;
  /** nginx add_header of the server (else the top level): for its `return` and the 404 of an unmatched path; [] = none. */
  addHeaders: readonly AddHeaderConfig[];
  locations: LocationConfig[];
  /** nginx error_page of the server (its own `errorPage`, else the top level's): its errors outside a location, maintenance. */
  errorPages?: ErrorPages | null;
}

/** nginx set_real_ip_from / real_ip_header / real_ip_recursive. */
export interface RealIpConfig {
  from: string[];
  /** "X-Forwarded-For", "X-Real-IP" (default), "proxy_protocol" or another header name. */
  header: string;
  recursive: boolean;
}

export interface AdminConfig {
  listen: ListenAddress;
  allow: BlockList;
  allowText: string[];
  /** Bearer token required on the admin API (`admin.token`, else env SESSIONLB_ADMIN_TOKEN); null = none. */
  token: string | null;
}

export interface Config {
  file: string;
  servers: VirtualServerConfig[];
  /** TCP (L4) proxies (`streams`, nginx `stream {}`); [] when none. */
  streams: StreamConfig[];
  upstreams: Map<string, UpstreamConfig>;
  /** nginx limit_req_zone / limit_conn_zone (`limitReqZones`, `limitConnZones`). */
  limitReqZones: ReadonlyMap<string, LimitReqZoneConfig>;
  limitConnZones: ReadonlyMap<string, LimitConnZoneConfig>;
  admin: AdminConfig | null;
  keepaliveTimeoutMs: number;
  shutdownTimeoutMs: number;
  /** nginx send_timeout: longest pause of a client that does not read the response. */
  sendTimeoutMs: number;
  /** Runtime server state (admin API) kept across restarts; null = not kept. */
  stateFile: string | null;
  /** Process id file for `sessionlb reload`; null = none. */
  pidFile: string | null;
  sessionStore: SessionStoreConfig;
  /** The access log: false = off; `path` null = stdout. */
  accessLog: { path: string | null } | false;
  /** Worker processes (`workers`, "auto" resolved to the CPU count); 1 = no cluster. */
  workers: number;
  /** nginx large_client_header_buffers. */
  headerLimits: HeaderLimits;
  /** nginx client_header_timeout in ms. */
  clientHeaderTimeoutMs: number;
  /** nginx underscores_in_headers. */
  underscoresInHeaders: boolean;
  /** Most open client connections per HTTP listener; 0 = unlimited. */
  maxConnections: number;
  /** The top-level `proxyProtocolFrom` (CIDRs); [] when absent. */
  proxyProtocolFrom: string[];
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
  clientBodyBufferSize: '16k',
  proxyBuffers: '8 4k',
  proxyBufferSize: '4k',
  proxyMaxTempFileSize: '1024m',
  largeClientHeaderBuffers: '4 8k',
  clientHeaderTimeout: '60s',
  clientKeepaliveTimeout: '75s',
  shutdownTimeout: '30s',
  clientSendTimeout: '60s',
  adminAllow: ['127.0.0.1/32', '::1/128'],
  slowStart: '0s',
  healthCheck: {
    type: 'http',
    path: '/',
    interval: '5s',
    timeout: '2s',
    fails: 1,
    passes: 1,
    status: '200-399',
    port: 0,
  },
} as const;

/** nginx's ssl_* and proxy_ssl_* defaults. */
export const TLS_DEFAULTS = {
  protocols: ['TLSv1.2', 'TLSv1.3'] as TlsProtocol[],
  ciphers: 'HIGH:!aNULL:!MD5',
  sessionTickets: true,
  sessionTimeout: '5m',
  proxySslVerify: false,
  proxySslServerName: false,
  proxySslProtocols: ['TLSv1.2', 'TLSv1.3'] as TlsProtocol[],
} as const;

export const SESSION_DEFAULTS = {
  cookie: 'PHPSESSID',
  ownCookie: 'SESSIONLB',
  ttl: '24m',
  minIdLength: 22,
  maxIdLength: 256,
  keyPrefix: 'sessionlb:',
  timeout: '50ms',
  memcachedPort: 11211,
  maxFails: 5,
  failTimeout: '5s',
  localCacheEntries: 100_000,
  localCacheFresh: '5s',
} as const;

/** A stream's `route`, normalised: upstream names (named or implicit `host:port`). */
export interface StreamRouteConfig {
  by: 'sni' | 'alpn';
  /** Map keys as written ("sni": lower-cased) -> upstream name, in file order. */
  map: Map<string, string>;
  /** Where unnamed connections go; null: they are closed. */
  default: string | null;
  /** Non-TLS or malformed hellos: to `default`, or closed. */
  onNonTls: 'default' | 'close';
  /** nginx preread_timeout. */
  prereadTimeoutMs: number;
  /** nginx preread_buffer_size. */
  prereadBufferSize: number;
}

/** One `streams[]` entry, normalised. */
export interface StreamConfig {
  index: number;
  listen: StreamListen[];
  /** The upstream's name (a named one, or the implicit `host:port` one); null when `route` decides. */
  upstream: string | null;
  /** Routing by the TLS ClientHello (`route`, nginx ssl_preread + map); null: every connection goes to `upstream`. */
  route: StreamRouteConfig | null;
  /** nginx proxy_connect_timeout. */
  connectTimeoutMs: number;
  /** nginx proxy_timeout: idle time on both connections that ends the session; 0 = never. */
  timeoutMs: number;
  /** nginx proxy_next_upstream on|off. */
  nextUpstream: boolean;
  /** nginx proxy_next_upstream_tries; 0 = every server once. */
  nextUpstreamTries: number;
  /** nginx proxy_next_upstream_timeout; 0 = unlimited. */
  nextUpstreamTimeoutMs: number;
  /** nginx stream `proxy_protocol on`: connections to servers start with a PROXY v1 header. */
  proxyProtocol: boolean;
  /** Who may send a PROXY header on its `proxy_protocol` addresses (CIDRs): its own list, else the top-level one. */
  proxyProtocolFrom: string[];
}
