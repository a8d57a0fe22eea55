/**
 * The listeners of `streams` (TCP, nginx `stream {}`): one net.Server per listen address,
 * bound at start, added and removed on reload like the HTTP listeners (sessions on a removed
 * listener run on until they end), closed gracefully at stop. With `workers` > 1 every
 * worker binds them (node:cluster shares the socket) and the primary binds none.
 */
import net from 'node:net';
import type { Config } from '../../config/model.js';
import type { Upstream } from '../../balancer/upstream.js';
import type { EventLog } from '../../observability/log.js';
import type { AccessLog } from '../../observability/access-log.js';
import { StreamMetrics } from '../../observability/stream-metrics.js';
import type { Registry } from 'prom-client';
import { TcpSession, retryRules, type StreamRoute, type StreamSessionOwner } from './tcp-session.js';
import { expiresBefore, listenOn } from '../../net/listen.js';
import { isLocalResourceError } from '../../net/errors.js';
import { acceptProxyHeader, type ProxyProtocolErrorReason } from '../../net/accept-proxy.js';
import { cidrBlockList } from '../../net/client-address.js';

/**
 * How long a proxy_protocol stream listener waits for the PROXY header: nginx's stream
 * `proxy_protocol_timeout` default (HTTP addresses use clientHeaderTimeout).
 */
export const STREAM_PROXY_HEADER_TIMEOUT_MS = 30_000;

export class StreamListener implements StreamSessionOwner {
  readonly server: net.Server;
  readonly sessions = new Set<TcpSession>();

  constructor(readonly key: string, readonly host: string, readonly port: number, public route: StreamRoute, private readonly proxies: StreamProxies) {
    this.server = net.createServer({ allowHalfOpen: true, noDelay: true }, this.onConnection);
  }

  get log(): EventLog {
    return this.proxies.log;
  }

  accessLog(): AccessLog | null {
    return this.proxies.accessLog();
  }

  private readonly onConnection = (socket: net.Socket): void => {
    const from = this.route.proxyFrom;
    if (from === null) {
      this.startSession(socket);
      return;
    }
    acceptProxyHeader(socket, { from, timeoutMs: STREAM_PROXY_HEADER_TIMEOUT_MS }, (failure) => {
      if (failure === null) this.startSession(socket);
      else this.proxies.proxyProtocolError(failure);
    });
  };

  private startSession(socket: net.Socket): void {
    const session = new TcpSession(socket, this.route, this);
    this.sessions.add(session);
    session.start();
  }

  private readonly onServerError = (err: NodeJS.ErrnoException): void => {
    // A failed accept (EMFILE, ...): this host's limit, counted like the HTTP listeners' (libuv closes the pending connection).
    if (isLocalResourceError(err.code)) this.proxies.localError(err.code!, 'accept');
    this.proxies.log.error({ listen: this.key, err: err.message }, 'stream listener error');
  };

  sessionDone(session: TcpSession): void {
    this.sessions.delete(session);
  }

  localError(code: string, operation: string): void {
    this.proxies.localError(code, operation);
  }

  async listen(): Promise<void> {
    await listenOn(this.server, this.host, this.port);
    // A failed accept (EMFILE) is reported on the server; it must not crash the process.
    this.server.on('error', this.onServerError);
  }

  /** Stops accepting; resolves when every session on it is over. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.server.listening) {
        if (this.sessions.size === 0) resolve();
        else this.server.once('close', () => resolve());
        return;
      }
      this.server.close(() => resolve());
    });
  }
}

/** Listeners bound for a config not yet switched to (see SessionLB.reload). */
export interface StreamPlan {
  routes: Map<string, { host: string; port: number; route: StreamRoute }>;
  fresh: StreamListener[];
}

export class StreamProxies {
  private readonly listeners = new Map<string, StreamListener>();
  /** Listeners a reload removed: closed, waiting for their sessions to end. */
  private readonly draining = new Set<StreamListener>();
  readonly metrics: StreamMetrics;
  /** A connection closed for its PROXY header (sessionlb_proxy_protocol_errors_total); set by the runtime. */
  proxyProtocolError: (reason: ProxyProtocolErrorReason) => void = () => { /* not counted */ };

