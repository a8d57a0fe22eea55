/**
 * Wires a config to running parts: upstream groups with their connection pools,
 * one HTTP listener per listen address routing to virtual servers and locations,
 * and the admin listener. `reload` swaps the routing tables atomically; requests
 * in flight keep the objects they started with.
 */
import http from 'node:http';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { loadConfigText, readConfigText } from '../config/load.js';
import { ConfigError, type Config, type HeaderLimits, type UpstreamConfig } from '../config/model.js';
import { Upstream } from '../balancer/upstream.js';
import { ServerStates } from '../balancer/server-state.js';
import type { PeerPool } from '../proxy/upstream/transport.js';
import { RawPeerPool } from '../proxy/upstream/raw-pool.js';
import { ForwardRequest, type ForwardHooks, type Route } from '../proxy/http/forward.js';
import { UpgradeRequest } from '../proxy/http/upgrade.js';
import { ListenerRouter, buildVirtualServer, matchLocation, pathForMatching } from '../proxy/http/router.js';
import { sendError } from '../proxy/http/errors.js';
import { requestHeadStatus } from '../proxy/http/headers.js';
import { AdminServer } from '../admin/server.js';
import { registerAdminApi } from '../admin/api.js';
import { StateFileWriter, applyRuntimeState, logConfigWeightWins, readStateFile } from '../admin/state.js';
import { HealthChecker, holdUntilFirstProbe } from '../health/checker.js';
import type { EventLog } from '../observability/log.js';
import { Observability } from '../observability/observability.js';
import { SessionManager } from '../sessions/manager.js';
import type { Affinity } from '../sessions/affinity.js';
import { StreamProxies, type StreamPlan } from '../proxy/stream/listener.js';
import { listenOn } from '../net/listen.js';

/** Whether an Upgrade header offers h2c (RFC 7540 3.2): never passed upstream (the h2c smuggling vector). */
function offersH2c(upgrade: string | undefined): boolean {
  return upgrade !== undefined && /(^|,)\s*h2c\s*(,|$)/i.test(upgrade);
}

/** Longest gap between two reports of the same failing accept (EMFILE under a flood). */
const ACCEPT_ERROR_LOG_MS = 1000;

/**
 * Pipelined requests are handled one at a time, as nginx does (RFC 9112 9.3.2 allows parallel
 * processing only when every method is safe). node parses and emits them all at once, but gives
 * a response its socket only once the responses before it have finished: a request whose
 * response has no socket yet waits for the 'socket' event (never comes when an earlier response
 * closed the connection: nginx reads nothing after that either). A request that is not pipelined
 * costs one null check.
 */
const TURN = Symbol('sessionlb.turn');
interface Waiting { [TURN]?: { listener: Listener; expectContinue: boolean } }
/** The last pipelined response on a connection (so an error after it is answered after it). */
const LAST_PIPELINED = Symbol('sessionlb.lastPipelined');
interface ClientSocket { _httpMessage?: http.ServerResponse | null; [LAST_PIPELINED]?: http.ServerResponse }

/** res 'socket' of a pipelined request: its turn. */
function pipelinedTurn(this: http.ServerResponse & Waiting): void {
  const turn = this[TURN]!;
  this[TURN] = undefined;
  turn.listener.route(this.req, this, turn.expectContinue);
}

function errorResponse(status: string): string {
  return `HTTP/1.1 ${status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`;
}

class Listener {
  readonly server: http.Server;
  router: ListenerRouter<Route>;
  /** large_client_header_buffers. */
  private headLimits: HeaderLimits = { bufferSize: 0, total: 0 };
  private lastAcceptError = 0;

  constructor(readonly key: string, readonly host: string, readonly port: number, router: ListenerRouter<Route>, private readonly lb: SessionLB) {
    this.router = router;
    this.server = http.createServer({
      requestTimeout: 0, // large uploads are bounded by the idle timeouts below, not a total
      // A missing Host is answered by requestHeadStatus, in turn with pipelined requests.
      requireHostHeader: false,
      // node looks for header timeouts every connectionsCheckingInterval (30 s by default): every
      // second, so a slow client is closed within a second of clientHeaderTimeout, as in nginx.
      connectionsCheckingInterval: 1000,
      // Upstream connections already carry the request; keep the client side's Nagle off too.
      noDelay: true,
    }, this.onRequest);
    this.configure(lb.config);
    this.server.on('checkContinue', this.onCheckContinue);
    this.server.on('upgrade', this.onUpgrade);
    this.server.on('clientError', this.onClientError);
    this.server.on('error', this.onServerError);
  }

