/**
 * What one server lives through at runtime (passive failures, health, slow start, admin state
 * and weight, totals), kept across reloads the way Caddy keeps its hosts in a usage pool: one
 * ServerState per (upstream, address, primary or backup) in a registry that each new config's
 * Peers look up. Nothing is copied on reload; the Peers of the old and the new config share the
 * object while both exist.
 */
import type { UpstreamConfig, UpstreamServerConfig } from '../config/model.js';

export type AdminState = 'ready' | 'drain' | 'maint';

/** The outcome of one active health probe (kept for /status). */
export interface ProbeResult {
  ok: boolean;
  /** When the probe finished, ms since epoch. */
  at: number;
  /** "200", "connected", "status 500", "timeout", "ECONNREFUSED", "body did not match", ... */
  detail: string;
}

export class ServerState {
  /** Passive failures (nginx peer->fails) counted toward maxFails within failTimeout. */
  passiveFails = 0;
  /** nginx peer->accessed / peer->checked, ms since epoch. */
  accessed = 0;
  checked = 0;
  /** Totals since start: attempts sent, attempts that failed. */
  requests = 0;
  failedRequests = 0;

  /** Active health: false after `fails` failed probes in a row, true again after `passes`. */
  healthy = true;
  /** Consecutive failed / passed active probes, the last result. */
  probeFailsInRow = 0;
  probePassesInRow = 0;
  lastProbe: ProbeResult | null = null;
  /** `mandatory` health checks: unhealthy until the first passing probe. */
  awaitingFirstProbe = false;

  adminState: AdminState;
  /** The weight in use: the config's, or one set through the admin API. */
  weight: number;
  /** Smooth weighted round robin state (nginx current_weight / effective_weight). */
  currentWeight = 0;
  effectiveWeight: number;
  /** When the server last came back (slow start counts from here); 0 = not ramping. */
  slowStartFrom = 0;

  /** The config's weight and drain flag as last committed: a reload that changes them wins over the runtime values. */
  configWeight: number;
  configDrain: boolean;

  constructor(cfg: UpstreamServerConfig) {
    this.weight = cfg.weight;
    this.effectiveWeight = cfg.weight;
    this.configWeight = cfg.weight;
    this.configDrain = cfg.drain;
    this.adminState = cfg.drain ? 'drain' : 'ready';
  }

  /**
   * A config that names this server came into use: a weight or drain flag the config changed
   * wins over the one set at runtime (admin API); otherwise the runtime's stays.
   */
  adopt(cfg: UpstreamServerConfig): void {
    if (cfg.drain !== this.configDrain) this.adminState = cfg.drain ? 'drain' : 'ready';
    if (cfg.weight !== this.configWeight) this.weight = cfg.weight;
    if (this.effectiveWeight > this.weight) this.effectiveWeight = this.weight;
    this.configWeight = cfg.weight;
    this.configDrain = cfg.drain;
  }
}

/** The registry: one ServerState per upstream server, found again by the next config. */
export class ServerStates {
  private readonly byKey = new Map<string, ServerState>();

  private static key(upstream: string, cfg: UpstreamServerConfig): string {
    // A server that moved between the primary and the backup list starts afresh, as before.
    return `${upstream}\n${cfg.backup ? 'backup' : 'primary'}\n${cfg.address}`;
  }

  /**
   * The state of server `cfg` of `upstream` (`existing`: it was there before), without changing
   * it: a reload that is abandoned leaves every server as it was. `commit` applies the config.
   */
  claim(upstream: string, cfg: UpstreamServerConfig): { state: ServerState; existing: boolean } {
    const key = ServerStates.key(upstream, cfg);
    const state = this.byKey.get(key);
    if (state !== undefined) return { state, existing: true };
    const fresh = new ServerState(cfg);
    this.byKey.set(key, fresh);
    return { state: fresh, existing: false };
  }

  /**
   * These upstreams' config is now in use: each server adopts its config (weight and drain
   * changes win over runtime ones) and servers no longer named are forgotten.
   */
  commit(upstreams: Iterable<UpstreamConfig>): void {
    const kept = new Set<string>();
    for (const up of upstreams) {
      for (const cfg of up.servers) {
        const key = ServerStates.key(up.name, cfg);
        this.byKey.get(key)?.adopt(cfg);
        kept.add(key);
      }
    }
    for (const key of this.byKey.keys()) if (!kept.has(key)) this.byKey.delete(key);
  }
}
