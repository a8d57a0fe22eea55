/**
 * The cluster primary (`workers` > 1, like nginx's master process): forks the workers that
 * serve the listeners (node:cluster shares them), and keeps what must exist once:
 *
 * - active health checks: probed here only; every result is sent to every worker;
 * - the admin listener: /healthz, /status (summed over workers; the TLS certificates as the
 *   workers, which hold them, report them), /metrics (prom-client's
 *   AggregatorRegistry over the workers' registries and this one), runtime changes (PUT),
 *   applied here and sent to every worker; the stateFile;
 * - session bindings of the memory store: the MemoryStore lives here, workers reach it
 *   through IpcStore (src/runtime/ipc-store.ts) with a local cache in front;
 * - reloads (SIGHUP, --watch, `sessionlb reload` via the pidFile, which holds this pid):
 *   validated here, and every address the new config adds bound here (node:cluster binds the
 *   workers' listeners in this process) and released; then every worker switches, and only
 *   when all did does this process switch and count a success. A reload one of them cannot
 *   apply puts the others back on the config in use and counts as a failure: the config
 *   workers start from (`configText`) is always the last one that bound;
 * - SIGTERM/SIGINT: every worker drains (shutdownTimeout), then this process exits 0;
 * - a worker that dies is replaced, with a back-off so that a crash loop does not spin (also
 *   one that cannot start, e.g. its address was taken meanwhile: the others keep serving;
 *   only at first start does a worker that cannot start stop everything).
 */
import cluster, { type Worker } from 'node:cluster';
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { Config, ListenAddress } from '../config/model.js';
import { SessionLB } from './sessionlb.js';
import { clusterPrimary } from './role.js';
import { statusDocument, type CertificateStatus } from '../admin/api.js';
import { sendJson } from '../admin/server.js';
import type { EventLog } from '../observability/log.js';
import { MemoryStore } from '../sessions/memory-store.js';
import { plausibleValue } from '../sessions/store.js';
import { isOurs, peerState, snapshot, type StoreAnswer, type StoreCall, type ToPrimary, type ToWorker } from './ipc.js';
import { workerExecArgv } from '../process/heap-tuning.js';
import { bindErrorText, probeListen } from '../net/listen.js';
import { ProcessLifecycle } from '../process/lifecycle.js';
import { LimitService } from './ipc-limits.js';

export interface PrimaryOptions {
  /** The config file (reloads read it again). */
  file: string;
  /** Its text as validated at start: what workers load (they never read the file themselves). */
  configText: string;
  pretty: boolean;
  /** `run --watch`: reload the file when it changes. */
  watch: boolean;
}

/** How long /status and /metrics wait for workers' answers. */
const GATHER_TIMEOUT_MS = 2_000;
/** Longest wait before a dead worker is replaced (crash loop back-off). */
const MAX_RESPAWN_DELAY_MS = 10_000;
/** A worker that lived this long resets the back-off. */
const STABLE_MS = 30_000;
const MAX_KEY_LENGTH = 2048;
/** Longest wait for a worker to confirm a reload: one that does not is taken as failed. */
const RELOAD_WAIT_MS = 10_000;

/** How a worker took a reload: switched, refused (still on its config), exited meanwhile, or did not answer in time. */
interface ReloadOutcome {
  result: 'ok' | 'failed' | 'gone' | 'timeout';
  error: string | null;
}

/** A reload sent to a worker and not answered yet. */
interface ReloadWaiter {
  worker: number;
  text: string | null;
  done: (outcome: ReloadOutcome) => void;
}

/** Every HTTP and stream listen address of a config. */
function listenAddresses(config: Config): ListenAddress[] {
  return [...config.servers.flatMap((vs) => vs.listen), ...config.streams.flatMap((s) => s.listen)];
}

interface Gathering {
  waiting: Set<number>;
  results: Map<number, unknown>;
  done: () => void;
}

/**
 * A write to a worker that just died fails (EPIPE) after isConnected() said yes. Without a
 * callback node emits that as an 'error' event on the worker, which would kill the primary;
 * its 'exit' is handled on its own (onExit).
 */
