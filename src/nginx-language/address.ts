import { isIP } from 'node:net';

/** A parsed `host:port` as nginx writes it: IPv4, `[IPv6]:port`, or a hostname. */
export interface HostPort {
  host: string;
  port: number;
  /** 4 or 6 for a literal address, 0 for a hostname that needs resolving. */
  family: 0 | 4 | 6;
}

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;

/**
 * Parses an address. `defaultPort` applies when the text has none (nginx's upstream
 * `server` defaults to 80); a bare number is a port on `defaultHost` (nginx's `listen 8080`).
 * Returns an error message instead of throwing so validation can report every problem.
 */
export function parseHostPort(text: string, defaultPort?: number, defaultHost = '0.0.0.0'): HostPort | string {
  if (typeof text !== 'string' || text.length === 0) return 'must be a non-empty "host:port"';
  if (/^\d+$/.test(text)) {
    const port = Number(text);
    return validPort(port) ? { host: defaultHost, port, family: isIP(defaultHost) as 0 | 4 | 6 } : 'port must be 1-65535';
  }
  let host: string;
  let portText: string | undefined;
  if (text.startsWith('[')) {
    const end = text.indexOf(']');
    if (end < 0) return 'unterminated "[" in IPv6 address';
    host = text.slice(1, end);
    const rest = text.slice(end + 1);
    if (rest.length > 0) {
      if (!rest.startsWith(':')) return 'expected ":port" after "]"';
      portText = rest.slice(1);
    }
    if (isIP(host) !== 6) return `"${host}" is not an IPv6 address`;
  } else {
    const colon = text.lastIndexOf(':');
    if (colon >= 0) {
      if (text.indexOf(':') !== colon) return 'IPv6 addresses must be written as "[addr]:port"';
      host = text.slice(0, colon);
      portText = text.slice(colon + 1);
    } else {
      host = text;
    }
    if (isIP(host) === 0 && !HOSTNAME.test(host)) return `"${host}" is not a valid IPv4 address or hostname`;
  }
  let port: number;
  if (portText === undefined) {
    if (defaultPort === undefined) return 'a port is required ("host:port")';
    port = defaultPort;
  } else {
    if (!/^\d{1,5}$/.test(portText)) return `"${portText}" is not a port number`;
    port = Number(portText);
    if (!validPort(port)) return 'port must be 1-65535';
  }
  return { host, port, family: isIP(host) as 0 | 4 | 6 };
}

function validPort(port: number): boolean {
  return Number.isInteger(port) && port >= 1 && port <= 65535;
}

/** Formats host and port the way nginx prints them (`[::1]:80` for IPv6). */
export function formatHostPort(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Every (specific, wildcard) pair of listen addresses on one port and address family: the kernel
 * cannot bind a wildcard (0.0.0.0, ::) and a specific address on the same port, so nginx's
 * configurations must use one address there. `report(specific, wildcard)` is called per pair.
 */
export function wildcardClashes<T extends { host: string; port: number }>(all: readonly T[], report: (specific: T, wildcard: T) => void): void {
  for (const w of all) {
    if (w.host !== '0.0.0.0' && w.host !== '::') continue;
    const family = w.host === '::' ? 6 : 4;
    for (const s of all) {
      if (s.port === w.port && s.host !== w.host && isIP(s.host) === family) report(s, w);
    }
  }
}
