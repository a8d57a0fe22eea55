/**
 * What one process of sessionlb does, given to its SessionLB at construction:
 *
 * |                              | single | cluster primary | cluster worker |
 * |------------------------------|--------|-----------------|----------------|
 * | binds HTTP/stream listeners  | yes    | no (workers do) | yes            |
 * | probes health                | yes    | yes             | no (primary's) |
 * | serves the admin listener    | yes    | yes             | no             |
 * | restores/writes stateFile    | yes    | yes             | no             |
 * | makes TLS ticket keys        | yes    | yes (for all)   | no (primary's) |
 *
 * and what it hears of it: probe results, runtime changes, and the processes a reload from
 * file must switch with it (the primary's workers).
 */
import type { Config } from '../config/model.js';

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
export interface ReloadPeers {
  prepare(config: Config, text: string): Promise<void>;
  abort(): Promise<void>;
  committed(): Promise<void>;
}

/** What the role hears of its SessionLB; none of these may throw. */
export interface RoleEvents {
  /** An active health probe finished and the server's state reflects it. */
  probed(upstream: string, server: string): void;
  /** A runtime change (admin API) was applied to the servers' state. */
  runtimeChanged(): void;
  /** See ReloadPeers; null: this process switches alone. */
  readonly reloadPeers: ReloadPeers | null;
}

export interface RuntimeRole extends RoleEvents {
  /** Binds the HTTP and stream listeners (a cluster primary does not: node:cluster shares its workers' listeners). */
  readonly bindsListeners: boolean;
  /**
   * Runs the active health checks. One that does not (a cluster worker) gets the results
   * from its primary and, until then, holds a server a reload added behind a `mandatory`
   * check out of rotation as the primary does.
   */
  readonly probesHealth: boolean;
  /** Serves the admin listener (/status, /metrics, the runtime API). */
  readonly servesAdmin: boolean;
  /** Restores the servers' runtime state from `stateFile` at start, and writes it after each change. */
  readonly keepsStateFile: boolean;
  /** Makes and rotates the TLS session ticket keys (a cluster worker gets the primary's, so that any worker resumes any ticket). */
  readonly makesTicketKeys: boolean;
}

const ALONE: RoleEvents = { probed: () => undefined, runtimeChanged: () => undefined, reloadPeers: null };

/** Everything in one process (`workers` = 1, the demo, embedding). */
export const SINGLE_PROCESS: RuntimeRole = { ...ALONE, bindsListeners: true, probesHealth: true, servesAdmin: true, keepsStateFile: true, makesTicketKeys: true };

/** A cluster worker (src/runtime/worker.ts): serves the listeners; health and runtime state come from the primary. */
export const CLUSTER_WORKER: RuntimeRole = { ...ALONE, bindsListeners: true, probesHealth: false, servesAdmin: false, keepsStateFile: false, makesTicketKeys: false };

/** The cluster primary (src/runtime/primary.ts): everything that exists once; its workers hear of it through `events`. */
export function clusterPrimary(events: RoleEvents): RuntimeRole {
  return {
    probed: (upstream, server) => events.probed(upstream, server),
    runtimeChanged: () => events.runtimeChanged(),
    reloadPeers: events.reloadPeers,
    bindsListeners: false,
    probesHealth: true,
    servesAdmin: true,
    keepsStateFile: true,
    makesTicketKeys: true,
  };
}