function ignoreSendError(): void { /* the worker is gone or going: onExit replaces it */ }

function send(worker: Worker, message: ToWorker): void {
  if (worker.isConnected()) worker.send(message, undefined, undefined, ignoreSendError);
}

/**
 * /status `certificates` of a cluster: this process holds no certificate (the workers terminate
 * TLS), so the list is what the workers that answered report, each certificate once (same
 * address, server, file and notAfter). Workers on different sets (a reload under way) show both;
 * null when no worker answered (not known).
 */
function workerCertificates(answers: readonly unknown[]): CertificateStatus[] | null {
  const seen = new Map<string, CertificateStatus>();
  let answered = false;
  for (const answer of answers) {
    const list = (answer as { certificates?: unknown } | undefined)?.certificates;
    if (!Array.isArray(list)) continue;
    answered = true;
    for (const c of list as CertificateStatus[]) {
      const key = JSON.stringify([c.address, c.server, c.file, c.notAfter]);
      if (!seen.has(key)) seen.set(key, c);
    }
  }
  return answered ? [...seen.values()] : null;
}

export class ClusterPrimary {
  readonly lb: SessionLB;
  /** Signals, pid file, --watch, the way out. */
  private readonly lifecycle: ProcessLifecycle;
  private started = false;
  private readonly forkedAt = new Map<number, number>();
  /** Consecutive early deaths (a worker that lived less than STABLE_MS). */
  private crashes = 0;
  private respawnTimer: NodeJS.Timeout | null = null;
  private nextGatherId = 1;
  private readonly gatherings = new Map<number, Gathering>();

  constructor(readonly config: Config, readonly log: EventLog, private readonly options: PrimaryOptions) {
    this.lb = new SessionLB(config, {
      log,
      pretty: options.pretty,
      accessLogToStdout: false,
      configText: options.configText,
      role: clusterPrimary({
        // Health results (the checker has updated the server's state): to every worker.
        probed: (upstream, server) => {
          const peer = this.lb.upstreams.get(upstream)?.find(server);
          if (peer !== undefined) this.broadcast({ sl: 'state', peers: [peerState(upstream, peer)] });
        },
        runtimeChanged: () => queueMicrotask(() => this.broadcast({ sl: 'state', peers: snapshot(this.lb.upstreams.values()), maint: [...this.lb.maintenance] })),
        reloadPeers: { prepare: this.prepareReload, abort: this.abortReload, committed: this.reloadCommitted },
      }),
    });
    this.limits = new LimitService(this.lb.localLimits);
    this.lifecycle = new ProcessLifecycle(log);
  }

  private get stopping(): boolean {
    return this.lifecycle.stopping;
  }

  /** Starts the admin listener and health checks, then forks the workers and waits until each listens. */
  async start(): Promise<void> {
    const lb = this.lb;
    await lb.start();
    // The one set of ticket keys of the cluster: made and rotated here (lb.start: shared through
    // memcached with the other instances when configured), given to every worker.
    lb.ticketKeys.onChange(() => this.broadcast(this.ticketKeysMessage()));
    this.registerAdmin();
    // The pid file and signals before the workers start: a signal during startup is not fatal.
    this.lifecycle.writePidFile(this.config.pidFile);
    let started: () => void = () => undefined;
    const ready = new Promise<void>((resolve) => { started = resolve; });
    this.lifecycle.onSignals({
      reload: () => {
        this.log.info({ file: this.options.file }, 'SIGHUP: reloading the configuration');
        void ready.then(() => this.reloadFromFile(this.options.file));
      },
      reopen: () => {
        this.log.info('SIGUSR1: workers reopen the access log');
        this.broadcast({ sl: 'reopen' });
      },
      stop: (signal) => this.stop(signal),
    });

    cluster.on('message', this.onMessage);
    cluster.on('exit', this.onExit);
    // Workers accept from the shared listening socket themselves, as nginx's workers do, instead of
    // node's default on Linux where the primary accepts every connection and hands it over by IPC:
    // with a new connection per request that hand-over made 2 workers slower than 1 (5.7k vs 10.1k req/s).
    // NODE_CLUSTER_SCHED_POLICY=rr restores node's default.
    if (process.env.NODE_CLUSTER_SCHED_POLICY === undefined) cluster.schedulingPolicy = cluster.SCHED_NONE;
    cluster.setupPrimary({ execArgv: workerExecArgv() });
    const n = this.config.workers;
    const forks: Array<Promise<void>> = [];
    for (let i = 0; i < n; i++) forks.push(this.fork());
    // A worker that cannot start makes onExit stop everything (exit code 1); wait for that here.
    await Promise.all(forks).catch(() => new Promise<never>(() => undefined));
    if (this.stopping) return;
    this.started = true;
    started();
    if (this.options.watch) this.lifecycle.watchConfig(this.options.file, this);
    this.log.info({ workers: n, pids: this.workers().map((w) => w.process.pid) }, `sessionlb primary ${process.pid}: ${n} workers started`);
  }

