/**
 * The listeners of `streams` (TCP, nginx `stream {}`): one net.Server per listen address,
 * bound at start, added and removed on reload like the HTTP listeners (sessions on a removed
 * listener run on until they end), closed gracefully at stop. With `workers` > 1 every
 * worker binds them (node:cluster shares the socket) and the primary binds none.
 */
import net, { type BlockList } from 'node:net';
import type { Config } from '../../config/model.js';
import type { Upstream } from '../../balancer/upstream.js';
import type { Peer } from '../../balancer/peer.js';
import type { Affinity } from '../../sessions/affinity.js';
import type { EventLog } from '../../observability/log.js';
import type { AccessLog } from '../../observability/access-log.js';
import { StreamMetrics } from '../../observability/stream-metrics.js';
import type { Registry } from 'prom-client';
import { TcpSession, prereadFields, retryRules, type StreamRoute, type StreamSessionOwner } from './tcp-session.js';
import { StreamPreread } from './preread.js';
import { readClientHello, type ClientHello, type HelloResult } from '../../tls/client-hello.js';
import { cidrBlockList, clientAddressString, socketClientAddress, socketClientPort } from '../../net/client-address.js';
import { expiresBefore, listenOn } from '../../net/listen.js';
import { isLocalResourceError } from '../../net/errors.js';
import { acceptProxyHeader, type ProxyProtocolErrorReason } from '../../net/accept-proxy.js';

/**
 * How long a proxy_protocol stream listener waits for the PROXY header: nginx's stream
 * `proxy_protocol_timeout` default (HTTP addresses use clientHeaderTimeout).
 */
export const STREAM_PROXY_HEADER_TIMEOUT_MS = 30_000;

const NO_HELLO: ClientHello = { serverName: undefined, alpn: undefined };
/** Errors after a rejected connection is destroyed are of no interest. */
function ignoreError(): void { /* closing */ }

/** Where a listener's connections go: one route, or the one a ClientHello chooses (a stream's `route`). */
export type ListenRoute = StreamRoute | StreamPreread;

/** The servers of `upstream` with `sendProxy` (HAProxy send-proxy in TCP mode), resolved once per config. */
function sendProxyOf(upstream: Upstream): ReadonlyMap<Peer, 'v1' | 'v2'> {
  const out = new Map<Peer, 'v1' | 'v2'>();
  for (const server of upstream.config.servers) {
    if (server.sendProxy === null) continue;
    for (const peer of upstream.all()) if (peer.host === server.host && peer.port === server.port) out.set(peer, server.sendProxy);
  }
  return out;
}

/** One stream listen address of a config: where its connections go and who may send it a PROXY header. */
interface ListenEntry {
  host: string;
  port: number;
  route: ListenRoute;
  /** A `proxy_protocol` address: who may send the PROXY header (`proxyProtocolFrom`); null for none. */
  proxyFrom: BlockList | null;
}

export class StreamListener implements StreamSessionOwner {
  readonly server: net.Server;
  readonly sessions = new Set<TcpSession>();
  /** Connections whose ClientHello is being read (a stream's `route`): no session yet. */
  readonly prereading = new Set<net.Socket>();

  constructor(readonly key: string, readonly host: string, readonly port: number, public route: ListenRoute, public proxyFrom: BlockList | null, private readonly proxies: StreamProxies) {
    this.server = net.createServer({ allowHalfOpen: true, noDelay: true }, this.onConnection);
  }

  get log(): EventLog {
    return this.proxies.log;
  }

  accessLog(): AccessLog | null {
    return this.proxies.accessLog();
  }

  private readonly onConnection = (socket: net.Socket): void => {
    const from = this.proxyFrom;
    if (from === null) {
      this.routeConnection(socket);
      return;
    }
    acceptProxyHeader(socket, { from, timeoutMs: STREAM_PROXY_HEADER_TIMEOUT_MS }, (failure) => {
      if (failure === null) this.routeConnection(socket);
      else this.proxies.proxyProtocolError(failure);
    });
  };

  /** A connection (its PROXY header read, on a proxy_protocol address): to its route's upstream, or first its ClientHello read (`route`). */
  private routeConnection(socket: net.Socket): void {
    const route = this.route;
    if (route instanceof StreamPreread) {
      // One closure per routed connection: its socket, rules and accept time until the hello is in.
      const acceptedAt = performance.now();
      this.prereading.add(socket);
      readClientHello(socket, route.options, (result, bytes) => this.prereadDone(socket, route, result, bytes, acceptedAt));
      return;
    }
    const session = new TcpSession(socket, route, this);
    this.sessions.add(session);
    session.start();
  }

  /** The ClientHello was read (or reading failed): the session goes on to the chosen upstream with the bytes put back, or the connection is closed. */
  private prereadDone(socket: net.Socket, preread: StreamPreread, result: HelloResult, bytes: Buffer, acceptedAt: number): void {
    this.prereading.delete(socket);
    const hello = result.ok ? result.hello : null;
    const route = preread.choose(result);
    if (route === null || socket.destroyed) {
      this.rejected(socket, hello, bytes.length, acceptedAt);
      return;
    }
    if (bytes.length > 0) socket.unshift(bytes);
    const session = new TcpSession(socket, route, this);
    session.afterPreread(hello, acceptedAt);
    this.sessions.add(session);
    session.start();
  }