  /** The client-side limits of `config` (at start and on every reload). */
  configure(config: Config): void {
    const server = this.server;
    server.headersTimeout = config.clientHeaderTimeoutMs; // nginx client_header_timeout
    server.keepAliveTimeout = config.keepaliveTimeoutMs;
    // The whole head (nginx NUMBER x SIZE): over it node answers 431. No count limit: node's
    // maxHeadersCount (2000) would drop the headers past it silently and forward the rest.
    // A plain property of node's http.Server (read for each new connection), missing from @types/node.
    (server as http.Server & { maxHeaderSize: number }).maxHeaderSize = config.headerLimits.total;
    server.maxHeadersCount = 0;
    this.headLimits = config.headerLimits;
    server.maxConnections = config.maxConnections > 0 ? config.maxConnections : Infinity;
  }

  private readonly onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    this.handle(req, res, false);
  };

  /** `Expect: 100-continue`: the body is invited only once the request may send it (size, route). */
  private readonly onCheckContinue = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    this.handle(req, res, true);
  };

  /** A request: now, or, pipelined behind another, once the responses before it finished (see pipelinedTurn). */
  private handle(req: http.IncomingMessage, res: http.ServerResponse, expectContinue: boolean): void {
    if (res.socket === null) {
      // Its body, if any, stays in the request stream (paused until read) meanwhile.
      (res as http.ServerResponse & Waiting)[TURN] = { listener: this, expectContinue };
      (req.socket as Socket & ClientSocket)[LAST_PIPELINED] = res;
      res.once('socket', pipelinedTurn);
      return;
    }
    this.route(req, res, expectContinue);
  }

  /** @internal (pipelinedTurn) Answers or forwards one request. */
  route(req: http.IncomingMessage, res: http.ServerResponse, expectContinue: boolean): void {
    if (this.lb.stopping) res.shouldKeepAlive = false;
    const vs = this.router.serverFor(req.headers.host);
    let status = requestHeadStatus(req.method ?? '', req.url ?? '/', req.rawHeaders, this.headLimits, req.httpVersion === '1.1');
    // nginx 501 "client sent unknown Transfer-Encoding": a coding other than chunked cannot be passed on.
    const te = req.headers['transfer-encoding'];
    if (status === 0 && te !== undefined && te.trim().toLowerCase() !== 'chunked') status = 501;
    // nginx answers 400 to a target it cannot normalise and to a duplicate Host ("client sent duplicate host header").
    const path = status === 0 ? pathForMatching(req.url ?? '/') : null;
    if (path === null) {
      const startedAt = performance.now();
      const code = status === 0 ? 400 : status;
      this.lb.observability.answeredLocally(req, vs.name, code, sendError(res, code, true), startedAt);
      return;
    }
    const route = matchLocation(vs, path);
    if (route === null) {
      const startedAt = performance.now();
      req.resume();
      this.lb.observability.answeredLocally(req, vs.name, 404, sendError(res, 404, expectContinue), startedAt);
      return;
    }
    new ForwardRequest(req, res, route, this.lb.hooks).start(expectContinue);
  }

  private readonly onUpgrade = (req: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
    if (offersH2c(req.headers.upgrade)) {
      this.withoutUpgrade(req, socket as Socket);
      return;
    }
    const vs = this.router.serverFor(req.headers.host);
    const status = requestHeadStatus(req.method ?? '', req.url ?? '/', req.rawHeaders, this.headLimits, req.httpVersion === '1.1');
    const path = status === 0 ? pathForMatching(req.url ?? '/') : null;
    const route = path === null ? null : matchLocation(vs, path);
    if (route === null) {
      const line = status === 414 ? '414 Request-URI Too Large' : status === 431 ? '431 Request Header Fields Too Large'
        : path === null ? '400 Bad Request' : '404 Not Found';
      socket.end(errorResponse(line));
      return;
    }
    new UpgradeRequest(req, socket, head, route, this.lb.log).start();
  };

  /**
   * An `Upgrade: h2c` request is served as the plain HTTP/1.1 request it also is (nginx never
   * passes an Upgrade it was not told to), on this connection, which then closes: node handed the
   * socket over already. One with a body is refused: node stopped reading it at the head.
   */
  private withoutUpgrade(req: http.IncomingMessage, socket: Socket): void {
    const cl = req.headers['content-length'];
    if (req.headers['transfer-encoding'] !== undefined || (cl !== undefined && cl !== '0')) {
      socket.end(errorResponse('400 Bad Request'));
      return;
    }
    const res = new http.ServerResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(socket);
    res.on('finish', () => socket.end());
    this.handle(req, res, false);
  }

  private readonly onClientError = (err: NodeJS.ErrnoException, socket: Duplex): void => {
    // Malformed request (llhttp rejected it) or a broken client connection: answer 400 when we still can.
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large'
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
    const current = (socket as Duplex & ClientSocket)._httpMessage; // node's response in progress on it
    if (current != null) {
      if (current.req.complete) {
        // A later request does not parse: those before it get their answers first (nginx), then this
        // one, unless one of them closes the connection.
        const pipelined = (socket as Duplex & ClientSocket)[LAST_PIPELINED];
        const last = pipelined !== undefined && !pipelined.writableFinished ? pipelined : current;
        last.once('finish', () => {
          if (last.shouldKeepAlive && socket.writable) socket.end(errorResponse(status));
        });
        return;
      }
      if (current.headersSent) {
        // The request in flight has a bad body and its answer is under way: nothing can follow it.
        if (current.writableEnded) socket.end();
        else socket.destroy();
        return;
      }
    }
    socket.end(errorResponse(status));
  };

  /**
   * A failed accept (EMFILE, ENFILE, ENOBUFS: this host's limits, no client's or server's fault).
   * libuv already takes the pending connection and closes it, so the listener does not spin;
   * reported at most once a second.
   */
  private readonly onServerError = (err: NodeJS.ErrnoException): void => {
    if (!this.server.listening) return; // a bind error: listen() rejects with it
    this.lb.observability.metrics.localError(err.code ?? 'unknown', 'accept');
    const now = Date.now();
    if (now - this.lastAcceptError < ACCEPT_ERROR_LOG_MS) return;
    this.lastAcceptError = now;
    this.lb.log.error({ listen: this.key, code: err.code, err: err.message }, `accept() failed on ${this.key}: ${err.message}`);
  };

  listen(): Promise<void> {
    return listenOn(this.server, this.host, this.port);
  }
}