  /** Live workers (cluster.workers may still list a worker when its 'exit' event fires). */
  workers(): Worker[] {
    return [...this.live.values()];
  }

  private readonly live = new Map<number, Worker>();
  /** limit_req / limit_conn decisions for the workers, over this process's zones. */
  private readonly limits: LimitService;
  /** Workers that listen (asked by /status and /metrics; one still starting is not waited for). */
  private readonly listening = new Set<number>();

  private fork(): Promise<void> {
    const worker = cluster.fork();
    // Errors of the IPC channel (a write racing the worker's death) must not kill the primary.
    worker.on('error', (err: Error) => this.log.warn({ worker: worker.id, err: err.message }, 'worker channel error'));
    this.live.set(worker.id, worker);
    this.forkedAt.set(worker.id, Date.now());
    return new Promise((resolve, reject) => {
      const onMessage = (message: unknown): void => {
        if (isOurs<ToPrimary>(message) && message.sl === 'listening') {
          worker.off('message', onMessage);
          worker.off('exit', onExit);
          resolve();
        }
      };
      const onExit = (code: number | null, signal: string | null): void => {
        worker.off('message', onMessage);
        reject(new Error(`worker ${worker.id} exited before listening (code ${code}, signal ${signal})`));
      };
      worker.on('message', onMessage);
      worker.on('exit', onExit);
    });
  }

  /** The ticket keys for the workers (a secret: sent over the cluster channel only, never logged). */
  private ticketKeysMessage(): ToWorker {
    return { sl: 'tls-keys', keys: this.lb.ticketKeys.keys().map((k) => k.toString('base64')) };
  }

  private broadcast(message: ToWorker): void {
    for (const w of this.workers()) send(w, message);
  }

  /**
   * Validates the file here, has every worker switch to it, then switches here (see
   * ReloadPeers); counted once, here (reloads in /status and /metrics).
   */
  watchedFiles(): string[] {
    return this.lb.watchedFiles();
  }

  reloadFromFile(file: string): Promise<boolean> {
    return this.lb.reloadFromFile(file);
  }

  private nextReloadId = 1;
  /** Reloads sent to workers and not answered yet, by id. */
  private readonly reloadWaiters = new Map<number, ReloadWaiter>();
  /** The config text each live worker runs: the one it started from, then each it switched to. */
  private readonly running = new Map<number, string | null>();

  /** Has `worker` switch to `text`; resolves with how it went (never rejects). */
  private reloadWorker(worker: Worker, text: string | null): Promise<ReloadOutcome> {
    return new Promise((resolve) => {
      if (!worker.isConnected() || !this.live.has(worker.id)) {
        resolve({ result: 'gone', error: null });
        return;
      }
      const id = this.nextReloadId++;
      const timer = setTimeout(() => done({ result: 'timeout', error: `no answer within ${RELOAD_WAIT_MS} ms` }), RELOAD_WAIT_MS);
      const done = (outcome: ReloadOutcome): void => {
        if (!this.reloadWaiters.delete(id)) return;
        clearTimeout(timer);
        if (outcome.result === 'ok') this.running.set(worker.id, text);
        resolve(outcome);
      };
      this.reloadWaiters.set(id, { worker: worker.id, text, done });
      send(worker, { sl: 'reload', id, text });
    });
  }

