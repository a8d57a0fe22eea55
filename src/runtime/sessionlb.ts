/**
 * Wires a config to running parts: upstream groups with their connection pools, the HTTP
 * listeners routing to virtual servers and locations, the stream listeners, health checks,
 * sessions, observability and the admin listener, as far as this process's role
 * (src/runtime/role.ts) has them. `reload` swaps the routing tables atomically: every
 * listener set prepares (binds what the new config adds), then everything switches
 * synchronously, or every set aborts; requests in flight keep the objects they started with.
 */
import type { Config } from '../config/model.js';
import { Upstream } from '../balancer/upstream.js';
import { ServerStates } from '../balancer/server-state.js';
import type { ForwardHooks } from '../proxy/http/forward.js';
import { HttpListeners, type HttpListenerOwner, type HttpRoute } from '../proxy/http/listener.js';
import type { TlsErrorReason } from '../tls/acceptor.js';
import type { ProxyProtocolErrorReason } from '../net/accept-proxy.js';
import { AdminServer } from '../admin/server.js';
import { registerAdminApi, type AdminTarget } from '../admin/api.js';
import { logConfigWeightWins } from '../admin/state.js';
import { HealthChecker, healthCheckTls, holdUntilFirstProbe, type ProbeTls } from '../health/checker.js';
import type { EventLog } from '../observability/log.js';
import { Observability } from '../observability/observability.js';
import { SessionManager, storesBindings, type StoreSetup } from '../sessions/manager.js';
import { DEFAULT_ROTATE_MS, TicketKeys } from '../tls/ticket-keys.js';
import { MemcachedStore } from '../sessions/memcached-store.js';
import { SharedTicketKeys, TICKET_KEYS_RECORD } from '../sessions/shared-ticket-keys.js';
import { TlsSites, buildTlsSites, tlsBuildProblems, type CertificateInUse, type TlsSite } from '../tls/contexts.js';
import { readTrustedCertificates } from '../tls/upstream-trust.js';
import type { Affinity } from '../sessions/affinity.js';
import { StreamProxies } from '../proxy/stream/listener.js';
import { SINGLE_PROCESS, type RuntimeRole } from './role.js';
import { PeerPools, upstreamTlsSettings } from './peer-pools.js';
import { httpRoutes } from './http-routes.js';
import { RuntimeStateFile } from './state-file.js';
import { ConfigReloads, type Reloadable } from './config-reloads.js';
import { userFileWarnings } from '../config/access.js';
import { LimitZones } from '../limits/zones.js';
import { LocalDecider, type LimitDecider } from '../limits/decider.js';
import { SharedBuckets } from '../limits/shared-buckets.js';

export interface SessionLBOptions {
  log: EventLog;
  /** Human-readable access log (pino-pretty), as `run --pretty` and the demo print. */
  pretty?: boolean;
  /** Access log to stdout when the config has no `accessLog.path` (the CLI); embedding defaults to none. */
  accessLogToStdout?: boolean;
  /** What this process does (src/runtime/role.ts); default SINGLE_PROCESS: everything. */
  role?: RuntimeRole;
  /** The text of the config file, when the config came from one (see SessionLB.configText). */
  configText?: string | null;
  /**
   * Session ticket key timing (tests): `rotateMs` (default daily) and, when shared through
   * memcached, `pollMs` (how often the shared record is read again, default a minute).
   */
  ticketKeyTiming?: { rotateMs?: number; pollMs?: number };
}

/** How the ticket keys of a config are made: nowhere (no TLS), here alone, or shared through memcached. */
interface TicketKeyPlan {
  /** `local` or the identity of the memcached settings they are shared through. */
  identity: string;
  shared: SharedTicketKeys | null;
}

/** A role that binds no listener has no routes to build. */
const NO_ROUTES: ReadonlyMap<string, HttpRoute> = new Map();

