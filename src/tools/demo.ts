/**
 * `sessionlb demo`: four loopback backends that say who they are and issue a
 * PHPSESSID like PHP's session_start(), and sessionlb in front of them with
 * weights 3:1:1:1, on the embedded default config (no memcached needed).
 */
import http from 'node:http';
import { randomBytes } from 'node:crypto';

export const DEMO_BACKEND_PORTS = [9001, 9002, 9003, 9004];
export const DEMO_WEIGHTS = [3, 1, 1, 1];

/** Every port the demo binds: the default layout, or (`--port N`) N for the balancer, N+1..N+4 for the backends, N+5 for the status page. */
export interface DemoPorts {
  balancer: number;
  backends: number[];
  admin: number;
}

export function demoPorts(base: number | null): DemoPorts {
  if (base === null) return { balancer: 8080, backends: DEMO_BACKEND_PORTS, admin: 9100 };
  return { balancer: base, backends: DEMO_BACKEND_PORTS.map((_, i) => base + 1 + i), admin: base + 1 + DEMO_BACKEND_PORTS.length };
}

/** The embedded default: what config/default.json also holds. */
export function demoConfig(port = 8080, adminPort = 9100, backendPorts = DEMO_BACKEND_PORTS): Record<string, unknown> {
  return {
    servers: [{ listen: [`127.0.0.1:${port}`], serverName: ['localhost'], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
    upstreams: {
      backend: {
        balance: 'round_robin',
        // Session affinity: the backend that issued a PHPSESSID gets every request of that session.
        sticky: { mode: 'learn', cookie: 'PHPSESSID' },
        servers: backendPorts.map((p, i) => ({ address: `127.0.0.1:${p}`, weight: DEMO_WEIGHTS[i] ?? 1 })),
        keepalive: 32,
      },
    },
    admin: { listen: `127.0.0.1:${adminPort}`, allow: ['127.0.0.1/32', '::1/128'] },
  };
}

/** A PHP-like session id: 26 characters of PHP's default alphabet (session.sid_bits_per_character=5). */
export function phpSessionId(): string {
  const alphabet = '0123456789abcdefghijklmnopqrstuv';
  const bytes = randomBytes(26);
  let id = '';
  for (const b of bytes) id += alphabet[b & 31];
  return id;
}

/** Starts one demo backend; resolves with its server once listening. */
export function startDemoBackend(name: string, port: number, host = '127.0.0.1'): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const cookie = req.headers.cookie ?? '';
    const match = /(?:^|;\s*)PHPSESSID=([^;]+)/.exec(cookie);
    const headers: Record<string, string | string[]> = { 'Content-Type': 'text/plain', 'X-Backend': name };
    let session = match?.[1];
    if (session === undefined) {
      session = phpSessionId();
      headers['Set-Cookie'] = `PHPSESSID=${session}; path=/; HttpOnly`;
    }
    req.resume();
    const body = `${name} (session ${session})\n`;
    headers['Content-Length'] = String(Buffer.byteLength(body));
    res.writeHead(200, headers);
    res.end(body);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}