  /**
   * Puts `worker` on `text` (the config in use here) after a reload it took was undone, or when
   * it started from an older one. A worker that cannot (or does not answer) would serve a config
   * no other process runs: it is stopped, and replaced from the config in use.
   */
  private async realign(worker: Worker, text: string | null, why: string): Promise<void> {
    // A worker takes reloads in the order sent: when the last one sent to it (and not answered
    // yet) is this text already, its sender sees to the outcome.
    let last: ReloadWaiter | undefined;
    for (const w of this.reloadWaiters.values()) if (w.worker === worker.id) last = w;
    if (last !== undefined && last.text === text) return;
    const outcome = await this.reloadWorker(worker, text);
    if (outcome.result === 'ok' || outcome.result === 'gone') return;
    this.log.error({ worker: worker.id, pid: worker.process.pid, why, err: outcome.error },
      `worker ${worker.id} (pid ${worker.process.pid}) could not return to the configuration in use (${outcome.error ?? outcome.result}); replacing it`);
    this.retire(worker);
  }

  /** Stops a worker (drains; killed if it does not exit in time); onExit replaces it. */
  private retire(worker: Worker): void {
    send(worker, { sl: 'stop' });
    const killer = setTimeout(() => {
      if (this.live.get(worker.id) === worker) worker.process.kill('SIGKILL');
    }, this.lb.config.shutdownTimeoutMs + 5_000);
    killer.unref();
    worker.once('exit', () => clearTimeout(killer));
  }

  /**
   * ReloadPeers.prepare: the addresses the new config adds must be bindable here
   * (see checkNewAddresses), then every listening worker switches. When one refuses or does not
   * answer, the others go back to the config in use and the reload is rejected.
   */
  private readonly prepareReload = async (config: Config, text: string): Promise<void> => {
    await this.checkNewAddresses(config);
    const workers = this.workers().filter((w) => this.listening.has(w.id) && w.isConnected());
    const outcomes = await Promise.all(workers.map((w) => this.reloadWorker(w, text)));
    const failed = workers.flatMap((w, i) => {
      const o = outcomes[i]!;
      return o.result === 'failed' || o.result === 'timeout' ? [`worker ${w.id} (pid ${w.process.pid}): ${o.error ?? o.result}`] : [];
    });
    if (failed.length === 0) return;
    // Workers that switched (and any that did not answer: its reload may still land) go back.
    const previous = this.lb.configText;
    await Promise.all(workers.filter((_w, i) => outcomes[i]!.result !== 'failed' && outcomes[i]!.result !== 'gone')
      .map((w) => this.realign(w, previous, 'reload undone')));
    this.broadcast({ sl: 'state', peers: snapshot(this.lb.upstreams.values()), maint: [...this.lb.maintenance] });
    throw new Error(`the workers could not apply it (${failed.join('; ')}); every worker is back on the previous configuration`);
  };

  /** ReloadPeers.abort: this process could not switch after the workers did; they go back. */
  private readonly abortReload = async (): Promise<void> => {
    const text = this.lb.configText;
    await Promise.all(this.workers().filter((w) => this.listening.has(w.id) && this.running.get(w.id) !== text)
      .map((w) => this.realign(w, text, 'reload undone')));
  };

  /**
   * ReloadPeers.committed: every worker gets the state of the servers as of the switch
   * (those the reload added included), and any worker that started from the previous config while
   * the reload was under way switches now.
   */
  private readonly reloadCommitted = async (): Promise<void> => {
    this.broadcast({ sl: 'state', peers: snapshot(this.lb.upstreams.values()), maint: [...this.lb.maintenance] });
    const text = this.lb.configText;
    await Promise.all(this.workers().filter((w) => this.listening.has(w.id) && this.running.get(w.id) !== text)
      .map((w) => this.realign(w, text, 'started from the previous configuration')));
  };

