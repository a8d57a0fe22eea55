/**
 * Wires metrics, the access log and the status page to a running SessionLB: metric cells
 * for routes and peers (once per config), the per-request `onDone` hook, `GET /metrics`
 * and `GET /` on the admin listener.
 */
import type http from 'node:http';
import type { Config } from '../config/model.js';
import type { Upstream } from '../balancer/upstream.js';
import { AccessLog, type AccessLogConfig, type RequestRecord } from './access-log.js';
import { Metrics, type MetricsSource, type RouteMetrics } from './metrics.js';
import { STATUS_PAGE_HTML } from './status-page.js';

export interface ObservabilityOptions {
  /** Human-readable access log lines (pino-pretty). */
  pretty?: boolean;
  /**
   * Where the access log goes when the config has no `accessLog.path`: stdout (the CLI) or
   * nowhere (the default when embedding, e.g. tests, so they do not fill stdout).
   */
  accessLogToStdout?: boolean;
}

/** Where admin routes are registered (the admin server implements it). */
export interface RouteTable {
  route(key: string, handler: (req: http.IncomingMessage, res: http.ServerResponse) => void, options?: { public?: boolean }): void;
}

const STATUS_PAGE = Buffer.from(STATUS_PAGE_HTML);

export class Observability {
  readonly metrics: Metrics;
  accessLog: AccessLog | null = null;
  private readonly local = new Map<string, RouteMetrics>();

  constructor(source: MetricsSource, config: Config, private readonly options: ObservabilityOptions = {}) {
    this.metrics = new Metrics(source);
    this.accessLog = this.makeAccessLog(config);
  }

  /** Attaches metric cells to a new config's peers (call for every Upstream built). */
  attachPeers(up: Upstream): void {
    for (const peer of up.all()) peer.metrics = this.metrics.peer(up.name, peer);
  }

  /** Metric cells of a route (virtual server's first name, upstream). */
  route(serverName: string, up: Upstream): RouteMetrics {
    return this.metrics.route(serverName, up);
  }

  /** ForwardHooks.onDone: one proxied request is over (finished, failed, or the client left). */
  readonly onDone = (req: http.IncomingMessage, _res: http.ServerResponse, record: RequestRecord): void => {
    const seconds = (performance.now() - record.startedAt) / 1000;
    record.route.metrics?.done(record.status, seconds);
    this.accessLog?.write(req, record.status, record.bodyBytes, seconds, record.route.upstream.name, record);
  };

  /**
   * A request answered by sessionlb itself without an upstream (no matching location: 404,
   * unparsable target: 400). Counted with `upstream=""` and logged.
   */
  answeredLocally(req: http.IncomingMessage, serverName: string, status: number, bodyBytes: number, startedAt: number): void {
    let m = this.local.get(serverName);
    if (m === undefined) {
      m = this.metrics.localRoute(serverName);
      this.local.set(serverName, m);
    }
    const seconds = (performance.now() - startedAt) / 1000;
    m.done(status, seconds);
    this.accessLog?.write(req, status, bodyBytes, seconds, '', null);
  }

  /**
   * `GET /metrics` and `GET /` (status page) on the admin listener. The admin server applies
   * `allow` to both and the token to /metrics; the page needs none (it holds no data: its
   * requests to /status send the token).
   */
  registerAdmin(admin: RouteTable): void {
    admin.route('GET /metrics', (_req, res) => {
      this.metrics.text().then((text) => {
        res.writeHead(200, {
          'Content-Type': this.metrics.registry.contentType,
          'Content-Length': Buffer.byteLength(text),
          'Cache-Control': 'no-store',
        });
        res.end(text);
      }, (err: unknown) => {
        res.writeHead(500, { 'Content-Type': 'text/plain' });
        res.end(`metrics collection failed: ${(err as Error).message}\n`);
      });
    });
    admin.route('GET /', (_req, res) => {
      res.writeHead(200, {
        'Content-Type': 'text/html; charset=utf-8',
        'Content-Length': STATUS_PAGE.length,
        'Cache-Control': 'no-store',
        // Everything is inline; nothing may be loaded from elsewhere.
        'Content-Security-Policy': "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
        'X-Content-Type-Options': 'nosniff',
      });
      res.end(STATUS_PAGE);
    }, { public: true }); // the page holds no data; its /status calls carry the token
  }

  /** A reload: a changed `accessLog` setting opens the new log, then closes the old one. */
  reconfigure(config: Config): void {
    const next = config.accessLog === false ? null : config.accessLog;
    const current = this.accessLog?.config ?? null;
    if (sameLog(current, next)) return;
    const old = this.accessLog;
    this.accessLog = this.makeAccessLog(config);
    void old?.close();
  }

  /** Reopens the access log file after rotation (SIGUSR1, like `nginx -s reopen`). */
  reopenAccessLog(): boolean {
    return this.accessLog?.reopen() ?? false;
  }

  /** Flushes and closes the access log (shutdown). */
  async close(): Promise<void> {
    const log = this.accessLog;
    this.accessLog = null;
    await log?.close();
  }

  private makeAccessLog(config: Config): AccessLog | null {
    if (config.accessLog === false) return null;
    if (config.accessLog.path === null && !this.options.accessLogToStdout) return null;
    return new AccessLog(config.accessLog, { pretty: this.options.pretty ?? false });
  }
}

function sameLog(a: AccessLogConfig | null, b: AccessLogConfig | null): boolean {
  if (a === null || b === null) return a === b;
  return a.path === b.path;
}