/**
 * The trusted certificate files of `config`'s "https://" upstreams (proxySslTrustedCertificate), read
 * now; throws, naming each file and what is wrong with it, when one does not load.
 */
function trustedCertificates(config: Config): ReadonlyMap<string, Buffer> {
  const trusted = readTrustedCertificates(config);
  if (trusted.problems.length > 0) throw new Error(trusted.problems.map((p) => `${p.file}: ${p.message}`).join('; '));
  return trusted.files;
}

export class SessionLB implements AdminTarget, HttpListenerOwner, Reloadable {
  config: Config;
  readonly log: EventLog;
  readonly hooks: ForwardHooks;
  upstreams = new Map<string, Upstream>();
  /** Session ticket keys, rotated daily, shared by every ssl address of this process (a cluster worker is given its primary's). */
  readonly ticketKeys: TicketKeys;
  /** The TLS sites (certificates per ssl address and server) in use. */
  private readonly tlsSites: TlsSites;
  /** How the ticket keys are made now (null: not made here, or no TLS); see manageTicketKeys. */
  private ticketKeyPlan: TicketKeyPlan | null = null;
  private readonly ticketKeyTiming: { rotateMs: number; pollMs: number | undefined };
  private warnedDerivedTicketKeys = false;
  private ticketKeyQueue: Promise<void> = Promise.resolve();
  /** Each server's runtime state (health, failures, slow start, admin state and weight), found again by every reload. */
  private readonly serverStates = new ServerStates();
  stopping = false;
  /** Virtual servers (first server name) in admin maintenance: kept across reloads, in `stateFile` across restarts. */
  readonly maintenance = new Set<string>();
  /** What this process does, and what it tells (see RuntimeRole). */
  private readonly role: RuntimeRole;
  /** HTTP listeners (none when the role binds none). */
  private readonly http: HttpListeners;
  /** TCP (L4) proxies of `streams` (none bound when the role binds no listener). */
  readonly streams: StreamProxies;
  private readonly pools = new PeerPools();
  private admin: AdminServer | null = null;
  /** Active health checks of every upstream that has `healthCheck` (idle when the role does not probe). */
  readonly health: HealthChecker;
  /** The TLS the probes of upstreams reached over https use (healthCheckTls), derived with each config. */
  private probeTls: ReadonlyMap<string, ProbeTls>;
  /** `stateFile`, when the role keeps it. */
  private readonly stateFile: RuntimeStateFile | null;
  /** Reloads from the config file (SIGHUP, --watch, `sessionlb reload`), one at a time, and their counts. */
  private readonly fileReloads: ConfigReloads;
  /** When start() ran (ms since epoch). */
  startedAt = 0;
  /** Sessions bound to a server, when the sessions feature knows it (shown in /status); null = unknown. */
  readonly sessionsBound: ((upstream: string, server: string) => number | null) | null;
  /** Metrics (`/metrics`), the access log and the status page. */
  readonly observability: Observability;
  /** Session affinity: the binding store (kept across reloads while `sessionStore` is unchanged) and counters. */
  readonly sessions: SessionManager;
  /** One Affinity per sticky upstream object (a reload makes new upstreams, hence new ones). */
  private readonly affinities = new WeakMap<Upstream, Affinity | null>();
  /** nginx limit_req / limit_conn zones of this process (a cluster worker asks its primary's). */
  readonly limitZones = new LimitZones();
  /** Decides over limitZones here (and memcached for shared zones). */
  readonly localLimits = new LocalDecider(this.limitZones);
  /** Who decides the limits of requests here: localLimits, or (cluster worker) the primary; set before start(). */
  limitDecider: LimitDecider = this.localLimits;
  /** The memcached counting of `shared` zones: identity of its settings, the store. */
  private sharedLimits: { identity: string; store: MemcachedStore } | null = null;