  /**
   * A connection closed before any server was tried (see preread.ts; counted there): one access
   * log line with status 400, nginx's for a failed preread, and no event log line (a scanner
   * would fill it; sessionlb_stream_preread_total counts them).
   */
  private rejected(socket: net.Socket, hello: ClientHello | null, received: number, acceptedAt: number): void {
    const log = this.accessLog();
    if (log !== null) {
      log.writeStream({
        remote_addr: socketClientAddress(socket),
        remote_port: socketClientPort(socket),
        server_addr: clientAddressString(socket.localAddress),
        server_port: socket.localPort ?? 0,
        protocol: 'TCP',
        status: 400,
        bytes_sent: 0,
        bytes_received: received,
        session_time: Math.round(performance.now() - acceptedAt) / 1000,
        upstream_addr: '',
        upstream_bytes_sent: 0,
        upstream_bytes_received: 0,
        upstream_connect_time: '',
        upstream_name: '',
        sticky: 'none',
        ...prereadFields(hello ?? NO_HELLO),
      });
    }
    socket.on('error', ignoreError);
    socket.destroy();
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
        if (this.sessions.size === 0 && this.prereading.size === 0) resolve();
        else this.server.once('close', () => resolve());
        return;
      }
      this.server.close(() => resolve());
    });
  }
}

/** Listeners bound for a config not yet switched to (see SessionLB.reload). */
export interface StreamPlan {
  routes: Map<string, ListenEntry>;
  fresh: StreamListener[];
}

/** The Affinity of an upstream with `sticky`, or null (SessionLB resolves one per upstream object). */
export type AffinityOf = (upstream: Upstream) => Affinity | null;
const NO_AFFINITY: AffinityOf = () => null;

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
  private routes(config: Config, upstreams: Map<string, Upstream>, affinityOf: AffinityOf): Map<string, ListenEntry> {
    const out = new Map<string, ListenEntry>();
    for (const stream of config.streams) {
      const retry = retryRules(stream);
      const routeTo = (listen: string, name: string): StreamRoute => {
        const upstream = upstreams.get(name)!;
        // A process that binds no listener (the cluster primary) routes no connection: no affinity, no store announced.
        const affinity = this.bind ? affinityOf(upstream) : null;
        return {
          stream, listen, upstream, maxTries: upstream.triesFor(stream.nextUpstreamTries), retry, metrics: this.metrics.route(listen, upstream.name), affinity,
          sendProxy: sendProxyOf(upstream),
        };
      };
      for (const l of stream.listen) {
        let route: ListenRoute;
        if (stream.route === null) {
          route = routeTo(l.key, stream.upstream!);
        } else {
          const targets = new Map<string, StreamRoute>();
          for (const name of [...stream.route.map.values(), ...(stream.route.default === null ? [] : [stream.route.default])]) {
            if (!targets.has(name)) targets.set(name, routeTo(l.key, name));
          }
          route = new StreamPreread(stream.route, targets, this.metrics.prereadCells(l.key));
        }
        out.set(l.key, { host: l.host, port: l.port, route, proxyFrom: l.proxyProtocol ? cidrBlockList(stream.proxyProtocolFrom) : null });
      }
    }
    return out;
  }

  /** Binds every stream listener of the config (start). */
  async start(config: Config, upstreams: Map<string, Upstream>, affinityOf: AffinityOf = NO_AFFINITY): Promise<void> {
    const plan = await this.prepare(config, upstreams, affinityOf);
    this.commit(plan);
  }

  /**
   * Binds the listeners the config adds; nothing changes for running ones until commit(). Throws
   * (having closed what it bound) when one cannot be bound. `affinityOf`: the session affinity of
   * an upstream with `sticky` ("source"), on the config's session store.
   */
  async prepare(config: Config, upstreams: Map<string, Upstream>, affinityOf: AffinityOf = NO_AFFINITY): Promise<StreamPlan> {
    const routes = this.routes(config, upstreams, affinityOf);
    const fresh: StreamListener[] = [];
    if (!this.bind) return { routes, fresh };
    try {
      for (const [key, { host, port, route, proxyFrom }] of routes) {
        if (this.listeners.has(key)) continue;
        const l = new StreamListener(key, host, port, route, proxyFrom, this);
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
        l.proxyFrom = r.proxyFrom;
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
    for (const l of this.listeners.values()) n += l.sessions.size + l.prereading.size;
    for (const l of this.draining) n += l.sessions.size + l.prereading.size;
    return n;
  }

  private *activeByListen(): Iterable<[string, number]> {
    const counts = new Map<string, number>();
    for (const l of [...this.listeners.values(), ...this.draining]) counts.set(l.key, (counts.get(l.key) ?? 0) + l.sessions.size + l.prereading.size);
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
      const n = all.reduce((a, l) => a + l.sessions.size + l.prereading.size, 0);
      this.log.warn({ timeoutMs, sessions: n }, 'shutdown timeout reached; closing remaining stream sessions');
      for (const l of all) {
        for (const s of l.sessions) s.destroy();
        for (const socket of l.prereading) socket.destroy();
      }
      await closed;
    }
    this.draining.clear();
  }
}
