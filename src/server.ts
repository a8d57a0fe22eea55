/**
 * Wires a config to running parts: upstream groups with their connection pools,
 * one HTTP listener per listen address routing to virtual servers and locations,
 * and the admin listener. `reload` swaps the routing tables atomically; requests
 * in flight keep the objects they started with.
 */
import http from 'node:http';
import type { Duplex } from 'node:stream';
import type { Config, UpstreamConfig } from './config/load.js';
import { Upstream } from './balancer/upstream.js';
import { PeerPool } from './proxy/transport.js';
import { ForwardRequest, type ForwardHooks, type Route } from './proxy/forward.js';
import { UpgradeRequest } from './proxy/upgrade.js';
import { ListenerRouter, buildVirtualServer, matchLocation, pathForMatching } from './proxy/router.js';
import { sendError } from './proxy/errors.js';
import { AdminServer } from './admin/server.js';
import type { EventLog } from './observability/log.js';

class Listener {
  readonly server: http.Server;
  router: ListenerRouter<Route>;

  constructor(readonly key: string, readonly host: string, readonly port: number, router: ListenerRouter<Route>, private readonly lb: SessionLB) {
    this.router = router;
    this.server = http.createServer({
      requestTimeout: 0, // large uploads are bounded by the idle timeouts below, not a total
      headersTimeout: 60_000, // nginx client_header_timeout
      keepAliveTimeout: lb.config.keepaliveTimeoutMs,
      // Upstream connections already carry the request; keep the client side's Nagle off too.
      noDelay: true,
    }, this.onRequest);
    this.server.on('upgrade', this.onUpgrade);
    this.server.on('clientError', this.onClientError);
  }