  constructor(config: Config, options: SessionLBOptions) {
    // Before anything opens: a trusted certificate file that does not load fails here with nothing started.
    const trusted = trustedCertificates(config);
    this.config = config;
    this.role = options.role ?? SINGLE_PROCESS;
    this.ticketKeyTiming = { rotateMs: options.ticketKeyTiming?.rotateMs ?? DEFAULT_ROTATE_MS, pollMs: options.ticketKeyTiming?.pollMs };
    this.ticketKeys = new TicketKeys(this.ticketKeyTiming.rotateMs);
    this.tlsSites = new TlsSites(this.ticketKeys);
    this.fileReloads = new ConfigReloads(this, options.log, this.role.reloadPeers, options.configText ?? null);
    this.log = options.log;
    this.observability = new Observability({
      upstreams: () => this.upstreams.values(),
      downstreamConnections: () => this.downstreamConnections(),
      storeCircuitOpen: () => this.sessions.store.circuitOpen(),
      stickyStats: () => this.sessions.allStats(),
      reloads: () => this.reloads,
      lastReloadSuccess: () => this.lastReloadSuccess ?? (this.startedAt || Date.now()),
      tlsCertificates: () => this.tlsSites.certificates(),
      limitZones: () => this.limitZones.figures(),
    }, config, { pretty: options.pretty, accessLogToStdout: options.accessLogToStdout });
    const metrics = this.observability.metrics;
    this.hooks = {
      log: options.log,
      onDone: this.observability.onDone,
      localError: (code, operation) => metrics.localError(code, operation),
      tempFile: (direction) => metrics.tempFile(direction),
    };
    this.health = new HealthChecker(options.log);
    const role = this.role;
    this.health.onProbe = (upstream, server, ok, detail) => {
      metrics.healthCheck(upstream, server, ok, detail);
      role.probed(upstream, server);
    };
    this.stateFile = role.keepsStateFile ? new RuntimeStateFile(options.log) : null;
    this.sessions = new SessionManager(config.sessionStore, options.log);
    this.sessionsBound = (upstream, server) =>
      (storesBindings(this.upstreams.get(upstream)?.config.sticky?.mode) ? this.sessions.boundCount(upstream, server) : null);
    this.sessions.storeObserver = metrics.store;
    this.upstreams = this.buildUpstreams(config, trusted);
    this.probeTls = healthCheckTls(config, trusted);
    this.serverStates.commit(config.upstreams.values());
    this.limitZones.configure(config.limitReqZones.values(), config.limitConnZones.values());
    this.http = new HttpListeners(this);
    this.streams = new StreamProxies(options.log, () => this.observability.accessLog, metrics.registry, role.bindsListeners,
      (code, operation) => metrics.localError(code, operation));
    this.streams.proxyProtocolError = (reason) => metrics.proxyProtocolError(reason);
  }

  /** Reloads from the config file: counts for metrics and /status. */
  get reloads(): { readonly success: number; readonly failure: number } {
    return this.fileReloads.counts;
  }

  /** When the last reload from file succeeded / failed (ms since epoch), null = never. */
  get lastReloadSuccess(): number | null {
    return this.fileReloads.lastSuccess;
  }

  get lastReloadFailure(): number | null {
    return this.fileReloads.lastFailure;
  }

  /** Why the last reload from file failed (a cluster worker reports it to the primary); null after a success. */
  get lastReloadError(): string | null {
    return this.fileReloads.lastError;
  }

  /**
   * The text of the config file in use, when it came from a file (given at construction;
   * reloads update it): a cluster primary hands it to workers it starts or reloads.
   */
  get configText(): string | null {
    return this.fileReloads.configText;
  }

