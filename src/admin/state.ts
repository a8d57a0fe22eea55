/**
 * Runtime server state set through the admin API (drain/maint/ready, weight; virtual servers in
 * maintenance): carried
 * across reloads by the ServerStates registry (balancer/server-state.ts), across restarts by `stateFile` (JSON,
 * written atomically: a temp file renamed over the old one). When the config itself
 * changes a server's weight, the config wins and the log says so.
 */
import { readFile, rename, writeFile, unlink } from 'node:fs/promises';
import type { AdminState, Peer } from '../balancer/peer.js';
import type { Upstream } from '../balancer/upstream.js';
import type { EventLog } from '../observability/log.js';

export interface ServerRuntimeState {
  state: AdminState;
  weight: number;
  /** The config weight when the runtime weight was set; a different config weight now means the config changed and wins. */
  configWeight: number;
  /** The state the config gave ("drain" with `drain: true`, else "ready"); a different one now means the config changed and wins. */
  configState?: AdminState;
}

export interface StateFileContents {
  version: 1;
  /** upstream name -> server address -> state (only servers that differ from their config). */
  upstreams: Record<string, Record<string, ServerRuntimeState>>;
  /** Virtual servers (first server name, "_" for none) in admin maintenance (PUT /servers/{name}/maintenance). */
  maintenance?: string[];
}

const ADMIN_STATES: readonly AdminState[] = ['ready', 'drain', 'maint'];

/** The runtime state worth keeping: servers not `ready` or with a weight other than the config's. */
export function collectRuntimeState(upstreams: ReadonlyMap<string, Upstream>, maintenance: ReadonlySet<string> = new Set()): StateFileContents {
  const out: StateFileContents = { version: 1, upstreams: {} };
  if (maintenance.size > 0) out.maintenance = [...maintenance].sort();
  for (const up of upstreams.values()) {
    for (const peer of up.all()) {
      const configState: AdminState = peer.configDrain ? 'drain' : 'ready';
      if (peer.state.adminState === configState && peer.state.weight === peer.configWeight) continue;
      (out.upstreams[up.name] ??= {})[peer.address] = { state: peer.state.adminState, weight: peer.state.weight, configWeight: peer.configWeight, configState };
    }
  }
  return out;
}

function isState(value: unknown): value is ServerRuntimeState {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return ADMIN_STATES.includes(v.state as AdminState)
    && (v.configState === undefined || ADMIN_STATES.includes(v.configState as AdminState))
    && Number.isInteger(v.weight) && (v.weight as number) >= 1
    && Number.isInteger(v.configWeight) && (v.configWeight as number) >= 1;
}

/** Reads a state file; null when it does not exist. Throws with a message when it is unreadable or malformed. */
export async function readStateFile(file: string): Promise<StateFileContents | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const raw = JSON.parse(text) as unknown;
  if (typeof raw !== 'object' || raw === null || (raw as { version?: unknown }).version !== 1) {
    throw new Error('not a sessionlb state file (version 1)');
  }
  const ups = (raw as { upstreams?: unknown }).upstreams;
  const out: StateFileContents = { version: 1, upstreams: {} };
  const maint = (raw as { maintenance?: unknown }).maintenance;
  if (Array.isArray(maint)) out.maintenance = maint.filter((m): m is string => typeof m === 'string');
  if (typeof ups !== 'object' || ups === null) return out;
  for (const [name, servers] of Object.entries(ups as Record<string, unknown>)) {
    if (typeof servers !== 'object' || servers === null) continue;
    for (const [address, state] of Object.entries(servers as Record<string, unknown>)) {
      if (isState(state)) (out.upstreams[name] ??= {})[address] = state;
    }
  }
  return out;
}

/** Applies saved state to the servers that exist now (at start). */
export function applyRuntimeState(upstreams: ReadonlyMap<string, Upstream>, saved: StateFileContents, log: EventLog): number {
  let applied = 0;
  for (const [name, servers] of Object.entries(saved.upstreams)) {
    const up = upstreams.get(name);
    if (up === undefined) continue;
    for (const [address, state] of Object.entries(servers)) {
      const peer = up.find(address);
      if (peer === undefined) continue;
      applied++;
      const configState: AdminState = peer.configDrain ? 'drain' : 'ready';
      if (state.configState === undefined || state.configState === configState) {
        peer.state.adminState = state.state;
      } else if (state.state !== configState) {
        log.warn({ upstream: name, server: address, runtimeState: state.state, configState },
          `the config changed "drain" of ${address}; the config wins over the runtime state ${state.state}`);
      }
      if (state.weight !== state.configWeight) {
        if (state.configWeight === peer.configWeight) {
          peer.setWeight(state.weight);
        } else {
          log.warn({ upstream: name, server: address, runtimeWeight: state.weight, configWeight: peer.configWeight },
            `the config changed the weight of ${address} (${state.configWeight} -> ${peer.configWeight}); the config wins over the runtime weight ${state.weight}`);
        }
      }
      log.info({ upstream: name, server: address, state: peer.state.adminState, weight: peer.state.weight }, 'runtime server state restored from stateFile');
    }
  }
  return applied;
}

/** After a reload: says so when the config changed the weight of a server that had a runtime weight (the config won). */
export function logConfigWeightWins(previous: ReadonlyMap<string, Upstream>, next: ReadonlyMap<string, Upstream>, log: EventLog): void {
  for (const [name, up] of next) {
    const before = previous.get(name);
    if (before === undefined) continue;
    for (const peer of up.all()) {
      const old: Peer | undefined = before.find(peer.address);
      if (old === undefined || old.state.weight === old.configWeight || old.configWeight === peer.configWeight) continue;
      log.warn({ upstream: name, server: peer.address, runtimeWeight: old.state.weight, configWeight: peer.configWeight },
        `reload changed the configured weight of ${peer.address} (${old.configWeight} -> ${peer.configWeight}); the config wins over the runtime weight ${old.state.weight}`);
    }
  }
}

/** Writes state files one at a time, each atomically (temp file + rename). */
export class StateFileWriter {
  private chain: Promise<void> = Promise.resolve();

  constructor(private readonly log: EventLog) {}

  /** Snapshots the state now and queues the write; the promise settles when it is on disk (never rejects). */
  save(file: string, upstreams: ReadonlyMap<string, Upstream>, maintenance?: ReadonlySet<string>): Promise<void> {
    const text = JSON.stringify(collectRuntimeState(upstreams, maintenance), null, 2) + '\n';
    this.chain = this.chain.then(async () => {
      const tmp = `${file}.${process.pid}.tmp`;
      try {
        await writeFile(tmp, text, { mode: 0o600 });
        await rename(tmp, file);
      } catch (err) {
        this.log.error({ stateFile: file, err: (err as Error).message }, 'cannot write stateFile');
        await unlink(tmp).catch(() => undefined);
      }
    });
    return this.chain;
  }

  /** Resolves when queued writes are done. */
  flush(): Promise<void> {
    return this.chain;
  }
}
