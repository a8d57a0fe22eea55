/**
 * `sessionlb demo`: four loopback backends that say who they are and issue a
 * PHPSESSID like PHP's session_start(), and sessionlb in front of them with
 * weights 3:1:1:1, on the embedded default config (no memcached needed).
 */
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/model.js';
import { probeListen } from '../net/listen.js';

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

/**
 * `sessionlb demo [--port N]` (`base`: N, or null): checks that every port is free, starts the
 * four backends and has `serve` run sessionlb in front of them (the CLI serves: signals,
 * shutdown; `stopBackends` goes to it), then prints how to try it. A `base` that leaves no room
 * for six ports goes to `usage`; a port in use exits 1.
 */
export async function demoCommand(
  base: number | null,
  usage: (message: string) => never,
  serve: (config: Config, stopBackends: () => Promise<void>) => Promise<void>,
): Promise<void> {
  const ports = demoPorts(base);
  const all = [ports.balancer, ...ports.backends, ports.admin];
  if (all.some((p) => !Number.isInteger(p) || p < 1 || p > 65535)) usage('--port must leave room for six ports (N..N+5 up to 65535)');
  for (const port of all) {
    try {
      await probeListen('127.0.0.1', port);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      process.stderr.write(`sessionlb: demo: cannot listen on 127.0.0.1:${port}: ${e.code === 'EADDRINUSE' ? 'address already in use' : e.message}. `
        + `The demo binds ${all.join(', ')}; move them all with --port N (it then uses N to N+5).\n`);
      process.exit(1);
    }
  }
  const backends: http.Server[] = await Promise.all(ports.backends.map((port, i) => startDemoBackend(`backend-${i + 1}`, port)));
  const config = await loadConfig(demoConfig(ports.balancer, ports.admin, ports.backends), '<embedded demo config>');
  await serve(config, async () => {
    for (const b of backends) b.close();
  });
  const url = `http://127.0.0.1:${ports.balancer}/`;
  process.stdout.write(`
sessionlb demo: 4 backends on 127.0.0.1:${ports.backends.join(', ')} with weights ${DEMO_WEIGHTS.join(':')}
  balancer: ${url}
  status:   http://127.0.0.1:${ports.admin}/          (live status page; metrics at /metrics)

Try:
  for i in $(seq 6); do curl -s ${url}; done          # no cookie: rotates 3:1:1:1: 1 2 1 3 4 1 (smooth: no bursts)
  rm -f /tmp/sessionlb-jar; for i in $(seq 6); do curl -s -c /tmp/sessionlb-jar -b /tmp/sessionlb-jar ${url}; done
                                                       # with a cookie jar: the backend that issued PHPSESSID, every time
                                                       # (sticky "learn", memory store: bindings are local to this process)

Ctrl-C stops it.
`);
}