  /** Binds every listener and the admin listener. */
  async start(): Promise<void> {
    this.startedAt = Date.now();
    if (this.role.bindsListeners) this.tlsSites.swap(await this.buildTls(this.config));
    this.warnUserFiles(this.config);
    // Before any listener accepts: the keys shared by the other instances, when there are (one bounded read).
    await this.manageTicketKeys(this.config);
    this.manageSharedLimits(this.config);
    if (this.stateFile !== null && this.config.stateFile !== null) await this.stateFile.restore(this.config.stateFile, this.upstreams, this.maintenance);
    // Before any listener accepts: `mandatory` checks make servers unhealthy until their first probe passes.
    if (this.role.probesHealth) this.health.sync(this.upstreams, this.probeTls);
    this.http.commit(await this.http.prepare(this.config, this.routesFor(this.config, this.upstreams)));
    await this.streams.start(this.config, this.upstreams, (up) => this.affinityOf(up, undefined));
    if (this.config.admin && this.role.servesAdmin) {
      this.admin = new AdminServer(this.config.admin, this.log);
      registerAdminApi(this.admin, this);
      this.observability.registerAdmin(this.admin);
      await this.admin.listen();
    }
    this.log.info({ listen: this.http.keys(), streams: [...this.streams.addresses().keys()], admin: this.config.admin?.listen.key ?? null }, 'sessionlb started');
  }

  /** htpasswd files with {PLAIN} or {SHA} passwords (read by loadConfig): a warning at start and every reload. */
  private warnUserFiles(config: Config): void {
    if (!this.role.bindsListeners) return;
    for (const message of userFileWarnings(config)) this.log.warn(`auth_basic_user_file: ${message}`);
  }

  /** AdminTarget: the TLS certificates in use here (none when this role binds no listener). */
  tlsCertificates(): CertificateInUse[] {
    return this.tlsSites.certificates();
  }

  /** The admin listener, for later features to add routes (metrics, status, runtime API). */
  get adminServer(): AdminServer | null {
    return this.admin;
  }

  /** Open client connections on every listener (the `sessionlb_downstream_connections` gauge). */
  async downstreamConnections(): Promise<number> {
    return (await this.http.connections()) + this.streams.sessionCount();
  }

  /** Listening addresses, `host:port` -> bound port (useful when tests ask for port 0). */
  addresses(): Map<string, number> {
    return this.http.addresses();
  }

  /** HttpListenerOwner: a request answered by a listener itself (metrics, access log). */
  answeredLocally(...args: Parameters<Observability['answeredLocally']>): void {
    this.observability.answeredLocally(...args);
  }

  tlsHandshake(server: string, protocol: string, resumed: boolean): void {
    this.observability.metrics.tlsHandshake(server, protocol, resumed);
  }

  tlsHandshakeError(reason: TlsErrorReason): void {
    this.observability.metrics.tlsHandshakeError(reason);
  }

  /** HttpListenerOwner: a connection closed for its PROXY header. */
  proxyProtocolError(reason: ProxyProtocolErrorReason): void {
    this.observability.metrics.proxyProtocolError(reason);
  }

