/**
 * One server of an upstream as one config has it (nginx ngx_http_upstream_rr_peer_t): its
 * address and config, the requests in flight to it, and its runtime state (`state`: passive
 * failures, health, slow start, admin state and weight), which is shared with the same server
 * of the previous and next config (server-state.ts). Policies read it to choose; the proxy
 * updates it through `Upstream.acquire` / `Upstream.release`.
 *
 * Layers above hang their own per-server objects on a Peer (the transport its connection pool,
 * observability its metric cells) by adding fields to this class's interface (TypeScript
 * declaration merging, see `declare module` in proxy/upstream/transport.ts and
 * observability/metrics.ts): the balancer carries them and imports neither.
 */
import type { UpstreamServerConfig } from '../config/model.js';
import type { AdminState, ServerState } from './server-state.js';

export type { AdminState, ProbeResult } from './server-state.js';

/**
 * Why a server cannot take a request now (in this order of precedence). `drain` stops only
 * new requests; `maxconns` is a momentary limit, not a state.
 */
export type Unavailable = 'down' | 'maint' | 'unhealthy' | 'failed' | 'drain' | 'maxconns';

/** What a request asks of a server (Peer.unavailable). */
export const enum Taking {
  /** A request the policy places: every rule applies. */
  New,
  /** A request of a session bound to this server: a drained server still takes it. */
  Bound,
  /** nginx's single-server upstream: max_fails is ignored. */
  Single,
}

export class Peer {
  /** Position in its upstream's primary or backup list (used by policies for stable order). */
  index = 0;
  /** `host:port` as written in the config (or `name#ip:port` for each address of a hostname). */
  readonly address: string;
  readonly host: string;
  readonly port: number;
  readonly backup: boolean;
  /** The weight written in the config file. */
  readonly configWeight: number;
  /** `"drain": true` in the config file (sticky sessions: keeps bound sessions, no new ones). */
  readonly configDrain: boolean;
  /** nginx Plus slow_start in ms (0 = off). */
  readonly slowStartMs: number;
  maxFails: number;
  failTimeoutMs: number;
  down: boolean;
  maxConns: number;
  /** Runtime state, shared with this server in the configs before and after this one. */
  readonly state: ServerState;
  /** True when `state` comes from the config before this one (the server was there already). */
  readonly inherited: boolean;
  /** Requests in flight to this server under this config (nginx conns). */
  active = 0;

  constructor(cfg: UpstreamServerConfig, state: ServerState, inherited: boolean) {
    this.address = cfg.address;
    this.host = cfg.host;
    this.port = cfg.port;
    this.backup = cfg.backup;
    this.configWeight = cfg.weight;
    this.slowStartMs = cfg.slowStartMs;
    this.maxFails = cfg.maxFails;
    this.failTimeoutMs = cfg.failTimeoutMs;
    this.down = cfg.down;
    this.maxConns = cfg.maxConns;
    this.configDrain = cfg.drain;
    this.state = state;
    this.inherited = inherited;
  }

  /**
   * The most weight a policy may give this server now: `weight`, or during slow start a
   * linear ramp from near 0 (weight/20) to `weight`. Every policy that weighs servers uses this.
   */
  currentMaxWeight(now: number): number {
    const s = this.state;
    if (s.slowStartFrom === 0) return s.weight;
    const elapsed = now - s.slowStartFrom;
    if (elapsed >= this.slowStartMs) {
      s.slowStartFrom = 0; // ramp over: later calls take the fast path
      return s.weight;
    }
    const ramp = elapsed > 0 ? (s.weight * elapsed) / this.slowStartMs : 0;
    const floor = s.weight / 20;
    return ramp > floor ? ramp : floor;
  }

  /** The server came back (health, passive failure over, admin ready): start its slow start, if configured. */
  markBack(now: number): void {
    if (this.slowStartMs > 0) this.state.slowStartFrom = now;
  }

  /** Sets the weight in use (admin API); the smooth round robin state follows. */
  setWeight(weight: number): void {
    const s = this.state;
    const full = s.effectiveWeight >= s.weight;
    s.weight = weight;
    if (full || s.effectiveWeight > weight) s.effectiveWeight = weight;
  }

  /** A runtime change (admin API, or one the cluster primary relays): back to `ready` starts slow start. */
  setRuntime(adminState: AdminState | undefined, weight: number | undefined, now: number): void {
    if (adminState !== undefined && adminState !== this.state.adminState) {
      if (adminState === 'ready') this.markBack(now);
      this.state.adminState = adminState;
    }
    if (weight !== undefined && weight !== this.state.weight) this.setWeight(weight);
  }

  /** Failed by passive accounting and still inside fail_timeout. */
  isFailed(now: number): boolean {
    const s = this.state;
    return this.maxFails !== 0 && s.passiveFails >= this.maxFails && now - s.checked <= this.failTimeoutMs;
  }

  /**
   * The one rule for "can this server take this request now": null when it can, else why not.
   * nginx's skip rules (down, max_fails within fail_timeout, max_conns) plus active health and
   * the admin state; `taking` says what kind of request asks (see Taking).
   */
  unavailable(now: number, taking: Taking.Bound): Exclude<Unavailable, 'drain'> | null;
  unavailable(now: number, taking: Taking): Unavailable | null;
  unavailable(now: number, taking: Taking): Unavailable | null {
    const s = this.state;
    if (this.down) return 'down';
    if (s.adminState === 'maint') return 'maint';
    if (!s.healthy) return 'unhealthy';
    if (taking !== Taking.Single && this.isFailed(now)) return 'failed';
    if (taking !== Taking.Bound && s.adminState === 'drain') return 'drain';
    if (this.maxConns !== 0 && this.active >= this.maxConns) return 'maxconns';
    return null;
  }

  /** May a policy place a new request here? (`unavailable(now, Taking.New)` is null.) */
  canTakeNew(now: number): boolean {
    return this.unavailable(now, Taking.New) === null;
  }

  /** nginx's state name for status pages and metrics: the reason it cannot take new requests, ignoring the momentary maxconns. */
  status(now: number): 'up' | Exclude<Unavailable, 'maxconns'> {
    const why = this.unavailable(now, Taking.New);
    return why === null || why === 'maxconns' ? 'up' : why;
  }
}
