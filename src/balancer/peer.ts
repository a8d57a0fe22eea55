/**
 * The shared state of one upstream server, as nginx keeps it in
 * ngx_http_upstream_rr_peer_t: weights for smooth weighted round robin, passive
 * failure accounting (max_fails / fail_timeout), active connections.
 * Policies read it to choose; the proxy updates it through `Upstream.release`.
 *
 * Layers above hang their own per-server objects on a Peer (the transport its connection pool,
 * observability its metric cells) by adding fields to this class's interface (TypeScript
 * declaration merging, see `declare module` in proxy/upstream/transport.ts and
 * observability/metrics.ts): the balancer carries them and imports neither.
 */
import type { UpstreamServerConfig } from '../config/model.js';

export type AdminState = 'ready' | 'drain' | 'maint';

/** The outcome of one active health probe (kept on the peer for /status). */
export interface ProbeResult {
  ok: boolean;
  /** When the probe finished, ms since epoch. */
  at: number;
  /** "200", "connected", "status 500", "timeout", "ECONNREFUSED", "body did not match", ... */
  detail: string;
}

export class Peer {
  /** Position in its upstream's primary or backup list (used by policies for stable order). */
  index = 0;
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly backup: boolean;
  /** The weight in use: the config's, or one set through the admin API. */
  weight: number;
  /** The weight written in the config file. */
  readonly configWeight: number;
  /** `"drain": true` in the config file (sticky sessions: keeps bound sessions, no new ones). */
  readonly configDrain: boolean;
  /** nginx Plus slow_start in ms (0 = off). */
  readonly slowStartMs: number;
  /** When the server last came back (healthy again, passive failure over, admin ready); slow start counts from here; 0 = not ramping. */
  slowStartFrom = 0;
  maxFails: number;
  failTimeoutMs: number;
  down: boolean;
  maxConns: number;

  /** Smooth weighted round robin state (nginx current_weight / effective_weight). */
  currentWeight = 0;
  effectiveWeight: number;

  /** Passive health (nginx fails / accessed / checked), times in ms since epoch. */
  fails = 0;
  accessed = 0;
  checked = 0;

  /** Requests in flight to this server (nginx conns). */
  active = 0;
  /** Totals since start (kept across reloads). */
  requests = 0;
  failures = 0;

  /** Active health (issue: health checks) and runtime admin state; a plain peer is healthy and ready. */
  healthy = true;
  adminState: AdminState = 'ready';

  /** Active probe bookkeeping: consecutive failed / passed probes, the last result. */
  probeFails = 0;
  probePasses = 0;
  lastProbe: ProbeResult | null = null;
  /** `mandatory` health checks: unhealthy until the first passing probe. */
  awaitingFirstProbe = false;
  /** True when this peer took over the state of the same server before a reload. */
  inherited = false;

  constructor(cfg: UpstreamServerConfig) {
    this.name = cfg.address;
    this.host = cfg.host;
    this.port = cfg.port;
    this.backup = cfg.backup;
    this.weight = cfg.weight;
    this.configWeight = cfg.weight;
    this.slowStartMs = cfg.slowStartMs;
    this.effectiveWeight = cfg.weight;
    this.maxFails = cfg.maxFails;
    this.failTimeoutMs = cfg.failTimeoutMs;
    this.down = cfg.down;
    this.maxConns = cfg.maxConns;
    this.configDrain = cfg.drain;
    if (cfg.drain) this.adminState = 'drain';
  }

  /** Takes over health, failure, counters and runtime state from the same server before a reload. */
  inheritRuntimeState(before: Peer): void {
    this.fails = before.fails;
    this.accessed = before.accessed;
    this.checked = before.checked;
    this.requests = before.requests;
    this.failures = before.failures;
    this.healthy = before.healthy;
    // Runtime admin state stays, unless the config itself changed `drain` for this server (the config wins).
    this.adminState = before.configDrain === this.configDrain ? before.adminState : (this.configDrain ? 'drain' : 'ready');
    this.currentWeight = before.currentWeight;
    this.slowStartFrom = before.slowStartFrom;
    this.probeFails = before.probeFails;
    this.probePasses = before.probePasses;
    this.lastProbe = before.lastProbe;
    this.awaitingFirstProbe = before.awaitingFirstProbe;
    this.inherited = true;
    // A weight set through the admin API stays unless the config itself changed this server's weight.
    if (before.configWeight === this.configWeight) this.weight = before.weight;
    this.effectiveWeight = Math.min(before.effectiveWeight, this.weight);
  }

  /**
   * The most weight a policy may give this server now: `weight`, or during slow start a
   * linear ramp from near 0 (weight/20) to `weight`. Every policy that weighs servers uses this.
   */
  currentMaxWeight(now: number): number {
    if (this.slowStartFrom === 0) return this.weight;
    const elapsed = now - this.slowStartFrom;
    if (elapsed >= this.slowStartMs) {
      this.slowStartFrom = 0; // ramp over: later calls take the fast path
      return this.weight;
    }
    const ramp = elapsed > 0 ? (this.weight * elapsed) / this.slowStartMs : 0;
    const floor = this.weight / 20;
    return ramp > floor ? ramp : floor;
  }

  /** The server came back (health, passive failure over, admin ready): start its slow start, if configured. */
  markBack(now: number): void {
    if (this.slowStartMs > 0) this.slowStartFrom = now;
  }

  /** Sets the weight in use (admin API); the smooth round robin state follows. */
  setWeight(weight: number): void {
    const full = this.effectiveWeight >= this.weight;
    this.weight = weight;
    if (full || this.effectiveWeight > weight) this.effectiveWeight = weight;
  }

  /** A runtime change (admin API, or one the cluster primary relays): back to `ready` starts slow start. */
  setRuntime(state: AdminState | undefined, weight: number | undefined, now: number): void {
    if (state !== undefined && state !== this.adminState) {
      if (state === 'ready') this.markBack(now);
      this.adminState = state;
    }
    if (weight !== undefined && weight !== this.weight) this.setWeight(weight);
  }

  /** nginx's single-server upstream ignores max_fails: only down, maxConns, health and admin state apply. */
  canServeSingle(): boolean {
    return !this.down && this.healthy && this.adminState === 'ready'
      && (this.maxConns === 0 || this.active < this.maxConns);
  }

  /** Failed by passive accounting and still inside fail_timeout. */
  isFailed(now: number): boolean {
    return this.maxFails !== 0 && this.fails >= this.maxFails && now - this.checked <= this.failTimeoutMs;
  }

  /** May this server take a new request (not bound to it by a session)? nginx's skip rules plus health and admin state. */
  canTakeNew(now: number): boolean {
    return !this.down
      && this.healthy
      && this.adminState === 'ready'
      && !this.isFailed(now)
      && (this.maxConns === 0 || this.active < this.maxConns);
  }

  /** May this server take a request of a session already bound to it? Like canTakeNew, but drain still serves. */
  canTakeBound(now: number): boolean {
    return !this.down
      && this.healthy
      && this.adminState !== 'maint'
      && !this.isFailed(now)
      && (this.maxConns === 0 || this.active < this.maxConns);
  }

  /** nginx's state name for status pages. */
  state(now: number): 'up' | 'unhealthy' | 'failed' | 'drain' | 'maint' | 'down' {
    if (this.down) return 'down';
    if (this.adminState === 'maint') return 'maint';
    if (!this.healthy) return 'unhealthy';
    if (this.isFailed(now)) return 'failed';
    if (this.adminState === 'drain') return 'drain';
    return 'up';
  }
}