  /**
   * Switches to a new config: servers that remain keep their state, new listeners are
   * bound before removed ones close, idle connections of removed servers are closed.
   * Every listener set prepares first; when one cannot, every set aborts and nothing changed.
   */
  async reload(config: Config): Promise<void> {
    this.warnUserFiles(config);
    // Prepare: the trusted certificates of https upstreams (a file that does not load fails the
    // reload with nothing changed), the session store, and bind what the config adds.
    const trusted = trustedCertificates(config);
    const storePlan = this.sessions.prepare(config.sessionStore);
    const upstreams = this.buildUpstreams(config, trusted);
    const probeTls = healthCheckTls(config, trusted);
    let httpPlan;
    let streamPlan;
    // TLS first: a certificate that does not load fails the reload with nothing changed. The new
    // set goes in use now (listeners bound next read it) and back out if the reload is abandoned.
    const tlsBefore = this.tlsSites.inUse();
    try {
      if (this.role.bindsListeners) this.tlsSites.swap(await this.buildTls(config));
      httpPlan = await this.http.prepare(config, this.routesFor(config, upstreams, storePlan));
      try {
        streamPlan = await this.streams.prepare(config, upstreams, (up) => this.affinityOf(up, storePlan));
      } catch (err) {
        this.http.abort(httpPlan);
        throw err;
      }
    } catch (err) {
      this.sessions.abort(storePlan);
      this.tlsSites.swap(tlsBefore);
      throw err;
    }
    // The switch: everything below is synchronous.
    logConfigWeightWins(this.upstreams, upstreams, this.log);
    this.config = config;
    this.upstreams = upstreams;
    this.probeTls = probeTls;
    this.serverStates.commit(config.upstreams.values());
    this.sessions.commit(storePlan);
    this.limitZones.configure(config.limitReqZones.values(), config.limitConnZones.values());
    this.manageSharedLimits(config);
    this.observability.reconfigure(config);
    if (this.role.probesHealth) {
      this.health.sync(upstreams, probeTls);
    } else {
      // Another process probes; until its state arrives, a server this reload added behind a
      // `mandatory` check is unhealthy here as there (HealthChecker.sync).
      for (const up of upstreams.values()) for (const peer of up.all()) holdUntilFirstProbe(peer, up.config.healthCheck);
    }
    this.http.commit(httpPlan);
    this.streams.commit(streamPlan);
    this.pools.keepOnly(upstreams);
    if (this.admin && config.admin) this.admin.update(config.admin);
    // TLS or the memcached settings may have changed: keys made here, or shared through another store.
    void this.manageTicketKeys(config);
    // Not saveRuntimeState(): the workers reload next and then get the whole state (cluster primary).
    void this.writeStateFile();
  }

  /**
   * Reloads from a config file (SIGHUP, `run --watch`, `sessionlb reload`), one reload at a
   * time. An invalid file changes nothing: every problem is logged and the failure counted.
   * Resolves true when the new config is in use.
   */
  reloadFromFile(file: string = this.config.file): Promise<boolean> {
    return this.fileReloads.run(file, null);
  }

  /** Reloads from the text of config file `file` (a cluster worker: the text the primary validated). */
  reloadFromText(text: string, file: string = this.config.file): Promise<boolean> {
    return this.fileReloads.run(file, text);
  }

  /**
   * The TLS sites of `config` (certificates read and checked); throws, naming each file and
   * what is wrong with it, when one does not load. Warnings (expiry, names) are logged.
   */
  private async buildTls(config: Config): Promise<Map<string, TlsSite>> {
    const built = await buildTlsSites(config.servers, this.ticketKeys);
    for (const w of built.warnings) this.log.warn({ address: w.address, server: w.server, file: w.file }, `TLS certificate: ${w.message}`);
    const problems = tlsBuildProblems(built);
    if (problems.length > 0) throw new Error(problems.join('; '));
    return built.sites;
  }

  /**
   * Makes the session ticket keys as `config` says, when this role makes them (single process,
   * cluster primary; workers get the primary's over IPC): with TLS, rotated here; and with session
   * tickets on and the memcached session store keyed by a secret (`sessionStore.hashKey` or
   * SESSIONLB_HASH_KEY), shared with every instance through memcached (src/sessions/shared-ticket-keys.ts).
   * Never rejects: memcached unavailable leaves the keys in use.
   */
  /**
   * `"shared": true` limit_req zones count in the sessionStore's memcached, through a store of
   * their own (their calls are on the request path: the sessionStore's timeout and breaker).
   */
  private manageSharedLimits(config: Config): void {
    const st = config.sessionStore;
    const wanted = st.type === 'memcached' && [...config.limitReqZones.values()].some((z) => z.shared);
    const identity = wanted ? JSON.stringify([st.servers, st.keyPrefix, st.hashKey, st.timeoutMs, st.maxFails, st.failTimeoutMs]) : null;
    if (identity === (this.sharedLimits?.identity ?? null)) return;
    void this.sharedLimits?.store.close();
    this.sharedLimits = null;
    this.localLimits.useShared(null);
    if (identity === null) return;
    const store = new MemcachedStore({ servers: st.servers, timeoutMs: st.timeoutMs, maxFails: st.maxFails, failTimeoutMs: st.failTimeoutMs, log: this.log });
    const metrics = this.observability.metrics;
    let lastLogged = 0;
    this.localLimits.useShared(new SharedBuckets({
      store,
      keyPrefix: st.keyPrefix,
      // Derived or not, every instance with the same settings has the same one: the same keys.
      secret: st.hashKey,
      onFallback: (zone, reason, err) => {
        metrics.limitSharedFallback(zone, reason);
        // At most one line every 10 s: memcached down means every limited request falls back.
        const now = Date.now();
        if (now - lastLogged < 10_000) return;
        lastLogged = now;
        this.log.warn({ zone, reason, err: err?.message }, `limit_req zone "${zone}": memcached ${reason === 'unavailable' ? 'unavailable' : reason === 'contention' ? 'contended' : 'held an invalid bucket'}; limiting in this instance alone meanwhile`);
      },
    }));
    this.sharedLimits = { identity, store };
  }