  /**
   * Binds here, and releases, every HTTP and stream address the new config adds. Workers listen
   * through node:cluster, which binds their addresses in this process: one this process cannot
   * bind now, no worker can, and the reload is rejected before any worker is told about it.
   * The socket cannot be kept until the workers bind (node:cluster's own bind here would then fail
   * with EADDRINUSE): in the moment between, another process may still take the address; then a
   * worker refuses the reload and prepareReload undoes it.
   */
  private async checkNewAddresses(config: Config): Promise<void> {
    const current = new Set(listenAddresses(this.lb.config).map((l) => l.key));
    const tried = new Set<string>();
    for (const l of listenAddresses(config)) {
      if (current.has(l.key) || tried.has(l.key) || l.port === 0) continue;
      tried.add(l.key);
      try {
        await probeListen(l.host, l.port);
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        throw new Error(`cannot listen on ${l.key}: ${bindErrorText(e.code) ?? e.message} (${e.code ?? 'error'})`);
      }
    }
  }

  private readonly onMessage = (worker: Worker, message: unknown): void => {
    if (!isOurs<ToPrimary>(message)) return;
    if (this.stopping && (message.sl === 'config-req' || message.sl === 'hello' || message.sl === 'listening')) {
      // A worker still starting may have missed the broadcast `stop`: a message that reaches it
      // before it listens for messages is lost. Tell it again now that it asks for something.
      send(worker, { sl: 'stop' });
      return;
    }
    switch (message.sl) {
      case 'config-req':
        // The config in use (the last one that bound), whatever the file says now.
        this.running.set(worker.id, this.lb.configText);
        send(worker, { sl: 'config', text: this.lb.configText });
        return;
      case 'hello':
        send(worker, this.ticketKeysMessage());
        send(worker, { sl: 'state', peers: snapshot(this.lb.upstreams.values()), maint: [...this.lb.maintenance] });
        return;
      case 'listening':
        this.listening.add(worker.id);
        // Started from a config that a reload replaced meanwhile (reloadCommitted had not seen it listen).
        if (this.started && this.running.has(worker.id) && this.running.get(worker.id) !== this.lb.configText) {
          void this.realign(worker, this.lb.configText, 'started from the previous configuration');
        }
        return;
      case 'store':
        this.storeCalls(worker, message.ops);
        return;
      case 'limit':
      case 'limit-free':
        this.limits.serve(worker.id, message, (answer) => {
          if (!worker.isConnected()) return false;
          send(worker, answer);
          return true;
        });
        return;
      case 'reloaded': {
        const waiter = this.reloadWaiters.get(message.id);
        if (waiter === undefined || waiter.worker !== worker.id) return; // answered too late: taken as failed already
        // A worker back on (or caught up with) the config in use gets the state of its servers now;
        // during a reload this process switches last, and reloadCommitted sends it to every worker.
        if (message.ok) {
          if (waiter.text === this.lb.configText) send(worker, { sl: 'state', peers: snapshot(this.lb.upstreams.values()), maint: [...this.lb.maintenance] });
        } else {
          this.log.error({ worker: worker.id, pid: worker.process.pid, err: message.error },
            `worker ${worker.id} could not apply the configuration: ${message.error ?? 'unknown error'}`);
        }
        waiter.done({ result: message.ok ? 'ok' : 'failed', error: message.error });
        return;
      }
      case 'status-res':
      case 'metrics-res': {
        const g = this.gatherings.get(message.id);
        if (g === undefined || !g.waiting.delete(worker.id)) return;
        g.results.set(worker.id, message.sl === 'status-res' ? message.doc : message.metrics);
        if (g.waiting.size === 0) g.done();
        return;
      }
      default:
        return;
    }
  };

