/**
 * Prometheus metrics (`GET /metrics` on the admin listener), one prom-client Registry
 * per SessionLB so that several instances in one process never share series.
 *
 * Hot path: counters and histograms that move per request are plain numbers in "cells"
 * (`CounterCell`, `HistogramCell`) resolved once per config and kept on the route and
 * peer objects; a request does `cell.value++` / `histogram.observe(s)` and nothing else
 * (no label objects, no hashing, no string lookups). prom-client reads the cells only when
 * scraped. Cells live in their family for the life of the process, keyed by label values,
 * so a reload that rebuilds routes and peers keeps counting from where it was.
 *
 * Gauges about servers (up, state, weight, active connections) are derived at scrape time
 * from the live Upstream/Peer objects.
 *
 * Label values are bounded by the configuration: virtual server names, upstream names,
 * server addresses, status classes and small fixed reason lists. Never a path, a client
 * address or a session id.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics, type Metric, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { Peer } from '../balancer/peer.js';
import type { Upstream } from '../balancer/upstream.js';
import type { FailureKind } from '../net/errors.js';

/** Request and upstream response times: 1 ms .. 30 s. */
export const DURATION_BUCKETS: readonly number[] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Session store calls: 100 us .. 1 s (a store call is bounded by `sessionStore.timeout`). */
export const STORE_BUCKETS: readonly number[] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];

/** `code` label values; index = status class - 1. */
export const CODE_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const;

/** Index into CODE_CLASSES for an HTTP status (499, the client closed, is 4xx). */
export function codeIndex(status: number): number {
  const c = (status / 100) | 0;
  return c < 1 ? 0 : c > 5 ? 4 : c - 1;
}

/**
 * Why an attempt on an upstream server failed (`sessionlb_upstream_failures_total{reason}`):
 * the transport's failure kinds, plus responses that count as failures under
 * `nextUpstream.on` (`http_5xx` for 500/502/503/504, `http_429`).
 */
export type FailureReason = Exclude<FailureKind, 'local'> | 'http_5xx' | 'http_429';
export const FAILURE_REASONS: readonly FailureReason[] = ['refused', 'timeout', 'reset', 'error', 'invalid_header', 'http_5xx', 'http_429'];

/** Why a request went on to the next server (`sessionlb_upstream_retries_total{reason}`): a failure, or a 403/404 under `nextUpstream.on`. */
export type RetryReason = FailureReason | 'http_403' | 'http_404';
export const RETRY_REASONS: readonly RetryReason[] = [...FAILURE_REASONS, 'http_403', 'http_404'];

/** The retry/failure reason for an upstream status that `nextUpstream.on` acted on. */
export function statusReason(status: number): RetryReason {
  if (status === 403) return 'http_403';
  if (status === 404) return 'http_404';
  if (status === 429) return 'http_429';
  return 'http_5xx';
}

/** Plain counters the sessions code keeps per sticky upstream (sessions/affinity.ts AffinityStats), read at scrape time. */
export interface StickyCounters {
  /** local_hit, store_hit, miss, invalid_id, store_error */
  readonly lookups: Readonly<Record<string, number>>;
  /** down, failed, unhealthy, maint, maxconns, removed */
  readonly rebinds: Readonly<Record<string, number>>;
}

/** Session store operations (`sessionlb_session_store_seconds{op}`). */
export const STORE_OP_NAMES = ['get', 'set', 'touch', 'delete'] as const;
export type StoreOpName = typeof STORE_OP_NAMES[number];

/** Server states as Peer.status() names them (`sessionlb_upstream_server_state{state}`). */
export const SERVER_STATES = ['up', 'unhealthy', 'failed', 'drain', 'maint', 'down'] as const;

type Labels = Readonly<Record<string, string>>;

/** One counter series: a plain number the hot path increments. */
export class CounterCell {
  value = 0;
  constructor(readonly labels: Labels) {}
}

/** One histogram series: per-bucket counts (not cumulative), sum and count. */
export class HistogramCell {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(readonly labels: Labels, readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length);
  }

  observe(value: number): void {
    this.sum += value;
    this.count++;
    const bounds = this.bounds;
    for (let i = 0; i < bounds.length; i++) {
      if (value <= bounds[i]!) {
        this.counts[i]!++;
        return;
      }
    }
  }
}

interface ExportedValue {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
}

/**
 * A metric family made of cells, registered in a prom-client Registry as a custom metric
 * (prom-client only calls `get()` on it). Cells are created at config time by label values.
 */