export interface SessionLBOptions {
  log: EventLog;
  /** Human-readable access log (pino-pretty), as `run --pretty` and the demo print. */
  pretty?: boolean;
  /** Access log to stdout when the config has no `accessLog.path` (the CLI); embedding defaults to none. */
  accessLogToStdout?: boolean;
  /**
   * `workers` > 1 (src/cluster/): the `primary` binds no HTTP listener but runs health checks,
   * the admin listener and the state file; a `worker` serves the listeners only (health and
   * runtime state come from the primary). Default `single`: everything in this process.
   */
  role?: 'single' | 'primary' | 'worker';
}

/** One HTTP listening address and the routing of every virtual server on it. */
interface ListenerPlan {
  host: string;
  port: number;
  router: ListenerRouter<Route>;
}
const NO_ROUTERS: ReadonlyMap<string, ListenerPlan> = new Map();

export class SessionLB {
  config: Config;
  readonly log: EventLog;
  readonly hooks: ForwardHooks;
  upstreams = new Map<string, Upstream>();
  /** Each server's runtime state (health, failures, slow start, admin state and weight), found again by every reload. */
  private readonly serverStates = new ServerStates();
  stopping = false;
  private readonly listeners = new Map<string, Listener>();
  private readonly pools = new Map<string, PeerPool>();
  private admin: AdminServer | null = null;
  /** Active health checks of every upstream that has `healthCheck`. */
  readonly health: HealthChecker;
  /** Reloads from the config file (SIGHUP, --watch, `sessionlb reload`): counts for metrics and /status. */
  readonly reloads = { success: 0, failure: 0 };
  /** When the last reload from file succeeded / failed (ms since epoch), null = never. */
  lastReloadSuccess: number | null = null;
  lastReloadFailure: number | null = null;
  /** When start() ran (ms since epoch). */
  startedAt = 0;
  /** Sessions bound to a server, when the sessions feature knows it (shown in /status); null = unknown. */
  sessionsBound: ((upstream: string, server: string) => number | null) | null = null;
  private readonly stateWriter: StateFileWriter;
  /** Metrics (`/metrics`), the access log and the status page. */
  readonly observability: Observability;
  private reloadQueue: Promise<unknown> = Promise.resolve();
  /** Session affinity: the binding store (kept across reloads while `sessionStore` is unchanged) and counters. */
  readonly sessions: SessionManager;
  /** One Affinity per sticky upstream object (a reload makes new upstreams, hence new ones). */
  private readonly affinities = new WeakMap<Upstream, Affinity | null>();
  /** See SessionLBOptions.role. */
  readonly role: 'single' | 'primary' | 'worker';
  /** Called when runtime server state changed (admin API, reload): the cluster primary broadcasts it. */
  onRuntimeChange: (() => void) | null = null;
  /**
   * Processes that must switch with this one (the cluster primary's workers): a reload from
   * file commits here only once `prepare` resolved, so what this process runs (and hands to a
   * replacement worker, `configText`) is always a config that every one of them could bind.
   * - prepare: the new config (validated here) goes to them; rejects, having put every one of
   *   them back on the config in use, when it cannot be applied (an address in use, ...);
   * - abort: this process could not switch after all: every one of them goes back to `configText`;
   * - committed: this process switched too (`configText` is the new text).
   * abort and committed must not throw. The reload counts once, here, when it is over.
   */
  reloadPeers: {
    prepare(config: Config, text: string): Promise<void>;
    abort(): Promise<void>;
    committed(): Promise<void>;
  } | null = null;
  /** Why the last reload from file failed (a cluster worker reports it to the primary); null after a success. */
  lastReloadError: string | null = null;
  /** TCP (L4) proxies of `streams` (the cluster primary binds none of them). */
  readonly streams: StreamProxies;

