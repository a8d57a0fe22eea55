/**
 * nginx's `listen ADDRESS [PARAMETER ...]` as one string: `"0.0.0.0:443 ssl"`, `"[::]:443 ssl http2"`,
 * `"80 default_server"`. Pure parsing: the address (see address.ts) and the parameters sessionlb
 * knows; rules across entries and servers are the config's.
 */
import { parseHostPort, type HostPort } from './address.js';

/** A parsed listen entry: the address and its parameters. */
export interface ListenEntry extends HostPort {
  /** `ssl`: TLS is terminated on this address. */
  ssl: boolean;
  /** `default_server` (or nginx's older spelling `default`). */
  defaultServer: boolean;
  /** `http2`: nginx's deprecated listen parameter, the same as the server's `http2 on`. */
  http2: boolean;
  /** `proxy_protocol`: every connection starts with a PROXY protocol header (v1 or v2). */
  proxyProtocol: boolean;
}

/** nginx listen parameters sessionlb does not take (yet), with why. */
const NOT_SUPPORTED = new Map([
  ['quic', 'is not supported (no HTTP/3)'],
]);

/** nginx listen parameters about socket tuning; sessionlb takes none of them. */
const NGINX_SOCKET_PARAMETERS = /^(?:bind|reuseport|deferred|ipv6only=\S*|backlog=\S*|rcvbuf=\S*|sndbuf=\S*|so_keepalive=\S*|fastopen=\S*|accept_filter=\S*|setfib=\S*)$/;

/**
 * Parses `"ADDRESS [PARAMETER ...]"` (parameters separated by spaces). A bare port means
 * `defaultHost:PORT`. Returns an error message naming the bad part instead of throwing.
 */
export function parseListen(text: string, defaultHost = '0.0.0.0'): ListenEntry | string {
  if (typeof text !== 'string') return 'must be a non-empty "host:port"';
  const [address = '', ...params] = text.trim().split(/\s+/);
  const hp = parseHostPort(address, undefined, defaultHost);
  // With parameters, say which part was read as the address ("exa mple:80" is "exa" and a parameter).
  if (typeof hp === 'string') return params.length > 0 ? `address "${address}": ${hp}` : hp;
  const entry: ListenEntry = { ...hp, ssl: false, defaultServer: false, http2: false, proxyProtocol: false };
  for (const p of params) {
    if (p === 'ssl') entry.ssl = true;
    else if (p === 'default_server' || p === 'default') entry.defaultServer = true;
    else if (p === 'http2') entry.http2 = true;
    else if (p === 'proxy_protocol') entry.proxyProtocol = true;
    else return parameterProblem(p);
  }
  return entry;
}

function parameterProblem(p: string): string {
  const why = NOT_SUPPORTED.get(p);
  if (why !== undefined) return `listen parameter "${p}" ${why}`;
  if (NGINX_SOCKET_PARAMETERS.test(p)) return `listen parameter "${p}" is not supported by sessionlb (it takes "ssl", "default_server", "http2" and "proxy_protocol")`;
  return `unknown listen parameter "${p}" (sessionlb takes "ssl", "default_server", "http2" and "proxy_protocol")`;
}