  /** Binding-store calls of a worker, answered from the MemoryStore owned here (one answer message per batch). */
  private storeCalls(worker: Worker, ops: unknown): void {
    if (!Array.isArray(ops)) return;
    const store = this.lb.sessions.store;
    const memory = store instanceof MemoryStore ? store : null;
    const now = Date.now();
    const answers: StoreAnswer[] = [];
    for (const raw of ops as unknown[]) {
      if (!Array.isArray(raw)) continue;
      const [id, op, key, value, ttl] = raw as StoreCall;
      if (typeof id !== 'number') continue;
      if (memory === null || typeof key !== 'string' || key.length === 0 || key.length > MAX_KEY_LENGTH) {
        answers.push([id, op === 'get' ? null : false]);
        continue;
      }
      const ttlMs = typeof ttl === 'number' && Number.isFinite(ttl) && ttl > 0 ? ttl * 1000 : 0;
      switch (op) {
        case 'get':
          answers.push([id, memory.getSync(key, now)]);
          break;
        case 'set':
          if (plausibleValue(value) && ttlMs > 0) memory.setSync(key, value, ttlMs, now);
          answers.push([id, true]);
          break;
        case 'touch': {
          // The memory store answers synchronously: a present key is found and extended.
          const found = memory.getSync(key, now) !== null;
          if (found && ttlMs > 0) void memory.touch(key, ttl);
          answers.push([id, found]);
          break;
        }
        case 'delete':
          memory.deleteSync(key);
          answers.push([id, true]);
          break;
        default:
          answers.push([id, false]);
      }
    }
    send(worker, { sl: 'store-res', r: answers });
  }

  /** Asks every worker; resolves with the answers that came within GATHER_TIMEOUT_MS (worker id -> answer). */
  private gather(kind: 'status-req' | 'metrics-req'): Promise<Map<number, unknown>> {
    const id = this.nextGatherId++;
    return new Promise((resolve) => {
      const g: Gathering = { waiting: new Set(), results: new Map(), done: () => undefined };
      const timer = setTimeout(() => g.done(), GATHER_TIMEOUT_MS);
      g.done = () => {
        clearTimeout(timer);
        this.gatherings.delete(id);
        resolve(g.results);
      };
      this.gatherings.set(id, g);
      for (const w of this.workers()) {
        if (!w.isConnected() || !this.listening.has(w.id)) continue;
        g.waiting.add(w.id);
        send(w, { sl: kind, id });
      }
      if (g.waiting.size === 0) g.done();
    });
  }

  /** /status: this process's document (states, health, sessions bound) with the workers' counters summed in. */
  async status(): Promise<Record<string, unknown>> {
    const docs = await this.gather('status-req');
    const doc = statusDocument(this.lb);
    const workers: Array<Record<string, unknown>> = [];
    type ServerDoc = Record<string, unknown> & { address: string };
    type UpDoc = { servers: ServerDoc[]; sticky: Record<string, number> | null };
    const ups = doc.upstreams as Record<string, UpDoc>;
    for (const up of Object.values(ups)) {
      for (const s of up.servers) { s.requests = 0; s.failures = 0; s.active = 0; s.fails = 0; }
    }
    for (const w of this.workers()) {
      const wd = docs.get(w.id) as { upstreams?: Record<string, UpDoc> } | undefined;
      let requests = 0;
      for (const [name, wup] of Object.entries(wd?.upstreams ?? {})) {
        const up = ups[name];
        for (const ws of wup.servers) {
          requests += Number(ws.requests) || 0;
          const s = up?.servers.find((x) => x.address === ws.address);
          if (s === undefined) continue;
          for (const k of ['requests', 'failures', 'active', 'fails'] as const) s[k] = (Number(s[k]) || 0) + (Number(ws[k]) || 0);
        }
        if (up?.sticky && wup.sticky) {
          for (const k of ['lookups', 'hits', 'learned', 'rebinds'] as const) up.sticky[k] = (up.sticky[k] ?? 0) + (wup.sticky[k] ?? 0);
        }
      }
      workers.push({ id: w.id, pid: w.process.pid ?? null, answered: wd !== undefined, requests });
    }
    doc.workers = workers;
    doc.certificates = workerCertificates(this.workers().map((w) => docs.get(w.id)));
    return doc;
  }

  /** /metrics: AggregatorRegistry over the workers' metrics and this process's (health checks, reloads, server state). */
  async metrics(): Promise<{ text: string; contentType: string }> {
    const own = await this.lb.observability.metrics.json();
    const answers = await this.gather('metrics-req');
    const all: Array<MetricObjectWithValues<MetricValue<string>>[]> = [own];
    for (const m of answers.values()) if (Array.isArray(m)) all.push(m as MetricObjectWithValues<MetricValue<string>>[]);
    const registry = AggregatorRegistry.aggregate(all);
    return { text: await registry.metrics(), contentType: registry.contentType };
  }