  constructor(config: Config, options: SessionLBOptions) {
    this.config = config;
    this.role = options.role ?? 'single';
    this.log = options.log;
    this.observability = new Observability({
      upstreams: () => this.upstreams.values(),
      downstreamConnections: () => this.downstreamConnections(),
      storeCircuitOpen: () => this.sessions.store.circuitOpen(),
      stickyStats: () => this.sessions.allStats(),
      reloads: () => this.reloads,
      lastReloadSuccess: () => this.lastReloadSuccess ?? (this.startedAt || Date.now()),
    }, config, { pretty: options.pretty, accessLogToStdout: options.accessLogToStdout });
    const metrics = this.observability.metrics;
    this.hooks = {
      log: options.log,
      onDone: this.observability.onDone,
      localError: (code, operation) => metrics.localError(code, operation),
      tempFile: (direction) => metrics.tempFile(direction),
    };
    this.health = new HealthChecker(options.log);
    this.health.onProbe = this.observability.metrics.healthCheck;
    this.stateWriter = new StateFileWriter(options.log);
    this.sessions = new SessionManager(config.sessionStore, options.log);
    this.sessionsBound = (upstream, server) =>
      (this.upstreams.get(upstream)?.config.sticky?.mode === 'learn' ? this.sessions.boundCount(upstream, server) : null);
    this.sessions.storeObserver = this.observability.metrics.store;
    this.upstreams = this.buildUpstreams(config);
    this.serverStates.commit(config.upstreams.values());
    this.streams = new StreamProxies(options.log, () => this.observability.accessLog, this.observability.metrics.registry, this.role !== 'primary');
  }