abstract class CellFamily<C extends CounterCell | HistogramCell> {
  readonly aggregator = 'sum' as const;
  protected readonly cells = new Map<string, C>();

  constructor(readonly name: string, readonly help: string, readonly labelNames: readonly string[]) {}

  /** The cell for these label values (in `labelNames` order), created at 0 the first time. */
  cell(...values: string[]): C {
    const key = values.join('\u0000');
    let c = this.cells.get(key);
    if (c === undefined) {
      const labels: Record<string, string> = {};
      this.labelNames.forEach((n, i) => { labels[n] = values[i] ?? ''; });
      c = this.make(labels);
      this.cells.set(key, c);
    }
    return c;
  }

  protected abstract make(labels: Labels): C;
  abstract get(): Promise<{ name: string; help: string; type: string; aggregator: 'sum'; values: ExportedValue[] }>;

  reset(): void {
    for (const c of this.cells.values()) {
      if (c instanceof CounterCell) c.value = 0;
      else { c.counts.fill(0); c.sum = 0; c.count = 0; }
    }
  }
}

export class CounterFamily extends CellFamily<CounterCell> {
  protected make(labels: Labels): CounterCell {
    return new CounterCell(labels);
  }

  async get(): Promise<{ name: string; help: string; type: string; aggregator: 'sum'; values: ExportedValue[] }> {
    const values: ExportedValue[] = [];
    for (const c of this.cells.values()) values.push({ value: c.value, labels: { ...c.labels } });
    return { name: this.name, help: this.help, type: 'counter', aggregator: this.aggregator, values };
  }
}

export class HistogramFamily extends CellFamily<HistogramCell> {
  constructor(name: string, help: string, labelNames: readonly string[], readonly bounds: readonly number[]) {
    super(name, help, labelNames);
  }

  protected make(labels: Labels): HistogramCell {
    return new HistogramCell(labels, this.bounds);
  }

