/**
 * Messages between the cluster primary and its workers (`workers` > 1), over node:cluster's
 * IPC channel. Every message of ours has `sl` (its kind); anything else on the channel
 * (prom-client's, node's own) is not ours and is ignored.
 *
 * Primary -> worker: `config` (the config text in use), `state` (health and runtime state of
 * every server), `store-res` (answers to binding-store calls), `reload` (with the new text, or
 * the one in use again when a reload is undone), `stop`, `status-req`, `metrics-req`.
 * Worker -> primary: `config-req` (asks for `config` first), `hello` (asks for `state` before
 * listening), `listening`, `store`
 * (binding-store calls, batched per event-loop turn), `reloaded` (the answer to the `reload` of
 * the same id: switched, or still on the config it ran, and why), `status-res`, `metrics-res`.
 */
import type { AdminState, Peer } from '../balancer/peer.js';
import type { Upstream } from '../balancer/upstream.js';
import type { LimitAnswer, LimitAsk } from './ipc-limits.js';

/** What the primary owns about one server and every worker mirrors. */
export interface PeerState {
  u: string;
  s: string;
  healthy: boolean;
  awaitingFirstProbe: boolean;
  probeFails: number;
  probePasses: number;
  lastProbe: { ok: boolean; at: number; detail: string } | null;
  adminState: AdminState;
  weight: number;
}

/** One binding-store call: [id, op, key, value, ttlSeconds]. */
export type StoreCall = [number, 'get' | 'set' | 'touch' | 'delete', string, string | null, number];
/** Its answer: [id, result] (get: value or null; touch: found; set/delete: true). */
export type StoreAnswer = [number, string | null | boolean];

export type ToWorker =
  /** `maint`: the virtual servers in admin maintenance (whole list; absent: unchanged). */
  | { sl: 'state'; peers: PeerState[]; maint?: string[] }
  | { sl: 'store-res'; r: StoreAnswer[] }
  /** The config file's text the primary runs (answer to `config-req`; workers never read the file). */
  | { sl: 'config'; text: string | null }
  /** Switch to this text (what the primary validated, or the config in use when a reload is undone); answered by `reloaded` with this id. */
  | { sl: 'reload'; id: number; text: string | null }
  /** The TLS session ticket keys (base64: current, then previous), at hello and after each rotation: every worker resumes every ticket. */
  | { sl: 'tls-keys'; keys: string[] }
  | { sl: 'stop' }
  | { sl: 'reopen' }
  | { sl: 'status-req'; id: number }
  | { sl: 'metrics-req'; id: number }
  /** limit_req / limit_conn decisions (ipc-limits.ts). */
  | LimitAnswer;

export type ToPrimary =
  | { sl: 'config-req' }
  | { sl: 'hello' }
  | { sl: 'listening' }
  | { sl: 'store'; ops: StoreCall[] }
  /** The answer to `reload` `id`: switched (ok), or not and still on the config it ran (error: why). */
  | { sl: 'reloaded'; id: number; ok: boolean; error: string | null }
  | { sl: 'status-res'; id: number; doc: unknown }
  | { sl: 'metrics-res'; id: number; metrics: unknown }
  /** limit_req / limit_conn asks and releases (ipc-limits.ts). */
  | LimitAsk;

/** Is this one of our messages (an object with a string `sl`)? */
export function isOurs<T extends { sl: string }>(message: unknown): message is T {
  return typeof message === 'object' && message !== null && typeof (message as { sl?: unknown }).sl === 'string';
}

/** The health and runtime state of every server (primary side). */
export function snapshot(upstreams: Iterable<Upstream>): PeerState[] {
  const out: PeerState[] = [];
  for (const up of upstreams) {
    for (const p of up.all()) out.push(peerState(up.name, p));
  }
  return out;
}

/** The state of one server (a probe's result). */
export function peerState(upstream: string, p: Peer): PeerState {
  return {
    u: upstream, s: p.address, healthy: p.state.healthy, awaitingFirstProbe: p.state.awaitingFirstProbe,
    probeFails: p.state.probeFailsInRow, probePasses: p.state.probePassesInRow, lastProbe: p.state.lastProbe,
    adminState: p.state.adminState, weight: p.state.weight,
  };
}

/**
 * Applies the primary's view to a worker's servers. A server that comes back (healthy
 * again, or admin `ready` again) starts its slow start here too, and a passing health check
 * ends this worker's passive failure, as the checker does in a single process.
 * Servers this worker does not know (a reload still on its way) are skipped.
 */
export function applyStates(upstreams: ReadonlyMap<string, Upstream>, states: readonly PeerState[], now: number): void {
  for (const st of states) {
    const peer = upstreams.get(st.u)?.find(st.s);
    if (peer === undefined) continue;
    if (st.healthy && !peer.state.healthy) {
      peer.state.passiveFails = 0;
      peer.markBack(now);
    } else if (st.healthy && st.lastProbe !== null && st.lastProbe.ok && peer.isFailed(now)
      && (peer.state.lastProbe === null || peer.state.lastProbe.at !== st.lastProbe.at)) {
      peer.state.passiveFails = 0;
      peer.markBack(now);
    }
    peer.state.healthy = st.healthy;
    peer.state.awaitingFirstProbe = st.awaitingFirstProbe;
    peer.state.probeFailsInRow = st.probeFails;
    peer.state.probePassesInRow = st.probePasses;
    peer.state.lastProbe = st.lastProbe;
    peer.setRuntime(st.adminState, st.weight, now);
  }
}