  /** Binds every listener and the admin listener. */
  async start(): Promise<void> {
    this.startedAt = Date.now();
    if (this.config.stateFile !== null && this.role !== 'worker') await this.restoreRuntimeState(this.config.stateFile);
    // Before any listener accepts: `mandatory` checks make servers unhealthy until their first probe passes.
    if (this.role !== 'worker') this.health.sync(this.upstreams);
    // The cluster primary serves no HTTP listener (its workers do): no routes to build.
    const routers = this.role === 'primary' ? NO_ROUTERS : this.buildRouters(this.config);
    for (const [key, { host, port, router }] of routers) {
      const listener = new Listener(key, host, port, router, this);
      await listener.listen();
      this.listeners.set(key, listener);
    }
    await this.streams.start(this.config, this.upstreams);
    if (this.config.admin && this.role !== 'worker') {
      this.admin = new AdminServer(this.config.admin, this.log);
      registerAdminApi(this.admin, this);
      this.observability.registerAdmin(this.admin);
      await this.admin.listen();
    }
    this.log.info({ listen: [...this.listeners.keys()], streams: [...this.streams.addresses().keys()], admin: this.config.admin?.listen.key ?? null }, 'sessionlb started');
  }

  /** The admin listener, for later features to add routes (metrics, status, runtime API). */
  get adminServer(): AdminServer | null {
    return this.admin;
  }

