/**
 * The admin listener: `/healthz`, `/status`, the runtime API, `/metrics` and others as they arrive.
 * Every route passes one gate (`handle`): clients outside `admin.allow` get 403, like
 * nginx's `allow`/`deny`; when a token is configured (`admin.token` or env
 * SESSIONLB_ADMIN_TOKEN) requests without `Authorization: Bearer TOKEN` get 401,
 * except routes registered as public (`/healthz`, for liveness probes).
 */
import http from 'node:http';
import { createHash, timingSafeEqual } from 'node:crypto';
import type { AdminConfig } from '../config/model.js';
import type { EventLog } from '../observability/log.js';
import { clientAddress } from '../net/client-address.js';

/** `params` holds the decoded `{name}` segments of a pattern route ("PUT /upstreams/{name}"). */
export type AdminHandler = (req: http.IncomingMessage, res: http.ServerResponse, params: Record<string, string>) => void;

export interface RouteOptions {
  /** No token needed (the allow-list still applies). */
  public?: boolean;
}

interface PatternRoute {
  method: string;
  segments: string[];
  handler: AdminHandler;
  public: boolean;
}

const NO_PARAMS: Record<string, string> = Object.freeze({}) as Record<string, string>;

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/** Constant-time check of an `Authorization: Bearer TOKEN` header. */
export function bearerMatches(header: string | undefined, token: string): boolean {
  if (header === undefined) return false;
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  if (!m) return false;
  return timingSafeEqual(digest(m[1]!), digest(token));
}

export function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, null, 2) + '\n';
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-store' });
  res.end(text);
}

export class AdminServer {
  readonly server: http.Server;
  private config: AdminConfig;
  private readonly routes = new Map<string, AdminHandler>();
  private readonly publicRoutes = new Set<string>();
  private readonly patterns: PatternRoute[] = [];

  constructor(config: AdminConfig, private readonly log: EventLog) {
    this.config = config;
    this.server = http.createServer(this.handle);
    this.route('GET /healthz', (_req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': 3 });
      res.end('ok\n');
    }, { public: true });
  }

  /**
   * Registers a handler for "METHOD /path" (exact path), or for a pattern whose
   * `{name}` segments match one URL-decoded path segment each ("PUT /upstreams/{name}/servers/{address}").
   */
  route(key: string, handler: AdminHandler, options: RouteOptions = {}): void {
    if (key.includes('{')) {
      const [method, path] = key.split(' ') as [string, string];
      this.patterns.push({ method, segments: path.split('/'), handler, public: options.public ?? false });
      return;
    }
    this.routes.set(key, handler);
    if (options.public) this.publicRoutes.add(key);
  }

  /** Finds the handler for a method and path: exact routes first, then patterns. */
  private match(method: string, path: string): { handler: AdminHandler; params: Record<string, string>; public: boolean } | 'method' | null {
    const key = `${method} ${path}`;
    const exact = this.routes.get(key);
    if (exact !== undefined) return { handler: exact, params: NO_PARAMS, public: this.publicRoutes.has(key) };
    const parts = path.split('/');
    let otherMethod = false;
    for (const p of this.patterns) {
      if (p.segments.length !== parts.length) continue;
      const params: Record<string, string> = {};
      let ok = true;
      for (let i = 0; i < parts.length && ok; i++) {
        const seg = p.segments[i]!;
        if (seg.startsWith('{') && seg.endsWith('}')) {
          let value: string;
          try {
            value = decodeURIComponent(parts[i]!);
          } catch {
            ok = false;
            break;
          }
          if (value === '') ok = false;
          else params[seg.slice(1, -1)] = value;
        } else if (seg !== parts[i]) {
          ok = false;
        }
      }
      if (!ok) continue;
      if (p.method !== method) {
        otherMethod = true;
        continue;
      }
      return { handler: p.handler, params, public: p.public };
    }
    if (otherMethod || [...this.routes.keys()].some((k) => k.endsWith(` ${path}`))) return 'method';
    return null;
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
    const found = this.match(req.method ?? 'GET', path);
    const token = this.config.token;
    if (token !== null && (found === null || found === 'method' || !found.public)
      && !bearerMatches(req.headers.authorization, token)) {
      this.log.warn({ client: client.address, url: req.url }, 'admin request without a valid token');
      res.setHeader('WWW-Authenticate', 'Bearer realm="sessionlb"');
      sendJson(res, 401, { error: 'unauthorized: send "Authorization: Bearer TOKEN" (admin.token)' });
      return;
    }
    if (found === null || found === 'method') {
      sendJson(res, found === 'method' ? 405 : 404, { error: found === 'method' ? 'method not allowed' : 'not found' });
      return;
    }
    try {
      found.handler(req, res, found.params);
    } catch (err) {
      this.log.error({ err: (err as Error).message, url: req.url }, 'admin handler failed');
      if (!res.headersSent) sendJson(res, 500, { error: 'internal error' });
      else res.destroy();
    }
  };
}