  private manageTicketKeys(config: Config): Promise<void> {
    // One change at a time (a reload does not wait for it; the next one queues behind it).
    const next = this.ticketKeyQueue.then(() => this.applyTicketKeyPlan(config));
    this.ticketKeyQueue = next;
    return next;
  }

  private async applyTicketKeyPlan(config: Config): Promise<void> {
    if (!this.role.makesTicketKeys || this.stopping) return;
    const tls = config.servers.some((vs) => vs.ssl !== null);
    const tickets = config.servers.some((vs) => vs.ssl?.sessionTickets === true);
    const st = config.sessionStore;
    const memcached = tickets && st.type === 'memcached';
    if (memcached && st.hashKeySource === 'derived' && !this.warnedDerivedTicketKeys) {
      this.warnedDerivedTicketKeys = true;
      this.log.warn('TLS ticket keys: not shared through memcached, because sessionStore has no secret key: set sessionStore.hashKey or SESSIONLB_HASH_KEY to the same secret on every instance so that a client resumes its TLS session on any instance (the keys stay this instance\'s own until then)');
    }
    const share = memcached && st.hashKeySource !== 'derived';
    const identity = share ? JSON.stringify([st.servers, st.keyPrefix, st.hashKey, st.timeoutMs, st.maxFails, st.failTimeoutMs]) : tls ? 'local' : null;
    if (identity === (this.ticketKeyPlan?.identity ?? null)) return;
    const before = this.ticketKeyPlan;
    this.ticketKeyPlan = null;
    await before?.shared?.stop();
    if (identity === null) {
      this.ticketKeys.stop();
      return;
    }
    if (!share) {
      this.ticketKeyPlan = { identity, shared: null };
      this.ticketKeys.start();
      return;
    }
    // Shared: the record decides rotation; the local timer would make keys no other instance has.
    this.ticketKeys.stop();
    const store = new MemcachedStore({
      servers: st.servers,
      // Not on any request's path: a slower answer is fine (one sync at start waits for it, bounded).
      timeoutMs: Math.max(st.timeoutMs, 500),
      maxFails: st.maxFails,
      failTimeoutMs: st.failTimeoutMs,
      log: this.log,
    });
    const shared = new SharedTicketKeys({
      store,
      recordKey: st.keyPrefix + TICKET_KEYS_RECORD,
      secret: st.hashKey,
      keys: this.ticketKeys,
      rotateMs: this.ticketKeyTiming.rotateMs,
      pollMs: this.ticketKeyTiming.pollMs,
      log: this.log,
      onResult: (result) => this.observability.metrics.tlsTicketKeySyncResult(result),
    });
    this.ticketKeyPlan = { identity, shared };
    this.log.info({ servers: st.servers, record: st.keyPrefix + TICKET_KEYS_RECORD },
      'TLS ticket keys: shared with the other sessionlb instances through memcached (encrypted with a key derived from the sessionStore secret)');
    await shared.start();
  }

