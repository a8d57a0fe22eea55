/**
 * One upstream group: its primary and backup peers, the policy that picks among them,
 * and nginx's peer bookkeeping around a pick (backup fallback, the single-server rule,
 * `checked` stamping) and after an attempt (passive failure accounting).
 */
import type { UpstreamConfig } from '../config/model.js';
import { Peer, Taking } from './peer.js';
import { ServerState, type ServerStates } from './server-state.js';
import type { Policy, PickRequest } from './policy.js';
import { createPolicy } from './policies.js';

export class Upstream {
  readonly name: string;
  readonly primary: Peer[];
  readonly backup: Peer[];
  /** nginx peers->single: one primary, no backup; max_fails is then ignored. */
  readonly single: boolean;
  /** nginx u->peer.tries before proxy_next_upstream_tries: every server once. */
  readonly maxTries: number;
  private readonly policy: Policy;
  private readonly backupPolicy: Policy;

  /**
   * `states`: the registry that keeps each server's runtime state across reloads (the
   * runtime's); without one every server starts afresh. `states.commit` once this upstream is in use.
   */
  constructor(readonly config: UpstreamConfig, states?: ServerStates) {
    this.name = config.name;
    this.primary = [];
    this.backup = [];
    for (const s of config.servers) {
      const claimed = states?.claim(config.name, s);
      const peer = new Peer(s, claimed?.state ?? new ServerState(s), claimed?.existing ?? false);
      (s.backup ? this.backup : this.primary).push(peer);
    }
    this.primary.forEach((p, i) => { p.index = i; });
    this.backup.forEach((p, i) => { p.index = i; });
    this.single = this.primary.length === 1 && this.backup.length === 0;
    this.policy = createPolicy(config.balance, this.primary);
    this.backupPolicy = createPolicy(config.balance, this.backup);
    this.maxTries = this.triesFor(config.nextUpstream.tries);
  }

  /** nginx's bound on attempts: `limit` (0 = every server once), at most the number of servers. */
  triesFor(limit: number): number {
    const all = this.primary.length + this.backup.length;
    return limit === 0 ? all : Math.min(all, limit);
  }

  *all(): Iterable<Peer> {
    yield* this.primary;
    yield* this.backup;
  }

  find(address: string): Peer | undefined {
    for (const p of this.all()) if (p.address === address) return p;
    return undefined;
  }

  /**
   * Picks a peer for a new attempt and counts it as active, or returns null ("no live upstreams").
   * Backups are used only when no primary can serve.
   */
  select(request: PickRequest, tried: ReadonlySet<Peer> | null, now: number): Peer | null {
    let peer: Peer | null;
    if (this.single) {
      const only = this.primary[0]!;
      peer = (tried === null || !tried.has(only)) && only.unavailable(now, Taking.Single) === null ? only : null;
    } else {
      peer = this.policy.pick(this.primary, tried, request, now);
      if (peer === null && this.backup.length > 0) peer = this.backupPolicy.pick(this.backup, tried, request, now);
    }
    if (peer !== null) this.acquire(peer, now);
    return peer;
  }

  /** Counts an attempt on a peer chosen outside `select` (a session's bound server). */
  acquire(peer: Peer, now: number): void {
    const s = peer.state;
    if (now - s.checked > peer.failTimeoutMs) s.checked = now;
    peer.active++;
    s.requests++;
  }

  /**
   * Ends an attempt (nginx ngx_http_upstream_free_round_robin_peer). A failure counts
   * toward max_fails and lowers the effective weight by weight/max_fails; a success
   * after fail_timeout made the peer eligible again clears its failures.
   */
  release(peer: Peer, failed: boolean, now: number): void {
    const s = peer.state;
    peer.active--;
    if (failed) s.failedRequests++;
    if (this.single) return;
    if (failed) {
      s.passiveFails++;
      s.accessed = now;
      s.checked = now;
      if (peer.maxFails !== 0) {
        s.effectiveWeight -= Math.floor(s.weight / peer.maxFails);
        // Failed now: it comes back when fail_timeout is over, and slow start counts from then.
        if (s.passiveFails >= peer.maxFails) peer.markBack(now + peer.failTimeoutMs);
      }
      if (s.effectiveWeight < 0) s.effectiveWeight = 0;
    } else if (s.accessed < s.checked) {
      s.passiveFails = 0;
    }
  }
}
