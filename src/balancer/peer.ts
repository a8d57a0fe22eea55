/**
 * The shared state of one upstream server, as nginx keeps it in
 * ngx_http_upstream_rr_peer_t: weights for smooth weighted round robin, passive
 * failure accounting (max_fails / fail_timeout), active connections.
 * Policies read it to choose; the proxy updates it through `Upstream.release`.
 */
import type { UpstreamServerConfig } from '../config/load.js';
import type { PeerPool } from '../proxy/transport.js';

export type AdminState = 'ready' | 'drain' | 'maint';

export class Peer {
  /** Position in its upstream's primary or backup list (used by policies for stable order). */
  index = 0;
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly backup: boolean;
  weight: number;
  maxFails: number;
  failTimeoutMs: number;
  down: boolean;
  maxConns: number;

  /** Connections to this server; attached by the server wiring, shared across reloads while the address stays. */
  pool!: PeerPool;

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

  constructor(cfg: UpstreamServerConfig) {
    this.name = cfg.address;
    this.host = cfg.host;
    this.port = cfg.port;
    this.backup = cfg.backup;
    this.weight = cfg.weight;
    this.effectiveWeight = cfg.weight;
    this.maxFails = cfg.maxFails;
    this.failTimeoutMs = cfg.failTimeoutMs;
    this.down = cfg.down;
    this.maxConns = cfg.maxConns;
  }

  /** Takes over health, failure, counters and runtime state from the same server before a reload. */
  inheritRuntimeState(before: Peer): void {
    this.fails = before.fails;
    this.accessed = before.accessed;
    this.checked = before.checked;
    this.requests = before.requests;
    this.failures = before.failures;
    this.healthy = before.healthy;
    this.adminState = before.adminState;
    this.currentWeight = before.currentWeight;
    this.effectiveWeight = Math.min(before.effectiveWeight, this.weight);
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