  private registerAdmin(): void {
    const admin = this.lb.adminServer;
    if (admin === null) return;
    // Same paths as a single process; these replace the single-process handlers.
    admin.route('GET /healthz', (_req, res) => {
      // Ready as soon as a worker listens (the listener then takes connections), until shutdown.
      const ok = this.listening.size > 0 && !this.stopping;
      const text = ok ? 'ok\n' : this.stopping ? 'stopping\n' : 'starting\n';
      res.writeHead(ok ? 200 : 503, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(text) });
      res.end(text);
    }, { public: true });
    admin.route('GET /status', (_req, res) => {
      this.status().then((doc) => sendJson(res, 200, doc), (err: unknown) => sendJson(res, 500, { error: (err as Error).message }));
    });
    admin.route('GET /metrics', (_req, res) => {
      this.metrics().then(({ text, contentType }) => {
        res.writeHead(200, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-store' });
        res.end(text);
      }, (err: unknown) => {
        res.writeHead(500, { 'Content-Type': 'text/plain' });
        res.end(`metrics collection failed: ${(err as Error).message}\n`);
      });
    });
  }

  private readonly onExit = (worker: Worker, code: number | null, signal: string | null): void => {
    const lived = Date.now() - (this.forkedAt.get(worker.id) ?? 0);
    this.forkedAt.delete(worker.id);
    this.live.delete(worker.id);
    this.listening.delete(worker.id);
    this.limits.workerGone(worker.id);
    this.running.delete(worker.id);
    for (const w of [...this.reloadWaiters.values()]) if (w.worker === worker.id) w.done({ result: 'gone', error: null });
    for (const g of this.gatherings.values()) if (g.waiting.delete(worker.id) && g.waiting.size === 0) g.done();
    if (this.stopping) {
      if (this.workers().length === 0) this.allStopped?.();
      return;
    }
    if (!this.started) {
      // A worker that cannot start (it printed why): stop like a single process would.
      this.log.error({ worker: worker.id, pid: worker.process.pid, code, signal }, 'a worker failed to start; stopping');
      this.stop('worker failed to start', 1);
      return;
    }
    this.crashes = lived >= STABLE_MS ? 1 : this.crashes + 1;
    const delay = Math.min(MAX_RESPAWN_DELAY_MS, this.crashes <= 1 ? 0 : 100 * 2 ** (this.crashes - 2));
    this.log.error({ worker: worker.id, pid: worker.process.pid, code, signal, livedMs: lived, restartInMs: delay },
      `worker ${worker.id} (pid ${worker.process.pid}) exited (${signal ?? `code ${code}`}); starting a new one${delay > 0 ? ` in ${delay} ms` : ''}`);
    this.respawnTimer = setTimeout(() => {
      this.respawnTimer = null;
      if (this.stopping) return;
      this.fork().catch((err: unknown) => this.log.error({ err: (err as Error).message }, 'replacement worker failed'));
    }, delay);
  };

  private allStopped: (() => void) | null = null;

  /** Drains every worker (shutdownTimeout), stops here, exits. */
  stop(signal: string, exitCode = 0): void {
    this.lifecycle.shutdown(async () => {
      if (this.respawnTimer !== null) clearTimeout(this.respawnTimer);
      const timeoutMs = this.config.shutdownTimeoutMs;
      this.log.info({ signal, timeoutMs, workers: this.workers().length }, 'shutting down: workers finish requests in flight');
      const workersDone = new Promise<void>((resolve) => {
        if (this.workers().length === 0) resolve();
        else this.allStopped = resolve;
      });
      this.broadcast({ sl: 'stop' });
      // A worker that does not finish in time (it closes its own connections at shutdownTimeout) is killed.
      const killer = setTimeout(() => {
        for (const w of this.workers()) {
          this.log.warn({ worker: w.id, pid: w.process.pid }, 'worker did not stop in time; killing it');
          w.process.kill('SIGKILL');
        }
      }, timeoutMs + 5_000);
      await Promise.all([workersDone, this.lb.stop(timeoutMs)]);
      clearTimeout(killer);
      this.log.info('sessionlb primary stopped');
    }, exitCode);
  }
}