  constructor(
    readonly log: EventLog,
    readonly accessLog: () => AccessLog | null,
    registry: Registry,
    /** False in a process that binds no listener (the cluster primary: its workers do). */
    private readonly bind: boolean,
    /** This host ran out of a resource (EMFILE, ...) in `operation` (sessionlb_local_errors_total). */
    readonly localError: (code: string, operation: string) => void,
  ) {
    this.metrics = new StreamMetrics(registry, () => this.activeByListen());
  }

  /** Routes of a config: listen key -> where its connections go. */
  private routes(config: Config, upstreams: Map<string, Upstream>): Map<string, { host: string; port: number; route: StreamRoute }> {
    const out = new Map<string, { host: string; port: number; route: StreamRoute }>();
    for (const stream of config.streams) {
      const upstream = upstreams.get(stream.upstream)!;
      const maxTries = upstream.triesFor(stream.nextUpstreamTries);
      const retry = retryRules(stream);
      for (const l of stream.listen) {
        out.set(l.key, {
          host: l.host,
          port: l.port,
          route: {
            stream, listen: l.key, upstream, maxTries, retry, metrics: this.metrics.route(l.key, upstream.name),
            proxyFrom: l.proxyProtocol ? cidrBlockList(stream.proxyProtocolFrom) : null,
          },
        });
      }
    }
    return out;
  }

  /** Binds every stream listener of the config (start). */
  async start(config: Config, upstreams: Map<string, Upstream>): Promise<void> {
    const plan = await this.prepare(config, upstreams);
    this.commit(plan);
  }

  /** Binds the listeners the config adds; nothing changes for running ones until commit(). Throws (having closed what it bound) when one cannot be bound. */
  async prepare(config: Config, upstreams: Map<string, Upstream>): Promise<StreamPlan> {
    const routes = this.routes(config, upstreams);
    const fresh: StreamListener[] = [];
    if (!this.bind) return { routes, fresh };
    try {
      for (const [key, { host, port, route }] of routes) {
        if (this.listeners.has(key)) continue;
        const l = new StreamListener(key, host, port, route, this);
        await l.listen();
        fresh.push(l);
      }
    } catch (err) {
      this.abort({ routes, fresh });
      throw err;
    }
    return { routes, fresh };
  }

  /** Undoes prepare() (a later step of the reload failed). */
  abort(plan: StreamPlan): void {
    for (const l of plan.fresh) l.server.close();
  }

  /** Switches to the plan's routes (synchronous): new listeners in, removed ones closed (their sessions go on). */
  commit(plan: StreamPlan): void {
    for (const l of plan.fresh) this.listeners.set(l.key, l);
    for (const [key, l] of this.listeners) {
      const r = plan.routes.get(key);
      if (r !== undefined) {
        l.route = r.route;
        continue;
      }
      this.listeners.delete(key);
      this.draining.add(l);
      void l.close().then(() => this.draining.delete(l));
    }
  }

  /** Listening addresses, `host:port` -> bound port. */
  addresses(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [key, l] of this.listeners) out.set(key, (l.server.address() as net.AddressInfo).port);
    return out;
  }

  /** Open sessions on every listener, removed ones included. */
  sessionCount(): number {
    let n = 0;
    for (const l of this.listeners.values()) n += l.sessions.size;
    for (const l of this.draining) n += l.sessions.size;
    return n;
  }

  private *activeByListen(): Iterable<[string, number]> {
    const counts = new Map<string, number>();
    for (const l of [...this.listeners.values(), ...this.draining]) counts.set(l.key, (counts.get(l.key) ?? 0) + l.sessions.size);
    yield* counts;
  }

  /** Stops accepting, lets sessions run up to `timeoutMs`, then closes the rest. */
  async stop(timeoutMs: number): Promise<void> {
    const all = [...this.listeners.values(), ...this.draining];
    this.listeners.clear();
    if (all.length === 0) return;
    const closed = Promise.all(all.map((l) => l.close()));
    const expired = await expiresBefore(closed, timeoutMs);
    if (expired) {
      const n = all.reduce((a, l) => a + l.sessions.size, 0);
      this.log.warn({ timeoutMs, sessions: n }, 'shutdown timeout reached; closing remaining stream sessions');
      for (const l of all) for (const s of l.sessions) s.destroy();
      await closed;
    }
    this.draining.clear();
  }
}