  async get(): Promise<{ name: string; help: string; type: string; aggregator: 'sum'; values: ExportedValue[] }> {
    const values: ExportedValue[] = [];
    const bucket = `${this.name}_bucket`;
    for (const c of this.cells.values()) {
      let acc = 0;
      for (let i = 0; i < this.bounds.length; i++) {
        acc += c.counts[i]!;
        values.push({ value: acc, labels: { ...c.labels, le: this.bounds[i]! }, metricName: bucket });
      }
      values.push({ value: c.count, labels: { ...c.labels, le: '+Inf' }, metricName: bucket });
      values.push({ value: c.sum, labels: { ...c.labels }, metricName: `${this.name}_sum` });
      values.push({ value: c.count, labels: { ...c.labels }, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: 'histogram', aggregator: this.aggregator, values };
  }
}

/** Per (virtual server, upstream): what a finished client request adds. Kept on the Route. */
export class RouteMetrics {
  constructor(
    readonly requests: readonly CounterCell[],
    readonly duration: HistogramCell,
    readonly upstream: UpstreamMetrics,
  ) {}

  /** One client request is over: its final status (499 when the client left first) and total time. */
  done(status: number, seconds: number): void {
    this.requests[codeIndex(status)]!.value++;
    this.duration.observe(seconds);
  }
}

/** Per upstream group: retries. Reached from the Route. */
export class UpstreamMetrics {
  constructor(private readonly retries: readonly CounterCell[]) {}

  /** The request goes on to another server. */
  retry(reason: RetryReason): void {
    this.retries[RETRY_REASONS.indexOf(reason)]!.value++;
  }
}

/** Per upstream server: attempts by status class, response time, failures by reason. Kept on the Peer. */
export class PeerMetrics {
  constructor(
    private readonly responses: readonly CounterCell[],
    private readonly seconds: HistogramCell,
    private readonly failures: readonly CounterCell[],
  ) {}

  /** One attempt is over with this (upstream) status; connection failures count as the 502/504 that nginx logs for them. */
  attempt(status: number, seconds: number): void {
    this.responses[codeIndex(status)]!.value++;
    this.seconds.observe(seconds);
  }

  failure(reason: FailureReason): void {
    this.failures[FAILURE_REASONS.indexOf(reason)]!.value++;
  }
}

/** Session store calls, by operation (`onStoreOp` matches the sessions code's StoreObserver). */
export class StoreMetrics {
  private readonly seconds: HistogramCell[];
  private readonly errors: CounterCell[];

  constructor(secondsFamily: HistogramFamily, errorsFamily: CounterFamily) {
    this.seconds = STORE_OP_NAMES.map((op) => secondsFamily.cell(op));
    this.errors = STORE_OP_NAMES.map((op) => errorsFamily.cell(op));
  }

  onStoreOp(op: StoreOpName, seconds: number, failed: boolean): void {
    const i = STORE_OP_NAMES.indexOf(op);
    if (i < 0) return;
    this.seconds[i]!.observe(seconds);
    if (failed) this.errors[i]!.value++;
  }
}

let processMetrics: Registry | null = null;
/**
 * prom-client's default process metrics (CPU, memory, event loop lag, GC, handles) describe
 * the process, not one balancer: collected once per process (their event-loop monitor is
 * not started again for every SessionLB a test creates) and merged into every scrape.
 */
export function processRegistry(): Registry {
  if (processMetrics === null) {
    processMetrics = new Registry();
    collectDefaultMetrics({ register: processMetrics });
  }
  return processMetrics;
}

/** What the metrics read at scrape time from the running balancer. */
export interface MetricsSource {
  upstreams(): Iterable<Upstream>;
  /** Open client connections on every listener. */
  downstreamConnections(): Promise<number>;
  /** Number of session store servers whose circuit breaker is open now (0 without a store). */
  storeCircuitOpen(): number;
  /** Sticky counters per upstream (those with `sticky`; kept across reloads). */
  stickyStats(): Iterable<[string, StickyCounters]>;
  /** Reloads from the config file so far. */
  reloads(): { success: number; failure: number };
  /** When the configuration in use was loaded (start or last successful reload), ms since epoch. */
  lastReloadSuccess(): number;
  /** The TLS certificates in use: virtual server, certificate file, notAfter (ms since epoch). */
  tlsCertificates?(): Iterable<{ server: string; certificateFile: string; notAfter: number }>;
  /** The limit zones this process holds (a cluster worker's are its primary's: none here). */
  limitZones?(): Iterable<{ zone: string; type: 'req' | 'conn'; keys: number; evicted: number; allocationFailures: number }>;
}

export class Metrics {
  readonly registry = new Registry();

  readonly httpRequests = new CounterFamily('sessionlb_http_requests_total',
    'Client requests by virtual server (first server name, "_" without one), upstream and status class', ['server', 'upstream', 'code']);
  readonly httpDuration = new HistogramFamily('sessionlb_http_request_duration_seconds',
    'Client request time, first byte read to last byte sent (nginx $request_time)', ['server', 'upstream'], DURATION_BUCKETS);
  readonly upstreamRequests = new CounterFamily('sessionlb_upstream_requests_total',
    'Attempts on upstream servers by status class (a failed connection counts as the 502/504 nginx logs for it)', ['upstream', 'server', 'code']);
  readonly upstreamSeconds = new HistogramFamily('sessionlb_upstream_response_seconds',
    'Upstream response time per attempt, until the response header (nginx $upstream_response_time as logged)', ['upstream', 'server'], DURATION_BUCKETS);
  readonly retries = new CounterFamily('sessionlb_upstream_retries_total',
    'Requests passed to the next server (nginx proxy_next_upstream), by reason', ['upstream', 'reason']);
  readonly failures = new CounterFamily('sessionlb_upstream_failures_total',
    'Failed attempts on upstream servers, by reason (refused, timeout, reset, error, invalid_header, http_5xx, http_429)', ['upstream', 'server', 'reason']);
  readonly healthChecks = new CounterFamily('sessionlb_health_checks_total',
    'Active health probes by result', ['upstream', 'server', 'result']);
  readonly storeSeconds = new HistogramFamily('sessionlb_session_store_seconds',
    'Session store call time by operation', ['op'], STORE_BUCKETS);
  readonly storeErrors = new CounterFamily('sessionlb_session_store_errors_total',
    'Failed session store calls (errors and timeouts) by operation', ['op']);
  readonly localErrors = new CounterFamily('sessionlb_local_errors_total',
    'Errors of this host\'s resources (EMFILE, ENFILE, ENOBUFS, EADDRNOTAVAIL, ENOMEM), never counted against a server, by code and operation (accept, connect)', ['code', 'operation']);
  readonly tempFiles = new CounterFamily('sessionlb_temp_files_total',
    'Bodies that outgrew their memory buffer and went to a temp file (proxyRequestBuffering, proxyBuffering), by direction (request, response)', ['direction']);
  readonly tlsHandshakes = new CounterFamily('sessionlb_tls_handshakes_total',
    'Completed TLS handshakes on ssl addresses, by virtual server (chosen by SNI), protocol and whether the session was resumed', ['server', 'protocol', 'resumed']);
  readonly tlsHandshakeErrors = new CounterFamily('sessionlb_tls_handshake_errors_total',
    'Failed TLS handshakes by reason (protocol, cipher, not_tls, certificate, reset, timeout, other)', ['reason']);
  readonly proxyProtocolErrors = new CounterFamily('sessionlb_proxy_protocol_errors_total',
    'Connections on proxy_protocol listen addresses closed for their PROXY header, by reason (not_allowed, missing, malformed, timeout, closed)', ['reason']);
  readonly tlsTicketKeySync = new CounterFamily('sessionlb_tls_ticket_key_sync_total',
    'Syncs of the TLS session ticket keys through memcached by result (adopted, published, rotated, rejected, store_error, local_rotation)', ['result']);
  readonly limitReqs = new CounterFamily('sessionlb_limit_req_total',
    'Requests through limit_req by zone and outcome (nginx $limit_req_status: passed, delayed, rejected, delayed_dry_run, rejected_dry_run)', ['zone', 'status']);
  readonly limitConns = new CounterFamily('sessionlb_limit_conn_total',
    'Requests through limit_conn by zone and outcome (nginx $limit_conn_status: passed, rejected, rejected_dry_run)', ['zone', 'status']);
  readonly limitSharedFallbacks = new CounterFamily('sessionlb_limit_req_shared_fallbacks_total',
    'limit_req / limit_conn decisions taken apart from the others, by zone and reason: this instance alone for a shared zone (unavailable: memcached failed or its breaker is open; contention: other instances kept writing the bucket; invalid: a bucket that does not parse), or this worker alone (primary: the cluster primary did not answer)', ['zone', 'reason']);
  readonly reloads: Counter<'result'>;
  readonly lastReload: Gauge;
  readonly store: StoreMetrics;

  constructor(private readonly source: MetricsSource) {
    const r = this.registry;
    for (const f of [this.httpRequests, this.httpDuration, this.upstreamRequests, this.upstreamSeconds, this.retries,
      this.failures, this.healthChecks, this.storeSeconds, this.storeErrors, this.localErrors, this.tempFiles, this.tlsHandshakes, this.tlsHandshakeErrors, this.tlsTicketKeySync, this.proxyProtocolErrors,
      this.limitReqs, this.limitConns, this.limitSharedFallbacks]) {
      // prom-client's Registry takes any object with name/get(); its type only lists its own classes.
      r.registerMetric(f as unknown as Metric);
    }
    this.store = new StoreMetrics(this.storeSeconds, this.storeErrors);

    const src = this.source;
    new Gauge({
      name: 'sessionlb_tls_certificate_expiry_timestamp_seconds',
      help: 'When each TLS certificate in use expires (notAfter, Unix time), by virtual server and certificate file',
      labelNames: ['server', 'certificate'], registers: [r],
      // Every cluster worker reports the same certificates: merged by min, not summed.
      aggregator: 'min',
      collect(): void {
        this.reset();
        for (const c of src.tlsCertificates?.() ?? []) this.set({ server: c.server, certificate: c.certificateFile }, Math.floor(c.notAfter / 1000));
      },
    });
    new Gauge({
      name: 'sessionlb_upstream_server_up', help: '1 when the server takes traffic (state up or drain), else 0',
      labelNames: ['upstream', 'server'], registers: [r],
      collect(): void {
        this.reset();
        const now = Date.now();
        for (const up of src.upstreams()) for (const p of up.all()) {
          const s = p.status(now);
          this.set({ upstream: up.name, server: p.address }, s === 'up' || s === 'drain' ? 1 : 0);
        }
      },
    });
    new Gauge({
      name: 'sessionlb_upstream_server_state', help: 'Server state: 1 for the current one of up, unhealthy, failed, drain, maint, down',
      labelNames: ['upstream', 'server', 'state'], registers: [r],
      collect(): void {
        this.reset();
        const now = Date.now();
        for (const up of src.upstreams()) for (const p of up.all()) {
          const s = p.status(now);
          for (const state of SERVER_STATES) this.set({ upstream: up.name, server: p.address, state }, s === state ? 1 : 0);
        }
      },
    });
    new Gauge({
      name: 'sessionlb_upstream_server_weight', help: 'Effective weight (lowered by failures and slow start, as nginx effective_weight)',
      labelNames: ['upstream', 'server'], registers: [r],
      collect(): void {
        this.reset();
        const now = Date.now();
        for (const up of src.upstreams()) for (const p of up.all()) {
          this.set({ upstream: up.name, server: p.address }, effectiveWeight(p, now));
        }
      },
    });
    new Gauge({
      name: 'sessionlb_upstream_active_connections', help: 'Requests in flight to the server',
      labelNames: ['upstream', 'server'], registers: [r],
      collect(): void {
        this.reset();
        for (const up of src.upstreams()) for (const p of up.all()) this.set({ upstream: up.name, server: p.address }, p.active);
      },
    });
    new Gauge({
      name: 'sessionlb_downstream_connections', help: 'Open client connections on all listeners', registers: [r],
      async collect(): Promise<void> {
        this.set(await src.downstreamConnections());
      },
    });
    new Gauge({
      name: 'sessionlb_limit_zone_keys', help: 'Keys held in each limit_req / limit_conn zone (type req or conn)',
      labelNames: ['zone', 'type'], registers: [r],
      collect(): void {
        this.reset();
        for (const z of src.limitZones?.() ?? []) this.set({ zone: z.zone, type: z.type }, z.keys);
      },
    });
    new Counter({
      name: 'sessionlb_limit_zone_evictions_total', help: 'Keys dropped from a full limit_req zone while still counting (the least recently used: nginx\'s zone size rule), by zone',
      labelNames: ['zone'], registers: [r],
      collect(): void {
        this.reset();
        for (const z of src.limitZones?.() ?? []) if (z.type === 'req') this.inc({ zone: z.zone }, z.evicted);
      },
    });
    new Counter({
      name: 'sessionlb_limit_zone_allocation_failures_total', help: 'Requests refused because their zone was full and no key could be dropped (nginx "could not allocate node"), by zone and type',
      labelNames: ['zone', 'type'], registers: [r],
      collect(): void {
        this.reset();
        for (const z of src.limitZones?.() ?? []) this.inc({ zone: z.zone, type: z.type }, z.allocationFailures);
      },
    });
    new Gauge({
      name: 'sessionlb_session_store_circuit_open', help: 'Session store servers whose circuit breaker is open (0 = all closed)', registers: [r],
      collect(): void {
        this.set(src.storeCircuitOpen());
      },
    });
    // Sticky figures: the sessions code counts them in plain numbers per upstream; copied here when scraped.
    new Counter({
      name: 'sessionlb_sticky_lookups_total', help: 'Session affinity lookups by result (local_hit, store_hit, miss, invalid_id, store_error)',
      labelNames: ['upstream', 'result'], registers: [r],
      collect(): void {
        this.reset();
        for (const [upstream, stats] of src.stickyStats()) {
          for (const [result, n] of Object.entries(stats.lookups)) this.inc({ upstream, result }, n);
        }
      },
    });
    new Counter({
      name: 'sessionlb_sticky_rebinds_total', help: 'Sessions moved to another server because theirs could not take them, by reason',
      labelNames: ['upstream', 'reason'], registers: [r],
      collect(): void {
        this.reset();
        for (const [upstream, stats] of src.stickyStats()) {
          for (const [reason, n] of Object.entries(stats.rebinds)) this.inc({ upstream, reason }, n);
        }
      },
    });
    this.reloads = new Counter({
      name: 'sessionlb_config_reloads_total', help: 'Configuration reloads from file by result (success, failure)',
      labelNames: ['result'], registers: [r],
      collect(): void {
        const n = src.reloads();
        this.reset();
        this.inc({ result: 'success' }, n.success);
        this.inc({ result: 'failure' }, n.failure);
      },
    });
    this.lastReload = new Gauge({
      name: 'sessionlb_config_last_reload_success_timestamp_seconds',
      help: 'When the configuration in use was loaded (start or last successful reload), seconds since epoch', registers: [r],
      collect(): void {
        this.set(src.lastReloadSuccess() / 1000);
      },
    });
  }

  /** Cells for requests to `upstream` through virtual server `server` (call once per config). */
  route(server: string, upstream: Upstream): RouteMetrics {
    const requests = CODE_CLASSES.map((code) => this.httpRequests.cell(server, upstream.name, code));
    return new RouteMetrics(requests, this.httpDuration.cell(server, upstream.name), this.upstreamFor(upstream.name));
  }

  /** Cells for requests a virtual server answers itself, without an upstream (`upstream=""`). */
  localRoute(server: string): RouteMetrics {
    const requests = CODE_CLASSES.map((code) => this.httpRequests.cell(server, '', code));
    // Never used (no upstream, no retries), and not exported: cells outside any family.
    const none = new UpstreamMetrics(RETRY_REASONS.map(() => new CounterCell({})));
    return new RouteMetrics(requests, this.httpDuration.cell(server, ''), none);
  }

  private readonly upstreamCache = new Map<string, UpstreamMetrics>();
  /** Cells for one upstream group (shared by every route and config generation using that name). */
  upstreamFor(name: string): UpstreamMetrics {
    let m = this.upstreamCache.get(name);
    if (m === undefined) {
      m = new UpstreamMetrics(RETRY_REASONS.map((reason) => this.retries.cell(name, reason)));
      this.upstreamCache.set(name, m);
    }
    return m;
  }

  /** Cells for one server of an upstream (call once per config). */
  peer(upstream: string, peer: Peer): PeerMetrics {
    return new PeerMetrics(
      CODE_CLASSES.map((code) => this.upstreamRequests.cell(upstream, peer.address, code)),
      this.upstreamSeconds.cell(upstream, peer.address),
      FAILURE_REASONS.map((reason) => this.failures.cell(upstream, peer.address, reason)),
    );
  }

  /** A local resource error (code such as EMFILE) in `operation` (accept, connect). */
  localError(code: string, operation: string): void {
    this.localErrors.cell(code, operation).value++;
  }

  /** A TLS handshake completed. */
  tlsHandshake(server: string, protocol: string, resumed: boolean): void {
    this.tlsHandshakes.cell(server, protocol, resumed ? 'true' : 'false').value++;
  }

  /** A connection closed for its PROXY header (a bounded reason, PROXY_PROTOCOL_ERROR_REASONS). */
  proxyProtocolError(reason: string): void {
    this.proxyProtocolErrors.cell(reason).value++;
  }

  /** A TLS handshake failed (a bounded reason). */
  tlsHandshakeError(reason: string): void {
    this.tlsHandshakeErrors.cell(reason).value++;
  }

  /** A sync of the shared TLS ticket keys ended so (src/sessions/shared-ticket-keys.ts). */
  tlsTicketKeySyncResult(result: string): void {
    this.tlsTicketKeySync.cell(result).value++;
  }

  /** LimitCounts: one request's limit_req outcome in `zone`. */
  limitReq(zone: string, status: string): void {
    this.limitReqs.cell(zone, status).value++;
  }

  /** LimitCounts: one request's limit_conn outcome in `zone`. */
  limitConn(zone: string, status: string): void {
    this.limitConns.cell(zone, status).value++;
  }

  limitSharedFallback(zone: string, reason: string): void {
    this.limitSharedFallbacks.cell(zone, reason).value++;
  }

  /** A body went to a temp file. */
  tempFile(direction: 'request' | 'response'): void {
    this.tempFiles.cell(direction).value++;
  }

  /** One active health probe finished: result `pass`, `timeout` or `fail` (HealthChecker.onProbe). */
  readonly healthCheck = (upstream: string, server: string, ok: boolean, detail: string): void => {
    this.healthChecks.cell(upstream, server, ok ? 'pass' : detail === 'timeout' ? 'timeout' : 'fail').value++;
  };

  /** This process's metrics and node's process metrics, as one registry. */
  private all(): Registry {
    return Registry.merge([this.registry, processRegistry()]);
  }

  /** The Prometheus text exposition. */
  async text(): Promise<string> {
    return this.all().metrics();
  }

  /** The same metrics as JSON (what a cluster worker sends the primary to aggregate). */
  json(): Promise<MetricObjectWithValues<MetricValue<string>>[]> {
    return this.all().getMetricsAsJSON();
  }
}

/** The weight a policy gives the server now: nginx effective_weight, capped by slow start's ramp. */
export function effectiveWeight(p: Peer, now: number): number {
  const max = p.currentMaxWeight(now);
  const w = p.state.effectiveWeight < max ? p.state.effectiveWeight : max;
  return Math.round(w * 100) / 100;
}

declare module '../balancer/peer.js' {
  interface Peer {
    /** Metric cells of this server (attempts, response time, failures); attached by the runtime, absent when not wired. */
    metrics?: PeerMetrics;
  }
}
