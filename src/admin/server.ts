/**
 * The admin listener: `/healthz` now, `/metrics` and `/status` as they arrive.
 * Clients outside `admin.allow` get 403, like nginx's `allow`/`deny`.
 */
import http from 'node:http';
import type { AdminConfig } from '../config/load.js';
import type { EventLog } from '../observability/log.js';
import { clientAddress } from '../proxy/client-address.js';

export type AdminHandler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

export function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, null, 2) + '\n';
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-store' });
  res.end(text);
}

export class AdminServer {
  readonly server: http.Server;
  private config: AdminConfig;
  private readonly routes = new Map<string, AdminHandler>();

  constructor(config: AdminConfig, private readonly log: EventLog) {
    this.config = config;
    this.server = http.createServer(this.handle);
    this.route('GET /healthz', (_req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': 3 });
      res.end('ok\n');
    });
  }

  /** Registers a handler for "METHOD /path" (exact path). */
  route(key: string, handler: AdminHandler): void {
    this.routes.set(key, handler);
  }

  update(config: AdminConfig): void {
    this.config = config;
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.config.listen.port, this.config.listen.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private readonly handle = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const client = clientAddress(req.socket.remoteAddress);
    if (!this.config.allow.check(client.address, client.family)) {
      this.log.warn({ client: client.address, url: req.url }, 'admin access denied');
      sendJson(res, 403, { error: 'forbidden' });
      return;
    }
    const path = (req.url ?? '/').split('?')[0]!;
    const handler = this.routes.get(`${req.method} ${path}`);
    if (handler === undefined) {
      const known = [...this.routes.keys()].some((k) => k.endsWith(` ${path}`));
      sendJson(res, known ? 405 : 404, { error: known ? 'method not allowed' : 'not found' });
      return;
    }
    try {
      handler(req, res);
    } catch (err) {
      this.log.error({ err: (err as Error).message, url: req.url }, 'admin handler failed');
      if (!res.headersSent) sendJson(res, 500, { error: 'internal error' });
      else res.destroy();
    }
  };
}