  /** Open client connections on every listener (the `sessionlb_downstream_connections` gauge). */
  async downstreamConnections(): Promise<number> {
    const counts = await Promise.all([...this.listeners.values()].map((l) => new Promise<number>((resolve) => {
      l.server.getConnections((err, n) => resolve(err ? 0 : n));
    })));
    return counts.reduce((a, b) => a + b, this.streams.sessionCount());
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
    this.sessions.reconfigure(config.sessionStore);
    const upstreams = this.buildUpstreams(config);
    const previousPools = new Set(this.pools.values());
    const routers = this.role === 'primary' ? NO_ROUTERS : this.buildRouters(config, upstreams);
    const fresh: Listener[] = [];
    let streamPlan: StreamPlan;
    try {
      for (const [key, { host, port, router }] of routers) {
        if (this.listeners.has(key)) continue;
        const listener = new Listener(key, host, port, router, this);
        await listener.listen();
        fresh.push(listener);
      }
      streamPlan = await this.streams.prepare(config, upstreams);
    } catch (err) {
      for (const l of fresh) l.server.close();
      throw err;
    }
    // The switch: everything below is synchronous.
    logConfigWeightWins(this.upstreams, upstreams, this.log);
    this.config = config;
    this.upstreams = upstreams;
    this.serverStates.commit(config.upstreams.values());
    this.observability.reconfigure(config);
    if (this.role !== 'worker') {
      this.health.sync(upstreams);
    } else {
      // The primary probes; until its state arrives, a server this reload added behind a
      // `mandatory` check is unhealthy here as in the primary (HealthChecker.sync).
      for (const up of upstreams.values()) for (const peer of up.all()) holdUntilFirstProbe(peer, up.config.healthCheck);
    }
    for (const l of fresh) this.listeners.set(l.key, l);
    this.streams.commit(streamPlan);
    const removed: Listener[] = [];
    for (const [key, l] of this.listeners) {
      const r = routers.get(key);
      if (r === undefined) {
        removed.push(l);
      } else {
        l.router = r.router;
        l.configure(config);
      }
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
    // Not saveRuntimeState(): the workers reload next and then get the whole state (cluster primary).
    void this.writeStateFile();
  }

  /**
   * Reloads from a config file (SIGHUP, `run --watch`, `sessionlb reload`), one reload at a
   * time. An invalid file changes nothing: every problem is logged and the failure counted.
   * Resolves true when the new config is in use.
   */
  reloadFromFile(file: string = this.config.file): Promise<boolean> {
    return this.reloadWith(file, null);
  }

  /** Reloads from the text of config file `file` (a cluster worker: the text the primary validated). */
  reloadFromText(text: string, file: string = this.config.file): Promise<boolean> {
    return this.reloadWith(file, text);
  }

  /**
   * The text of the config file in use, when it came from a file (the CLI sets it at start;
   * reloads update it): a cluster primary hands it to workers it starts or reloads.
   */
  configText: string | null = null;

  private reloadWith(file: string, givenText: string | null): Promise<boolean> {
    const run = async (): Promise<boolean> => {
      if (this.stopping) return false;
      let config: Config;
      let text: string;
      try {
        text = givenText ?? await readConfigText(file);
        config = await loadConfigText(text, file);
        if (this.config.admin !== null && config.admin !== null && config.admin.listen.key !== this.config.admin.listen.key) {
          this.log.warn({ file, admin: this.config.admin.listen.key }, 'admin.listen changes take effect only after a restart');
        }
        const peers = this.reloadPeers;
        if (peers !== null) await peers.prepare(config, text);
        try {
          await this.reload(config);
        } catch (err) {
          await peers?.abort();
          throw err;
        }
        this.configText = text;
        await peers?.committed();
      } catch (err) {
        this.reloads.failure++;
        this.lastReloadFailure = Date.now();
        this.lastReloadError = err instanceof ConfigError
          ? err.problems.map((p) => `${p.path}: ${p.message}`).join('; ')
          : (err as Error).message;
        if (err instanceof ConfigError) {
          for (const p of err.problems) this.log.error({ file, path: p.path, problem: p.message }, `${file}: ${p.path}: ${p.message}`);
        } else {
          this.log.error({ file, err: (err as Error).message }, `reload of ${file} failed: ${(err as Error).message}`);
        }
        this.log.error({ file, failures: this.reloads.failure }, 'reload failed; still serving the previous configuration');
        return false;
      }
      this.reloads.success++;
      this.lastReloadSuccess = Date.now();
      this.lastReloadError = null;
      this.log.info({ file, listen: [...this.listeners.keys()], upstreams: [...this.upstreams.keys()] }, 'configuration reloaded');
      return true;
    };
    const result = this.reloadQueue.then(run, run);
    this.reloadQueue = result;
    return result;
  }

  /** A runtime change was made (admin API): tells the cluster's workers (onRuntimeChange) and queues a write of `stateFile`. */
  saveRuntimeState(): Promise<void> {
    this.onRuntimeChange?.();
    return this.writeStateFile();
  }

  /** Queues a write of the runtime server state to `stateFile` (when set; never by a worker). */
  private writeStateFile(): Promise<void> {
    if (this.role === 'worker' || this.config.stateFile === null) return Promise.resolve();
    return this.stateWriter.save(this.config.stateFile, this.upstreams);
  }

  private async restoreRuntimeState(file: string): Promise<void> {
    try {
      const saved = await readStateFile(file);
      if (saved !== null) applyRuntimeState(this.upstreams, saved, this.log);
    } catch (err) {
      this.log.error({ stateFile: file, err: (err as Error).message }, 'cannot read stateFile; starting without saved runtime state');
    }
  }

  /** Stops accepting, lets requests in flight finish (up to `shutdownTimeoutMs`), then closes everything. */
  async stop(timeoutMs = this.config.shutdownTimeoutMs): Promise<void> {
    this.stopping = true;
    this.health.stop();
    const streamsStopped = this.streams.stop(timeoutMs);
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
    await streamsStopped;
    for (const pool of this.pools.values()) pool.closeIdle();
    await this.stateWriter.flush();
    if (this.admin) await this.admin.close();
    await this.sessions.close();
    await this.observability.close();
    this.log.info('sessionlb stopped');
  }

  private buildUpstreams(config: Config): Map<string, Upstream> {
    const out = new Map<string, Upstream>();
    for (const [name, upConfig] of config.upstreams) {
      const up = new Upstream(upConfig, this.serverStates);
      for (const peer of up.all()) peer.pool = this.poolFor(upConfig, peer.host, peer.port);
      this.observability.attachPeers(up);
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
      pool = new RawPeerPool(host, port, options);
      this.pools.set(key, pool);
    }
    return pool;
  }

  private affinityOf(upstream: Upstream): Affinity | null {
    let a = this.affinities.get(upstream);
    if (a === undefined) {
      a = this.sessions.affinityFor(upstream);
      this.affinities.set(upstream, a);
    }
    return a;
  }

  private buildRouters(config: Config, upstreams = this.upstreams): Map<string, ListenerPlan> {
    const out = new Map<string, ListenerPlan>();
    for (const vsConfig of config.servers) {
      const serverName = vsConfig.serverNames[0] ?? '_';
      const vs = buildVirtualServer<Route>(vsConfig, (location) => ({
        location,
        upstream: upstreams.get(location.upstream)!,
        scheme: 'http',
        sendTimeoutMs: config.sendTimeoutMs,
        underscoresInHeaders: config.underscoresInHeaders,
        metrics: this.observability.route(serverName, upstreams.get(location.upstream)!),
        affinity: this.affinityOf(upstreams.get(location.upstream)!),
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
