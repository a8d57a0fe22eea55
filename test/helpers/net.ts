/** Test helpers: free loopback ports, real HTTP backends, a sessionlb in-process, simple requests. */
import http from 'node:http';
import net from 'node:net';
import { loadConfig } from '../../src/config/load.js';
import { SessionLB } from '../../src/runtime/sessionlb.js';
import { silentLog } from '../../src/observability/log.js';

/**
 * Test ports come from a block of their own per vitest worker process, below Linux's ephemeral
 * range (32768+): two test files running at once can then never be handed the same port (a port
 * that is merely free *now* could be taken by the other process before our server binds it, and
 * the test would talk to someone else's server), and no outgoing connection's local port lands on it.
 */
const BLOCK_SIZE = 2000;
const poolId = Number(process.env.VITEST_POOL_ID ?? process.env.VITEST_WORKER_ID ?? '1') || 1;
const blockStart = 20000 + ((poolId - 1) % 6) * BLOCK_SIZE;
let nextOffset = Math.floor(Math.random() * BLOCK_SIZE);

function bindable(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, host, () => s.close(() => resolve(true)));
  });
}

/** A free port on 127.0.0.1 from this process's own block, never the same one twice in this process. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let i = 0; i < BLOCK_SIZE; i++) {
    const port = blockStart + (nextOffset++ % BLOCK_SIZE);
    if (await bindable(port, host)) return port;
  }
  throw new Error(`no free port in ${blockStart}-${blockStart + BLOCK_SIZE - 1}`);
}

export interface Backend {
  name: string;
  port: number;
  address: string;
  server: http.Server;
  /** Requests this backend answered. */
  hits: number;
  close(): Promise<void>;
}

export type BackendHandler = (req: http.IncomingMessage, res: http.ServerResponse, backend: Backend) => void;

/** Default backend: answers 200 with its name, after reading the body. */
export const nameHandler: BackendHandler = (req, res, b) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'Content-Type': 'text/plain', 'X-Backend': b.name, 'Content-Length': Buffer.byteLength(b.name) });
    res.end(b.name);
  });
};

/** Starts a real HTTP backend on loopback. */
export async function startBackend(name: string, handler: BackendHandler = nameHandler, port?: number): Promise<Backend> {
  const p = port ?? await freePort();
  const backend: Backend = {
    name,
    port: p,
    address: `127.0.0.1:${p}`,
    server: undefined as unknown as http.Server,
    hits: 0,
    close: () => new Promise<void>((resolve) => {
      backend.server.close(() => resolve());
      backend.server.closeAllConnections();
    }),
  };
  backend.server = http.createServer((req, res) => {
    backend.hits++;
    handler(req, res, backend);
  });
  await new Promise<void>((resolve, reject) => {
    backend.server.once('error', reject);
    backend.server.listen(p, '127.0.0.1', () => resolve());
  });
  return backend;
}

export interface RunningLB {
  lb: SessionLB;
  port: number;
  url: string;
  adminPort: number;
  stop(): Promise<void>;
}

/**
 * Starts sessionlb in this process on a free port. `raw` is a config object without
 * `servers` (one default server proxying / to upstream "backend" is added) or a whole config.
 */
export async function startLB(raw: Record<string, unknown>, opts: { admin?: boolean } = {}): Promise<RunningLB> {
  const port = await freePort();
  const adminPort = await freePort();
  const config: Record<string, unknown> = {
    servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
    ...raw,
  };
  if (opts.admin !== false && config.admin === undefined) config.admin = { listen: `127.0.0.1:${adminPort}` };
  const lb = new SessionLB(await loadConfig(config, '<test>'), { log: silentLog() });
  await lb.start();
  return { lb, port, adminPort, url: `http://127.0.0.1:${port}`, stop: () => lb.stop(2000) };
}

export interface SimpleResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One request on a fresh connection (no keep-alive), body collected as text. */
export function request(url: string, options: http.RequestOptions & { body?: string | Buffer } = {}): Promise<SimpleResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { agent: false, ...options }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

/** Sends `count` GETs over a keep-alive agent with `concurrency` in flight; returns statuses and bodies. */
export async function load(url: string, count: number, concurrency = 8, headers: Record<string, string> = {}): Promise<SimpleResponse[]> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const out: SimpleResponse[] = new Array(count);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      out[i] = await request(url, { agent, headers }).catch((err: Error) => ({ status: 0, headers: {}, body: err.message }));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  agent.destroy();
  return out;
}

/** Counts equal strings. */
export function tally(values: Iterable<string>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const v of values) out[v] = (out[v] ?? 0) + 1;
  return out;
}

export interface DelayRelay {
  address: string;
  close(): Promise<void>;
}

/**
 * A TCP relay on loopback to `127.0.0.1:targetPort` that holds every chunk from the client
 * `delayMs` before passing it on (order kept): a slow network path to one server.
 */
export async function startDelayRelay(targetPort: number, delayMs: number): Promise<DelayRelay> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(client).add(upstream);
    client.on('data', (chunk) => { setTimeout(() => { if (!upstream.destroyed) upstream.write(chunk); }, delayMs); });
    upstream.pipe(client);
    const end = (): void => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream); };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    address: `127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}

export interface TcpBackend {
  name: string;
  port: number;
  address: string;
  /** Closes the server and every connection (once; later calls wait for the same). */
  kill(): Promise<void>;
}

/** A plain TCP backend on loopback that writes `name` and a newline to each connection, then echoes. */
export async function startTcpBackend(name: string): Promise<TcpBackend> {
  const port = await freePort();
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.write(`${name}\n`);
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  let closed: Promise<void> | null = null;
  const kill = (): Promise<void> => (closed ??= new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  }));
  return { name, port, address: `127.0.0.1:${port}`, kill };
}