  /** The files the configuration in use reads besides itself (TLS certificates and keys): `run --watch` watches them too. */
  watchedFiles(): string[] {
    const out: string[] = [];
    for (const vs of this.config.servers) for (const p of vs.ssl?.certificates ?? []) out.push(p.certificate, p.key);
    return out;
  }

  /** Reloadable: what the log line of a reload reports in use. */
  inUse(): { listen: string[]; upstreams: string[] } {
    return { listen: this.http.keys(), upstreams: [...this.upstreams.keys()] };
  }

  /** A runtime change was made (admin API): the role hears of it (a cluster primary tells its workers), and `stateFile` is written. */
  saveRuntimeState(): Promise<void> {
    this.role.runtimeChanged();
    return this.writeStateFile();
  }

  /** Queues a write of the runtime server state to `stateFile` (when set and the role keeps it). */
  private writeStateFile(): Promise<void> {
    return this.stateFile?.save(this.config.stateFile, this.upstreams, this.maintenance) ?? Promise.resolve();
  }

  /** Stops accepting, lets requests in flight finish (up to `shutdownTimeoutMs`), then closes everything. */
  async stop(timeoutMs = this.config.shutdownTimeoutMs): Promise<void> {
    this.stopping = true;
    await this.ticketKeyQueue;
    this.ticketKeys.stop();
    const sharedKeys = this.ticketKeyPlan?.shared ?? null;
    this.ticketKeyPlan = null;
    await sharedKeys?.stop();
    this.health.stop();
    const streamsStopped = this.streams.stop(timeoutMs);
    await this.http.stop(timeoutMs);
    await streamsStopped;
    this.pools.closeIdle();
    await this.stateFile?.flush();
    if (this.admin) await this.admin.close();
    await this.sessions.close();
    await this.sharedLimits?.store.close();
    await this.observability.close();
    this.log.info('sessionlb stopped');
  }

  /** `trusted`: the trusted certificate files of the https upstreams, as read. */
  private buildUpstreams(config: Config, trusted: ReadonlyMap<string, Buffer>): Map<string, Upstream> {
    const out = new Map<string, Upstream>();
    const tlsSettings = upstreamTlsSettings(config);
    for (const [name, upConfig] of config.upstreams) {
      const up = new Upstream(upConfig, this.serverStates);
      const tls = tlsSettings.get(name);
      for (const peer of up.all()) {
        const sendProxy = upConfig.servers.find((s) => s.host === peer.host && s.port === peer.port)?.sendProxy ?? null;
        peer.pool = this.pools.poolFor(upConfig, peer.host, peer.port, null, sendProxy);
        if (tls !== undefined) {
          peer.tlsPools = new Map([...tls].map(([key, settings]) => [key, this.pools.poolFor(upConfig, peer.host, peer.port, { settings, trusted })]));
        }
      }
      this.observability.attachPeers(up);
      out.set(name, up);
    }
    return out;
  }

  private affinityOf(upstream: Upstream, store: StoreSetup | undefined): Affinity | null {
    let a = this.affinities.get(upstream);
    if (a === undefined) {
      a = this.sessions.affinityFor(upstream, store);
      this.affinities.set(upstream, a);
    }
    return a;
  }

  /** The HTTP routes of `config` (none when this role binds no listener); `store`: a reload's prepared session store. */
  private routesFor(config: Config, upstreams: ReadonlyMap<string, Upstream>, store?: StoreSetup): ReadonlyMap<string, HttpRoute> {
    if (!this.role.bindsListeners) return NO_ROUTES;
    return httpRoutes(config, upstreams, this.observability, (up) => this.affinityOf(up, store), this.tlsSites,
      { decider: this.limitDecider, counts: this.observability.metrics });
  }
}