  private readonly onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    if (this.lb.stopping) res.shouldKeepAlive = false;
    const vs = this.router.serverFor(req.headers.host);
    const path = pathForMatching(req.url ?? '/');
    if (path === null) {
      sendError(res, 400, true);
      return;
    }
    const route = matchLocation(vs, path);
    if (route === null) {
      req.resume();
      sendError(res, 404);
      return;
    }
    new ForwardRequest(req, res, route, this.lb.hooks).start();
  };

  private readonly onUpgrade = (req: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
    const vs = this.router.serverFor(req.headers.host);
    const path = pathForMatching(req.url ?? '/');
    const route = path === null ? null : matchLocation(vs, path);
    if (route === null) {
      socket.end(`HTTP/1.1 ${path === null ? '400 Bad Request' : '404 Not Found'}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
      return;
    }
    new UpgradeRequest(req, socket, head, route, this.lb.log).start();
  };

  private readonly onClientError = (err: NodeJS.ErrnoException, socket: Duplex): void => {
    // Malformed request (llhttp rejected it) or a broken client connection: answer 400 when we still can.
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large'
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
    socket.end(`HTTP/1.1 ${status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
  };

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.port, this.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }
}

export interface SessionLBOptions {
  log: EventLog;
}

export class SessionLB {
  config: Config;
  readonly log: EventLog;
  readonly hooks: ForwardHooks;
  upstreams = new Map<string, Upstream>();
  stopping = false;
  private readonly listeners = new Map<string, Listener>();
  private readonly pools = new Map<string, PeerPool>();
  private admin: AdminServer | null = null;

  constructor(config: Config, options: SessionLBOptions) {
    this.config = config;
    this.log = options.log;
    this.hooks = { log: options.log };
    this.upstreams = this.buildUpstreams(config, new Map());
  }

  /** Binds every listener and the admin listener. */
  async start(): Promise<void> {
    const routers = this.buildRouters(this.config);
    for (const [key, { host, port, router }] of routers) {
      const listener = new Listener(key, host, port, router, this);
      await listener.listen();
      this.listeners.set(key, listener);
    }
    if (this.config.admin) {
      this.admin = new AdminServer(this.config.admin, this.log);
      await this.admin.listen();
    }
    this.log.info({ listen: [...this.listeners.keys()], admin: this.config.admin?.listen.key ?? null }, 'sessionlb started');
  }

  /** The admin listener, for later features to add routes (metrics, status, runtime API). */
  get adminServer(): AdminServer | null {
    return this.admin;
  }

  /** Listening addresses, `host:port` -> bound port (useful when tests ask for port 0). */
  addresses(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [key, l] of this.listeners) out.set(key, (l.server.address() as { port: number }).port);
    return out;
  }

  /**
   * Switches to a new config: servers that remain keep their state, new listeners are
   * bound before removed ones close, idle connections of removed servers are closed.
   */
  async reload(config: Config): Promise<void> {
    const upstreams = this.buildUpstreams(config, this.upstreams);
    const previousPools = new Set(this.pools.values());
    const routers = this.buildRouters(config, upstreams);
    const fresh: Listener[] = [];
    try {
      for (const [key, { host, port, router }] of routers) {
        if (this.listeners.has(key)) continue;
        const listener = new Listener(key, host, port, router, this);
        await listener.listen();
        fresh.push(listener);
      }
    } catch (err) {
      for (const l of fresh) l.server.close();
      throw err;
    }
    // The switch: everything below is synchronous.
    this.config = config;
    this.upstreams = upstreams;
    for (const l of fresh) this.listeners.set(l.key, l);
    const removed: Listener[] = [];
    for (const [key, l] of this.listeners) {
      const r = routers.get(key);
      if (r === undefined) removed.push(l);
      else l.router = r.router;
    }
    for (const l of removed) {
      this.listeners.delete(l.key);
      l.server.close();
      l.server.closeIdleConnections();
    }
    const used = new Set<PeerPool>();
    for (const up of upstreams.values()) for (const p of up.all()) used.add(p.pool);
    for (const pool of previousPools) if (!used.has(pool)) pool.closeIdle();
    for (const [key, pool] of this.pools) if (!used.has(pool)) this.pools.delete(key);
    if (this.admin && config.admin) this.admin.update(config.admin);
  }

  /** Stops accepting, lets requests in flight finish (up to `shutdownTimeoutMs`), then closes everything. */
  async stop(timeoutMs = this.config.shutdownTimeoutMs): Promise<void> {
    this.stopping = true;
    const closed = [...this.listeners.values()].map((l) => new Promise<void>((resolve) => {
      l.server.close(() => resolve());
      l.server.closeIdleConnections();
    }));
    // Keep-alive connections become idle when their last response ends; close them as they do.
    const sweeper = setInterval(() => {
      for (const l of this.listeners.values()) l.server.closeIdleConnections();
    }, 50);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(true), timeoutMs); });
    const expired = await Promise.race([Promise.all(closed).then(() => false), timedOut]);
    clearInterval(sweeper);
    clearTimeout(timer);
    if (expired) {
      this.log.warn({ timeoutMs }, 'shutdown timeout reached; closing remaining connections');
      for (const l of this.listeners.values()) l.server.closeAllConnections();
    }
    for (const pool of this.pools.values()) pool.closeIdle();
    if (this.admin) await this.admin.close();
    this.log.info('sessionlb stopped');
  }

  private buildUpstreams(config: Config, previous: Map<string, Upstream>): Map<string, Upstream> {
    const out = new Map<string, Upstream>();
    for (const [name, upConfig] of config.upstreams) {
      const up = new Upstream(upConfig, previous.get(name));
      for (const peer of up.all()) peer.pool = this.poolFor(upConfig, peer.host, peer.port);
      out.set(name, up);
    }
    return out;
  }

  private poolFor(up: UpstreamConfig, host: string, port: number): PeerPool {
    const options = {
      keepalive: up.keepalive,
      keepaliveTimeoutMs: up.keepaliveTimeoutMs,
      connectTimeoutMs: up.timeouts.connectMs,
      sendTimeoutMs: up.timeouts.sendMs,
      readTimeoutMs: up.timeouts.readMs,
    };
    const key = `${up.name}|${host}|${port}|${JSON.stringify(options)}`;
    let pool = this.pools.get(key);
    if (pool === undefined) {
      pool = new PeerPool(host, port, options);
      this.pools.set(key, pool);
    }
    return pool;
  }

  private buildRouters(config: Config, upstreams = this.upstreams): Map<string, { host: string; port: number; router: ListenerRouter<Route> }> {
    const out = new Map<string, { host: string; port: number; router: ListenerRouter<Route> }>();
    for (const vsConfig of config.servers) {
      const vs = buildVirtualServer<Route>(vsConfig, (location) => ({
        location,
        upstream: upstreams.get(location.upstream)!,
        scheme: 'http',
      }));
      for (const l of vsConfig.listen) {
        let entry = out.get(l.key);
        if (entry === undefined) {
          entry = { host: l.host, port: l.port, router: new ListenerRouter<Route>() };
          out.set(l.key, entry);
        }
        entry.router.add(vsConfig, vs);
      }
    }
    return out;
  }
}
